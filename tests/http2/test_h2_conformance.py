"""HTTP/2 conformance judged frame by frame (issue 13 point 5): RFC 9113 and RFC 7541.

What a peer that breaks the protocol must get: the GOAWAY error code RFC 9113 names for a
connection error, or RST_STREAM where it says stream error, and nothing else answered; the
frames the RFC says to tolerate must not end the connection. Stream states (5.1), stream
ids (5.1.1), SETTINGS and their ranges (6.5), windows (6.9), frame sizes (4.2) and HPACK
decoding errors (RFC 7541, COMPRESSION_ERROR per RFC 9113 4.3). Each case also goes through
``offence.hostile``: a bystander is served and the worker stays bounded.

Rows and xfails as in test_h2_hostile.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.harness import Gunicorn
from tests.http2.h2_harness import (
    CANCEL,
    COMPRESSION_ERROR,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    PROTOCOL_ERROR,
    STREAM_CLOSED,
    Peer,
    describe_frame,
)
from tests.http2.offence import assert_goaway, hostile, weakness

pytestmark = pytest.mark.timeout(60)


# -- stream states (RFC 9113 section 5.1) -------------------------------------------------------------


def test_settings_advertise_the_limits(h2c: Gunicorn) -> None:
    """The four limits are in the server's SETTINGS (an absent setting means the RFC's default)."""
    with Peer(h2c.port) as peer:
        settings = peer.handshake()
    defaults = {SettingsFrame.INITIAL_WINDOW_SIZE: 65535, SettingsFrame.MAX_FRAME_SIZE: 16384}
    got = {k: settings.settings.get(k, defaults.get(k)) for k in (
        SettingsFrame.MAX_CONCURRENT_STREAMS, SettingsFrame.INITIAL_WINDOW_SIZE,
        SettingsFrame.MAX_FRAME_SIZE, SettingsFrame.MAX_HEADER_LIST_SIZE)}
    assert got == {
        SettingsFrame.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        SettingsFrame.INITIAL_WINDOW_SIZE: 65535,
        SettingsFrame.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
        SettingsFrame.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
    }


@pytest.mark.parametrize("case", ["reuse-lower-id", "even-id"])
def test_stream_ids(h2c: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    """Stream-id exhaustion: the client took the last id (2^31-1), which is served; any later
    HEADERS can only carry a lower id, a connection error PROTOCOL_ERROR (section 5.1.1), and
    so is an even id from a client."""
    weakness(request, h2c, f"stream-id-{case}")
    top = 2**31 - 1
    with hostile(h2c), Peer(h2c.port) as peer:
        peer.handshake()
        if case == "reuse-lower-id":
            peer.send(peer.headers(top, "/"))
            headers, body = peer.response(top)
            assert (headers[":status"], body) == ("200", b"hello")
            peer.send(peer.headers(3, "/"))
            goaway = assert_goaway(peer, {PROTOCOL_ERROR}, "a stream id below the last")
            assert goaway.last_stream_id == top
        else:
            peer.send(peer.headers(2, "/"))
            assert_goaway(peer, {PROTOCOL_ERROR}, "an even stream id from the client")



IDLE_CASES: dict[str, Callable[[Peer], Frame | bytes]] = {
    # frame on a stream that was never opened: section 5.1 "idle", a connection error PROTOCOL_ERROR
    "data-on-idle": lambda peer: DataFrame(5, data=b"x", flags=["END_STREAM"]),
    "window-update-on-idle": lambda peer: WindowUpdateFrame(5, window_increment=100),
    "rst-on-idle": lambda peer: RstStreamFrame(5, error_code=CANCEL),
    # section 6.10: a CONTINUATION that follows no HEADERS
    "continuation-alone": lambda peer: ContinuationFrame(5, data=b"", flags=["END_HEADERS"]),
    # sections 6.5 and 6.7: SETTINGS and PING on a stream are connection errors PROTOCOL_ERROR
    # (built by hand: hyperframe refuses to make them)
    "settings-on-stream": lambda peer: b"\x00\x00\x00\x04\x00\x00\x00\x00\x05",
    "ping-on-stream": lambda peer: b"\x00\x00\x08\x06\x00\x00\x00\x00\x05" + b"12345678",
    # section 6.8: GOAWAY on a stream
    "goaway-on-stream": lambda peer: b"\x00\x00\x08\x07\x00\x00\x00\x00\x05" + bytes(8),
}


@pytest.mark.parametrize("case", list(IDLE_CASES))
def test_frame_on_idle_stream(h2c: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    """A frame the state machine forbids: GOAWAY PROTOCOL_ERROR, nothing else answered."""
    weakness(request, h2c, case)
    with hostile(h2c), Peer(h2c.port) as peer:
        peer.handshake()
        peer.send(IDLE_CASES[case](peer))
        assert_goaway(peer, {PROTOCOL_ERROR}, case)


#: Connection errors with a code of their own: (the offending frame, the code RFC 9113 names).
CONNECTION_ERRORS: dict[str, tuple[Callable[[Peer], Frame | bytes], int]] = {
    # 6.9: a zero increment on the connection's window is a connection error PROTOCOL_ERROR
    "window-update-zero": (lambda peer: WindowUpdateFrame(0, window_increment=0), PROTOCOL_ERROR),
    # 6.9.1: a connection window past 2^31-1 is a connection error FLOW_CONTROL_ERROR
    "window-overflow": (lambda peer: WindowUpdateFrame(0, window_increment=2**31 - 1), FLOW_CONTROL_ERROR),
    # 6.5.2: ENABLE_PUSH other than 0 or 1
    "settings-enable-push-2": (lambda peer: SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 2}),
                               PROTOCOL_ERROR),
    # 6.5.2: INITIAL_WINDOW_SIZE past 2^31-1
    "settings-window-too-big": (lambda peer: SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31}),
                                FLOW_CONTROL_ERROR),
    # 6.5.2: MAX_FRAME_SIZE below 16,384
    "settings-frame-size-too-small": (lambda peer: SettingsFrame(0, settings={SettingsFrame.MAX_FRAME_SIZE: 16383}),
                                      PROTOCOL_ERROR),
    # 6.5: a SETTINGS ACK that carries a payload
    "settings-ack-with-payload": (lambda peer: b"\x00\x00\x06\x04\x01\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x01",
                                  FRAME_SIZE_ERROR),
}


@pytest.mark.parametrize("case", list(CONNECTION_ERRORS))
def test_connection_error_code(h2c: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    """SETTINGS values out of range and windows past 2^31-1: GOAWAY with the code the RFC names."""
    weakness(request, h2c, case)
    build, code = CONNECTION_ERRORS[case]
    with hostile(h2c), Peer(h2c.port) as peer:
        peer.handshake()
        peer.send(build(peer))
        assert_goaway(peer, {code}, case)



@pytest.mark.parametrize("case", ["data", "headers"])
def test_frame_on_closed_stream(h2c: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    """After stream 1 ended both ways: DATA is a stream error STREAM_CLOSED (section 6.1) or,
    per section 5.1 (frames after END_STREAM), a connection error STREAM_CLOSED; HEADERS
    reusing id 1 is a connection error (STREAM_CLOSED, or PROTOCOL_ERROR as a non-increasing
    id, 5.1.1). Where only the stream is reset, the connection goes on serving."""
    weakness(request, h2c, f"closed-{case}")
    with hostile(h2c, quiet=True), Peer(h2c.port) as peer:
        peer.handshake()
        peer.send(peer.headers(1, "/"))
        assert peer.response(1)[0][":status"] == "200"
        start = len(peer.frames)
        if case == "data":
            peer.send(DataFrame(1, data=b"late", flags=["END_STREAM"]))
            answer = peer.wait_for(lambda f: isinstance(f, (GoAwayFrame, RstStreamFrame)), timeout=10, start=start)
            assert isinstance(answer, (GoAwayFrame, RstStreamFrame)), f"DATA on a closed stream: {peer.describe()}"
            assert answer.error_code == STREAM_CLOSED, describe_frame(answer)
            if isinstance(answer, RstStreamFrame):
                assert answer.stream_id == 1
                peer.send(peer.headers(3, "/"))
                assert peer.response(3)[0][":status"] == "200"
        else:
            peer.send(peer.headers(1, "/"))
            assert_goaway(peer, {STREAM_CLOSED, PROTOCOL_ERROR}, "HEADERS on closed stream 1")



# -- frame sizes (RFC 9113 section 4.2) ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["headers", "data", "ping-9-bytes", "settings-7-bytes", "announced-16mb"])
def test_oversized_frame(h2c: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    """FRAME_SIZE_ERROR: a frame past SETTINGS_MAX_FRAME_SIZE, or of a size its type forbids.

    A frame carrying a field block, SETTINGS, or any frame on stream 0 is a connection error
    (section 4.2); an oversized DATA may be a stream error. A frame head announcing 16 MB
    is judged on its head: the server must not wait for (or buffer) the payload.
    """
    weakness(request, h2c, f"oversized-{case}")
    with hostile(h2c, quiet=case == "data"), Peer(h2c.port) as peer:
        peer.handshake()
        if case == "headers":
            # Padding takes the frame past the limit while the field list stays under
            # http2_max_header_list_size: only the frame size is wrong.
            block = peer.encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                         (":authority", "x"), ("x-pad", "p" * (MAX_FRAME_SIZE - 250))], huffman=False)
            peer.send(HeadersFrame(1, data=block, pad_length=255, flags=["END_HEADERS", "END_STREAM", "PADDED"]))
            assert 1 + len(block) + 255 > MAX_FRAME_SIZE
        elif case == "data":
            peer.send(peer.headers(1, "/echo", method="POST", end_stream=False))
            peer.send(DataFrame(1, data=b"d" * (MAX_FRAME_SIZE + 1), flags=["END_STREAM"]))
            answer = peer.wait_for(lambda f: isinstance(f, GoAwayFrame) or (
                isinstance(f, RstStreamFrame) and f.stream_id == 1), timeout=10)
            assert isinstance(answer, (GoAwayFrame, RstStreamFrame)), f"an oversized DATA: {peer.describe()}"
            assert answer.error_code == FRAME_SIZE_ERROR, describe_frame(answer)
            return
        elif case == "ping-9-bytes":
            peer.send(b"\x00\x00\x09\x06\x00\x00\x00\x00\x00" + b"123456789")
        elif case == "settings-7-bytes":
            peer.send(b"\x00\x00\x07\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64\x00")
        else:
            peer.send(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"z" * 1024)
        assert_goaway(peer, {FRAME_SIZE_ERROR}, f"oversized frame ({case})")



# -- HPACK decoding errors (RFC 7541; RFC 9113 section 4.3) ------------------------------------------

#: Field blocks after the four pseudo-header fields of a GET (built by ``Peer.headers``), each
#: a decoding error: RFC 9113 4.3 makes it a connection error of type COMPRESSION_ERROR.
HPACK_ERRORS = {
    # RFC 7541 6.1: index 0 is not used
    "index-zero": b"\x80",
    # 2.3.3: an index past the static (61) and dynamic (empty) tables
    "index-out-of-range": b"\xff\x49",  # 127 + 73 = 200
    # 4.2 / 6.3: a size update past SETTINGS_HEADER_TABLE_SIZE (4,096 by default): 8,192
    "table-size-too-big": b"\x3f\xe1\x3f",
    # 4.2: a size update must come first in the block, not after a field
    "table-size-update-late": b"\x20",
    # 5.2: Huffman padding longer than 7 bits (a whole 0xff byte of EOS prefix)
    "huffman-bad-padding": b"\x40\x01x\x82\xff\xff",
    # 5.2: a string literal whose length runs past the block
    "truncated-string": b"\x40\x05x-abc\x0a12",
}


@pytest.mark.parametrize("case", list(HPACK_ERRORS))
def test_hpack_decoding_error(h2c: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    weakness(request, h2c, f"hpack-{case}")
    with hostile(h2c), Peer(h2c.port) as peer:
        peer.handshake()
        block = peer.encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")])
        if case == "table-size-too-big":
            block = HPACK_ERRORS[case] + block  # first, where a size update is allowed
        else:
            block += HPACK_ERRORS[case]
        peer.send(HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]))
        assert_goaway(peer, {COMPRESSION_ERROR}, f"HPACK {case}")


def test_frames_tolerated_on_closed_stream(h2c: Gunicorn) -> None:
    """RFC 9113 5.1, closed: WINDOW_UPDATE and RST_STREAM that cross our END_STREAM MUST be
    ignored, and PRIORITY is allowed on any stream: none of them may end the connection."""
    with hostile(h2c, quiet=True), Peer(h2c.port) as peer:
        peer.handshake()
        peer.send(peer.headers(1, "/"))
        assert peer.response(1)[0][":status"] == "200"
        start = len(peer.frames)
        peer.send(WindowUpdateFrame(1, window_increment=1000), PriorityFrame(1, depends_on=0, stream_weight=10),
                  RstStreamFrame(1, error_code=CANCEL))
        peer.send(peer.headers(3, "/"))
        headers, body = peer.response(3)
        assert (headers[":status"], body) == ("200", b"hello")
        assert not [f for f in peer.frames[start:] if isinstance(f, (GoAwayFrame, RstStreamFrame))], peer.describe()
