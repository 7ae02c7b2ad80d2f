"""Hostile HTTP/2 peers (issue 13 point 5): floods, resets, bombs, stalls, a bad preface.

Each test opens a raw socket and sends frames built by hand (hyperframe, hpack). For each
it checks what the offender gets (GOAWAY with the error code RFC 9113 names for a
connection error, RST_STREAM where it says stream error), that another client is served
while the offender is at it and afterwards, and that the worker stays bounded: its CPU
time and RSS growth over the attack (read from /proc/PID of the worker), the log lines it
wrote, and no spinning once the offender is gone (tests/http2/offence.py).

Rows: Gunicorn's own ``-k asgi`` (h2 4.x underneath) and pounce_worker in both forced
modes (skipped, saying why, until ``pounce_worker.http2`` exists). Where ``-k asgi``
fails a case, that row is ``xfail`` with the reason: it documents the peer's weakness,
not a test that is wrong (``offence.ASGI_WEAKNESSES``). The frame-by-frame conformance
cases (stream states, frame sizes, SETTINGS ranges, HPACK decoding errors) are in
test_h2_conformance.py.
"""

from __future__ import annotations

import threading

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.harness import Gunicorn
from tests.http2.h2_harness import (
    CANCEL,
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    Peer,
    describe_frame,
)
from tests.http2.offence import assert_goaway, bystander, ctx_of, flood, hostile, weakness

pytestmark = pytest.mark.timeout(60)


# -- the connection preface (RFC 9113 section 3.4) ---------------------------------------------------


@pytest.mark.parametrize("case", ["corrupt-magic", "headers-before-settings", "ping-before-settings"])
def test_bad_preface(h2any: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    """An invalid preface is a connection error of type PROTOCOL_ERROR; the GOAWAY MAY be omitted.

    The magic must be followed by a SETTINGS frame (section 3.4). Gunicorn documents that a
    trusted peer on a prior-knowledge port that sends a malformed preface gets an HTTP/1.1
    400, which a peer that is not speaking HTTP/2 can read: accepted too for the corrupt magic.
    Over h2c and over TLS (after ALPN chose ``h2``).
    """
    h2c = h2any
    weakness(request, h2c, f"preface-{case}")
    with hostile(h2c), Peer(h2c.port, ctx_of(h2c)) as peer:
        if h2c.tls:  # type: ignore[attr-defined]
            assert peer.alpn == "h2"
        if case == "corrupt-magic":
            peer.send(PREFACE[:-6] + b"XX\r\n\r\n", SettingsFrame(0))
        elif case == "headers-before-settings":
            peer.send(PREFACE, peer.headers(1))
        else:
            peer.send(PREFACE, PingFrame(0, opaque_data=b"12345678"))
        bystander(h2c)
        how = peer.read_until_closed(10)
        assert how in ("eof", "reset"), f"still open after a bad preface: {peer.describe()}"
        goaways = [f for f in peer.frames if isinstance(f, GoAwayFrame)]
        assert all(g.error_code == PROTOCOL_ERROR for g in goaways), peer.describe()
        answered = [f for f in peer.frames if isinstance(f, (HeadersFrame, DataFrame, PingFrame))]
        assert not answered, f"a bad preface got an answer: {peer.describe()}"
        if peer.raw_tail:
            assert case == "corrupt-magic" and peer.raw_tail.startswith(b"HTTP/1.1 400"), peer.describe()


# -- floods ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["settings", "ping", "priority", "empty-data"])
def test_control_frame_flood(h2c: Gunicorn, case: str, request: pytest.FixtureRequest) -> None:
    """10,000 SETTINGS, PING, PRIORITY or empty DATA frames: GOAWAY ENHANCE_YOUR_CALM.

    SETTINGS and PING each make the server queue an ACK (CVE-2019-9512, -9515), PRIORITY
    builds priority state for idle streams (CVE-2019-9513), empty DATA frames without
    END_STREAM cost work and carry nothing (CVE-2019-9518). RFC 9113 section 10.5: an
    endpoint MAY treat such activity as a connection error of type ENHANCE_YOUR_CALM. The
    offender reads nothing and its receive buffer is small, so ACKs back up in the server.
    """
    weakness(request, h2c, f"flood-{case}")
    count = 10_000
    with hostile(h2c, settle=True) as cost, Peer(h2c.port, rcvbuf=4096) as peer:
        peer.handshake()
        if case == "settings":
            frames = [SettingsFrame(0).serialize()] * count
        elif case == "ping":
            frames = [PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(count)]
        elif case == "priority":
            frames = [PriorityFrame(2 * i + 3, depends_on=2 * i + 1, stream_weight=16).serialize()
                      for i in range(count)]
        else:
            peer.send(peer.headers(1, "/echo", method="POST", end_stream=False))
            frames = [DataFrame(1, data=b"").serialize()] * count
        sender = threading.Thread(target=flood, args=(peer, h2c, cost, frames), daemon=True)
        sender.start()
        sender.join(30)
        assert not sender.is_alive(), "the flood could not be sent in 30s"
        assert_goaway(peer, {ENHANCE_YOUR_CALM}, f"{case} flood")


@pytest.mark.parametrize("rounds", [5_000])
def test_rapid_reset(h2c: Gunicorn, rounds: int, request: pytest.FixtureRequest) -> None:
    """CVE-2023-44487: HEADERS then RST_STREAM(CANCEL), thousands of times: GOAWAY ENHANCE_YOUR_CALM.

    Each stream is legal on its own, so the defence is a rate: the connection is closed
    before thousands of app calls are started, with the last stream id it processed.
    """
    weakness(request, h2c, "rapid-reset")
    with hostile(h2c, settle=True) as cost, Peer(h2c.port) as peer:
        peer.handshake()
        frames = []
        for i in range(rounds):
            stream_id = 2 * i + 1
            reset = RstStreamFrame(stream_id, error_code=CANCEL)
            frames.append(peer.headers(stream_id, "/").serialize() + reset.serialize())
        sender = threading.Thread(target=flood, args=(peer, h2c, cost, frames, 100), daemon=True)
        sender.start()
        # Read while sending: the responses to the streams that got through must not block the server.
        goaway = assert_goaway(peer, {ENHANCE_YOUR_CALM}, "rapid reset", timeout=30)
        sender.join(30)
        assert goaway.last_stream_id < 2 * rounds - 1, "every stream was processed: no rate limit"


def _header_block_chunk(size: int) -> bytes:
    """``size`` bytes of valid HPACK: literal fields without indexing (RFC 7541 6.2.2), none indexed."""
    name, value = b"x-flood", b"a" * 100
    field = b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return (field * (size // len(field) + 1))[:size]


def test_continuation_flood(h2c: Gunicorn, request: pytest.FixtureRequest) -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.

    The block passes ``http2_max_header_list_size`` after two frames; the server must stop
    buffering and close: a connection error (the field block can no longer be processed,
    RFC 9113 section 10.5.1), ENHANCE_YOUR_CALM (section 10.5) or PROTOCOL_ERROR.
    The offender sends up to 8 MB; the worker's RSS must not follow.
    """
    weakness(request, h2c, "continuation-flood")
    with hostile(h2c, settle=True) as cost, Peer(h2c.port) as peer:
        peer.handshake()
        chunk = _header_block_chunk(MAX_FRAME_SIZE)
        first = HeadersFrame(1, data=peer.encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                                          (":authority", "x")]) + chunk[:1000]).serialize()
        frames = [first] + [ContinuationFrame(1, data=chunk).serialize()] * 512
        sender = threading.Thread(target=flood, args=(peer, h2c, cost, frames, 8), daemon=True)
        sender.start()
        assert_goaway(peer, {ENHANCE_YOUR_CALM, PROTOCOL_ERROR}, "CONTINUATION flood", timeout=20)
        sender.join(30)


def test_hpack_bomb(h2c: Gunicorn, request: pytest.FixtureRequest) -> None:
    """A 4,000-byte field indexed into the dynamic table, then referenced 1,000 times in one block.

    Under 1 KB on the wire, 4 MB decoded: past ``http2_max_header_list_size`` (16 KiB here).
    RFC 9113 section 10.5.1: a 431 on that stream, or a connection error (ENHANCE_YOUR_CALM,
    or COMPRESSION_ERROR where the decoder stopped mid-block). The app never sees the fields.
    """
    weakness(request, h2c, "hpack-bomb")
    with hostile(h2c, quiet=True), Peer(h2c.port) as peer:
        peer.handshake()
        # Stream 1 is legal (4 KB of fields) and puts the field at dynamic index 62.
        peer.send(peer.headers(1, "/", extra=[("x-bomb", "b" * 4000)]))
        headers, _ = peer.response(1)
        assert headers[":status"] == "200"
        block = peer.encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")])
        bomb = block + bytes([0x80 | 62]) * 1000  # indexed field representation (RFC 7541 6.1)
        peer.send(HeadersFrame(3, data=bomb, flags=["END_HEADERS", "END_STREAM"]))
        answer = peer.wait_for(lambda f: isinstance(f, GoAwayFrame) or (f.stream_id == 3 and isinstance(
            f, (HeadersFrame, RstStreamFrame))), timeout=10)
        assert answer is not None, f"no answer to the HPACK bomb: {peer.describe()}"
        if isinstance(answer, GoAwayFrame):
            assert answer.error_code in (ENHANCE_YOUR_CALM, COMPRESSION_ERROR), describe_frame(answer)
            assert peer.read_until_closed(10) in ("eof", "reset")
        elif isinstance(answer, HeadersFrame):
            assert dict(peer.fields[id(answer)]).get(":status") == "431", peer.fields[id(answer)]
        else:
            pytest.fail(f"a stream reset is not what RFC 9113 10.5.1 offers: {describe_frame(answer)}")


def test_oversized_header_list(h2c: Gunicorn, request: pytest.FixtureRequest) -> None:
    """Plain literal fields past ``http2_max_header_list_size`` (in CONTINUATIONs under the frame size).

    The same choice as the bomb (431 or ENHANCE_YOUR_CALM/COMPRESSION_ERROR): the limit sent
    in SETTINGS is enforced, not only advertised.
    """
    weakness(request, h2c, "oversized-header-list")
    with hostile(h2c, quiet=True), Peer(h2c.port) as peer:
        peer.handshake()
        fields = [(f"x-big-{i}", "v" * 1000) for i in range(MAX_HEADER_LIST_SIZE // 1000 + 4)]
        block = peer.headers(1, "/", extra=fields).data
        pieces = [block[i:i + 8000] for i in range(0, len(block), 8000)]
        frames: list[bytes] = [HeadersFrame(1, data=pieces[0], flags=["END_STREAM"]).serialize()]
        for n, piece in enumerate(pieces[1:], 2):
            last = ["END_HEADERS"] if n == len(pieces) else []
            frames.append(ContinuationFrame(1, data=piece, flags=last).serialize())
        peer.send(*frames)
        answer = peer.wait_for(lambda f: isinstance(f, GoAwayFrame) or (f.stream_id == 1 and isinstance(
            f, (HeadersFrame, RstStreamFrame))), timeout=10)
        assert answer is not None, f"no answer to a header list past the limit: {peer.describe()}"
        if isinstance(answer, GoAwayFrame):
            assert answer.error_code in (ENHANCE_YOUR_CALM, COMPRESSION_ERROR), describe_frame(answer)
        elif isinstance(answer, HeadersFrame):
            assert dict(peer.fields[id(answer)]).get(":status") == "431", peer.fields[id(answer)]
        else:
            pytest.fail(f"a stream reset is not what RFC 9113 10.5.1 offers: {describe_frame(answer)}")



# -- resets the server is made to send ---------------------------------------------------------------


@pytest.mark.parametrize("rounds", [5_000])
def test_made_you_reset(h2c: Gunicorn, rounds: int, request: pytest.FixtureRequest) -> None:
    """MadeYouReset (CVE-2025-8671): the client never sends RST_STREAM but makes the server reset
    each stream (HEADERS, then a WINDOW_UPDATE of 0 on it: a stream error PROTOCOL_ERROR, 6.9),
    thousands of times. A rate limit on the client's resets alone misses it; the server must
    close (ENHANCE_YOUR_CALM, or PROTOCOL_ERROR if it treats the first such stream error as a
    connection error, 5.4.1) before it started every stream."""
    weakness(request, h2c, "made-you-reset")
    with hostile(h2c, settle=True) as cost, Peer(h2c.port) as peer:
        peer.handshake()
        frames = []
        for i in range(rounds):
            stream_id = 2 * i + 1
            poke = WindowUpdateFrame(stream_id, window_increment=0)
            frames.append(peer.headers(stream_id, "/").serialize() + poke.serialize())
        sender = threading.Thread(target=flood, args=(peer, h2c, cost, frames, 100), daemon=True)
        sender.start()
        goaway = assert_goaway(peer, {ENHANCE_YOUR_CALM, PROTOCOL_ERROR}, "MadeYouReset", timeout=30)
        sender.join(30)
        assert goaway.last_stream_id < 2 * rounds - 1, "every stream was processed: no limit"



# -- the concurrency limit (RFC 9113 section 5.1.2) -------------------------------------------------


def test_stream_beyond_concurrency_limit(h2c: Gunicorn, request: pytest.FixtureRequest) -> None:
    """Section 5.1.2: a HEADERS that exceeds the advertised limit is a stream error,
    PROTOCOL_ERROR or REFUSED_STREAM; the connection goes on, and once a stream ends a new
    one is served."""
    weakness(request, h2c, "beyond-concurrency")
    with hostile(h2c, quiet=True), Peer(h2c.port) as peer:
        peer.handshake()
        for i in range(MAX_CONCURRENT_STREAMS):  # each waits for its request body
            peer.send(peer.headers(2 * i + 1, "/echo", method="POST", end_stream=False))
        extra = 2 * MAX_CONCURRENT_STREAMS + 1
        peer.send(peer.headers(extra, "/echo", method="POST", end_stream=False))
        reset = peer.wait_for(lambda f: f.stream_id == extra or isinstance(f, GoAwayFrame), timeout=10)
        assert isinstance(reset, RstStreamFrame), f"stream {extra} over the limit: {peer.describe()}"
        assert reset.error_code in (REFUSED_STREAM, PROTOCOL_ERROR), describe_frame(reset)
        bystander(h2c)
        peer.send(DataFrame(1, data=b"abc", flags=["END_STREAM"]))
        headers, body = peer.response(1)
        assert (headers[":status"], body) == ("200", b"abc")
        peer.send(peer.headers(extra + 2, "/"))
        headers, body = peer.response(extra + 2)
        assert (headers[":status"], body) == ("200", b"hello")
        for i in range(1, MAX_CONCURRENT_STREAMS):
            peer.send(DataFrame(2 * i + 1, data=b"", flags=["END_STREAM"]))
        for i in range(1, MAX_CONCURRENT_STREAMS):
            assert peer.response(2 * i + 1)[0][":status"] == "200"



# -- a client that never opens its window ---------------------------------------------------------


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_zero_window_stall(h2c: Gunicorn, request: pytest.FixtureRequest) -> None:
    """The client asks for 1 MB and never sends WINDOW_UPDATE: after the first 65,535 bytes the
    server cannot send. The stream must end within a deadline, not hold its slot forever
    (``-k asgi`` resets it after ``timeout``, 10 s here; pounce after POUNCE_SEND_TIMEOUT, 4 s
    here; bound 20 s), and the connection be closed after it (by then idle: ``keepalive``, 5 s
    here; bound 10 s more). Never a byte past the window the client granted."""
    weakness(request, h2c, "zero-window")
    with hostile(h2c), Peer(h2c.port) as peer:
        peer.handshake()
        peer.send(peer.headers(1, "/big"))

        def granted_window_used() -> bool:
            return sum(len(f.data) for f in peer.frames if isinstance(f, DataFrame) and f.stream_id == 1) >= 65535

        assert peer.wait_for(lambda f: granted_window_used(), timeout=10), f"no full window: {peer.describe()}"
        bystander(h2c)
        ended = peer.wait_for(lambda f: isinstance(f, GoAwayFrame) or (
            isinstance(f, RstStreamFrame) and f.stream_id == 1), timeout=20)
        assert ended is not None or peer.closed, f"a stalled stream held on for 20s: {peer.describe()}"
        assert peer.read_until_closed(10) in ("eof", "reset"), f"the stalled connection stays open: {peer.describe()}"
        sent = sum(len(f.data) for f in peer.frames if isinstance(f, DataFrame) and f.stream_id == 1)
        assert sent == 65535, f"{sent} bytes of DATA where the client granted 65,535"


