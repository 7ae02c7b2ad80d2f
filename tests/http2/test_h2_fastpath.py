"""The HTTP/2 fast path (pounce_worker/http2/fastpath.py) against plain h2, on generated frame sequences.

Each example is a connection: a client preface, then steps drawn at random from what a
client sends (requests whose HPACK blocks repeat, as real clients' do once their fields
are indexed, some with literals never indexed, as nghttp2 sends ``:path``; raw header
blocks of random bytes; DATA, WINDOW_UPDATE, RST_STREAM,
SETTINGS, PING, PRIORITY, CONTINUATION splits, stream ids reused or even or too low,
garbage) and what the server does (responses, data, trailers, 100 Continue, resets,
window acknowledgements, SETTINGS of its own). ``fastpath_driver.Pair`` checks after
every step that both machines reported and queued the same thing.
"""

from __future__ import annotations

from typing import Any

import pytest
from h2.connection import ConnectionState
from hpack import Encoder, NeverIndexedHeaderTuple
from hpack.hpack import INDEX_NONE, encode_integer
from hpack.table import HeaderTable
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame

from pounce_worker.http2.fastpath import FastMachine
from tests.http2.fastpath_driver import ERROR_CODES, Pair
from tests.hypothesis_compat import HealthCheck, given, leg_examples, settings, st

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Literal(tuple):  # type: ignore[type-arg]
    """A field the client sends as a literal without indexing (RFC 7541 §6.2.2), as nghttp2 sends ``:path``."""


#: How nghttp2 (h2load, curl) sends a request: ``:path`` first and never indexed, the rest indexed.
NGHTTP2 = [Literal((b":path", b"/plain")), (b":scheme", b"http"), (b":authority", b"127.0.0.1:8000"),
           (b":method", b"GET"), (b"user-agent", b"h2load nghttp2/1.52.0")]
BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/plain"), (b":authority", b"127.0.0.1:8000")]
#: Requests a client repeats: valid ones, and ones h2 refuses (each refusal must be the same).
REQUESTS: list[list[tuple[bytes, bytes]]] = [
    [*BASE, (b"accept", b"*/*"), (b"user-agent", b"h2load nghttp2/1.52.0")],
    [*BASE, (b"accept", b"*/*"), (b"user-agent", b"h2load nghttp2/1.52.0")],
    [(b":method", b"POST"), *BASE[1:], (b"content-length", b"5"), (b"content-type", b"text/plain")],
    [(b":method", b"HEAD"), *BASE[1:], (b"content-length", b"7")],
    [*BASE, (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"accept-encoding", b"gzip, deflate")],
    [*BASE, (b"x-long", b"v" * 300)],
    [*BASE, (b"te", b"trailers")],
    [*BASE, (b"content-length", b"x")],  # invalid content-length
    [*BASE, (b"Upper", b"case")],  # uppercase name
    [*BASE, (b"connection", b"close")],  # connection-specific field
    [*BASE, (b"te", b"gzip")],
    BASE[1:],  # no :method
    [*BASE, (b":path", b"/twice")],  # pseudo-header twice
    [(b"accept", b"*/*"), *BASE],  # pseudo-header after a regular one
    [*BASE, (b":status", b"100")],
    [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
    [*BASE, (b"host", b"other")],
    [*BASE, (b"bad", b"a\x00b")],
    NGHTTP2,  # 18
    [Literal((b":path", b"/other")), *NGHTTP2[1:], NeverIndexedHeaderTuple(b"cookie", b"s=1")],
    [*NGHTTP2, Literal((b"x-custom", b"one")), Literal((b"x-custom", b"two"))],  # a literal name
    [*NGHTTP2[1:], Literal((b":path", b""))],  # an empty :path, refused
    [*NGHTTP2, Literal((b"connection", b"close"))],  # refused
]
#: What the server answers with (the first field decides informational/final/trailers).
RESPONSES: list[list[Any]] = [
    [(b":status", b"200"), (b"server", b"gunicorn"), (b"date", b"Sat, 05 Dec 2026 03:00:00 GMT"),
     (b"content-type", b"text/plain"), (b"content-length", b"13")],
    [(b":status", b"200"), (b"server", b"gunicorn"), (b"date", b"Sat, 05 Dec 2026 03:00:01 GMT"),
     (b"content-type", b"text/plain"), (b"content-length", b"13")],
    [(b":status", b"404"), (b"x-custom-header", b"\xff\x00 anything")],
    [(b":status", b"100")],
    [(b":status", b"103"), (b"link", b"</style.css>; rel=preload")],
    [(b":status", b"204")],
    [(b"grpc-status", b"0"), (b"x-trailer", b"yes")],  # trailers
    [(b":status", b"200"), NeverIndexedHeaderTuple(b"set-cookie", b"secret=1")],
    [(b":status", b"200"), (b"x-big", b"~" * 16500)],  # past one frame (Huffman makes it no shorter): CONTINUATION
    [(b":status", b"200"), (b"cache-control", b"private"), (b"vary", b"accept-encoding")],
]

#: Pieces of header blocks: indexed fields, literals that keep the table (some malformed), ones that change it.
BLOCK_PIECES = [b"\x82", b"\x86", b"\x84", b"\xbe", b"\xc1", b"\x04\x02/a", b"\x0f\x2f\x01x", b"\x00\x01z\x01v",
                b"\x10\x01k\x00", b"\x04\x81\xff", b"\x7f", b"\x04\x7f", b"\x41\x01h", b"\x3f\xe1\x1f"]
stream_ids = st.one_of(st.integers(1, 41), st.sampled_from([0, 2, 2**31 - 1]))


def settings_frame(ack: bool, values: dict[int, int]) -> bytes:
    frame = SettingsFrame(0, flags=["ACK"] if ack else [])
    if not ack:
        frame.settings = values
    return frame.serialize()


#: What a client commonly sends: requests whose blocks repeat (the cached path), on the next stream mostly.
common_requests = st.tuples(st.just("request"), st.sampled_from([0, 0, 18, 18, 1, 2, 3, 4, 6, 19, 20]), st.booleans(),
                            st.sampled_from(["next"] * 8 + ["same", "even", "low"]), st.sampled_from([0, 0, 0, 3]))
#: Everything else a client may send, valid or not.
other_client_steps = st.one_of(
    st.tuples(st.just("request"), st.integers(0, len(REQUESTS) - 1), st.booleans(),
              st.sampled_from(["next", "next", "next", "same", "even", "low"]), st.integers(0, 3)),
    st.tuples(st.just("raw-headers"), stream_ids,
              st.one_of(st.binary(max_size=12), st.lists(st.integers(0x81, 0xFE), max_size=8).map(bytes),
                        st.lists(st.sampled_from(BLOCK_PIECES), max_size=6).map(b"".join)),
              st.booleans()),
    st.tuples(st.just("data"), stream_ids, st.integers(0, 300), st.booleans(),
              st.one_of(st.none(), st.integers(0, 20))),
    st.tuples(st.just("window"), st.integers(0, 9), st.integers(0, 2**31 - 1)),
    st.tuples(st.just("rst"), stream_ids, st.sampled_from(ERROR_CODES)),
    st.tuples(st.just("settings"), st.booleans(), st.dictionaries(
        st.sampled_from([1, 2, 3, 4, 5, 6, 0x99]), st.integers(0, 2**31), max_size=3)),
    st.tuples(st.just("ping"), st.booleans()),
    st.tuples(st.just("priority"), stream_ids, st.integers(0, 9)),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=30)),
)
#: What the server commonly does: answer the newest stream with a head it sent before, then its body.
serve_steps = st.tuples(st.just("serve"), st.sampled_from([-1, -1, -1, -2, 0]), st.sampled_from([0, 0, 1, 9, 5, 3]),
                        st.integers(0, 40), st.booleans())
other_server_steps = st.one_of(
    st.tuples(st.just("respond"), st.integers(0, 9), st.integers(0, len(RESPONSES) - 1), st.booleans()),
    st.tuples(st.just("send-data"), st.integers(0, 9), st.integers(0, 20000), st.booleans()),
    st.tuples(st.just("end"), st.integers(0, 9)),
    st.tuples(st.just("reset"), st.integers(0, 9), st.sampled_from(ERROR_CODES)),
    st.tuples(st.just("ack"), st.integers(0, 9), st.integers(0, 400)),
    st.tuples(st.just("local-settings"), st.dictionaries(st.sampled_from([1, 3, 4, 5, 6]), st.integers(0, 70000),
                                                         max_size=2)),
)
SERVER_STEPS = ("respond", "send-data", "end", "reset", "ack", "local-settings", "serve")
steps_strategy = st.lists(st.one_of(common_requests, common_requests, common_requests, serve_steps, serve_steps,
                                    serve_steps, other_client_steps, other_server_steps), min_size=10, max_size=80)


class Client:
    """The client's side of the conversation: its HPACK context and the stream ids it used."""

    def __init__(self) -> None:
        self.encoder = Encoder()
        self.next_id = 1
        self.opened: list[int] = []

    def stream(self, index: int) -> int:
        return self.opened[index % len(self.opened)] if self.opened else 1

    def request(self, which: int, end: bool, ids: str, split: int) -> bytes:
        if ids == "next" or not self.opened:
            stream_id = self.next_id
            self.next_id += 2
            self.opened.append(stream_id)
        elif ids == "same":
            stream_id = self.opened[-1]
        elif ids == "even":
            stream_id = self.next_id + 1
        else:
            stream_id = max(1, self.next_id - 4)
        fields = REQUESTS[which]
        if not any(type(field) is Literal for field in fields):
            block = self.encoder.encode(fields)
        else:
            block = b"".join(literal(self.encoder, field) if type(field) is Literal else self.encoder.encode([field])
                             for field in fields)
        flags = ["END_STREAM"] if end else []
        if split and len(block) > split:
            first = HeadersFrame(stream_id, data=block[:split], flags=flags)
            rest = ContinuationFrame(stream_id, data=block[split:], flags=["END_HEADERS"])
            return first.serialize() + rest.serialize()
        return HeadersFrame(stream_id, data=block, flags=[*flags, "END_HEADERS"]).serialize()


#: Each name's first index in HPACK's static table (RFC 7541 Appendix A).
STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _) in enumerate(HeaderTable.STATIC_TABLE, 1):
    STATIC_NAMES.setdefault(_name, _index)


def literal(encoder: Encoder, field: tuple[bytes, bytes]) -> bytes:
    """A literal without indexing, by static name index where there is one, Huffman-coded where shorter."""
    prefix = encoder.encode([]) if encoder.header_table.resized else b""  # a pending table size update first
    name, value = field
    index = STATIC_NAMES.get(name)
    huffman = len(encoder.huffman_coder.encode(value)) < len(value)
    if index is None:
        return prefix + encoder._encode_literal(name, value, INDEX_NONE, huffman)
    return prefix + encoder._encode_indexed_literal(index, value, INDEX_NONE, huffman)


def raw(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame as given, valid or not (hyperframe refuses to build some invalid ones)."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def client_bytes(client: Client, step: tuple[Any, ...]) -> bytes:
    kind = step[0]
    if kind == "request":
        return client.request(*step[1:])
    if kind == "raw-request":
        _, block, end = step
        stream_id = client.next_id
        client.next_id += 2
        client.opened.append(stream_id)
        return raw(0x1, 0x4 | (0x1 if end else 0), stream_id, block)
    if kind == "body":
        _, index, size, end = step
        return raw(0x0, 0x1 if end else 0, client.stream(index), b"b" * size)
    if kind == "raw-headers":
        _, stream_id, block, end = step
        return raw(0x1, 0x4 | (0x1 if end else 0), stream_id, block)
    if kind == "data":
        _, stream_id, size, end, pad = step
        payload = b"d" * size
        if pad is not None:
            payload = bytes((pad,)) + payload + b"\0" * pad
        return raw(0x0, (0x1 if end else 0) | (0x8 if pad is not None else 0),
                   stream_id if stream_id else client.stream(0), payload)
    if kind == "window":
        _, index, increment = step
        return raw(0x8, 0, 0 if index == 0 else client.stream(index), increment.to_bytes(4, "big"))
    if kind == "rst":
        return raw(0x3, 0, step[1], int(step[2]).to_bytes(4, "big"))
    if kind == "settings":
        return settings_frame(step[1], step[2])
    if kind == "ping":
        return raw(0x6, 0x1 if step[1] else 0, 0, b"12345678")
    if kind == "priority":
        return raw(0x2, 0, step[1], step[2].to_bytes(4, "big") + b"\x10")
    return bytes(step[1])


def server_act(pair: Pair, client: Client, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "local-settings":
        pair.both(f"update_settings {step[1]}", lambda m: m.update_settings(step[1]))
        return
    stream_id = client.stream(step[1])
    if kind == "serve":
        _, _, which, size, trailers = step
        pair.both(f"send_headers {stream_id} {which}",
                  lambda m: m.send_headers(stream_id, RESPONSES[which], end_stream=False), RESPONSES[which])
        pair.both(f"send_data {stream_id} {size}",
                  lambda m: m.send_data(stream_id, b"s" * size, end_stream=not trailers))
        if trailers:
            pair.both(f"trailers {stream_id}", lambda m: m.send_headers(stream_id, RESPONSES[6], end_stream=True),
                      RESPONSES[6])
    elif kind == "respond":
        _, _, which, end = step
        pair.both(f"send_headers {stream_id} {which} {end}",
                  lambda m: m.send_headers(stream_id, RESPONSES[which], end_stream=end), RESPONSES[which])
    elif kind == "send-data":
        _, _, size, end = step

        def send(m: Any) -> None:
            window = m.local_flow_control_window(stream_id)
            m.send_data(stream_id, b"x" * max(0, min(size, window, m.max_outbound_frame_size)), end_stream=end)
        pair.both(f"send_data {stream_id} {size} {end}", send)
    elif kind == "end":
        pair.both(f"end_stream {stream_id}", lambda m: m.end_stream(stream_id))
    elif kind == "reset":
        pair.both(f"reset_stream {stream_id}", lambda m: m.reset_stream(stream_id, step[2]))
    elif kind == "ack":
        pair.both(f"acknowledge {stream_id}", lambda m: m.acknowledge_received_data(step[2], stream_id))


def run(steps: list[tuple[Any, ...]], chunks: int, pair: Pair | None = None,
        client_settings: dict[int, int] | None = None) -> None:
    pair = pair or Pair()
    client = Client()
    pending = PREFACE + settings_frame(False, client_settings or {}) + settings_frame(True, {})
    for step in steps:
        if pair.plain.machine.state_machine.state is ConnectionState.CLOSED:
            break  # a connection error: nothing more happens on either side
        if step[0] in SERVER_STEPS:
            if pending:
                pair.receive(pending)
                pending = b""
            server_act(pair, client, step)
        else:
            pending += client_bytes(client, step)
            if len(pending) > chunks:
                cut = len(pending) - chunks // 2  # frames split mid-way across receive_data calls
                pair.receive(pending[:cut])
                pending = pending[cut:]
    if pending:
        pair.receive(pending)


@pytest.mark.timeout(300)
@settings(max_examples=leg_examples(1000), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps_strategy, st.integers(1, 400))
def test_same_as_h2_on_generated_sequences(steps: list[tuple[Any, ...]], chunks: int) -> None:
    run(steps, chunks)


#: Blocks of indexed fields only, some naming dynamic-table entries (62+): the same bytes mean
#: other fields once the table changed, which the request cache must notice.
INDEXED_BLOCKS = [b"\x82\x86\x84", b"\x82\x86\x84\xbe", b"\x82\x86\x84\xbf", b"\x82\x86\xbe\xbf",
                  b"\x83\x86\x84\xbe\xc0", b"\x82\x86\x84\xc5",
                  # literals without indexing / never indexed (0x0_, 0x1_) that leave the table as it is,
                  # some naming a dynamic entry (0x0f 0x2f: name 62), one with a literal name (0x00)
                  b"\x82\x86\x04\x02/a", b"\x82\x86\x04\x02/a\xbe", b"\x82\x86\x84\x0f\x2f\x01x",
                  b"\x82\x86\x84\x1f\x2f\x01y\xbf", b"\x82\x86\x84\x00\x01z\x01v",
                  b"\x82\x86\x14\x85\x62\xba\x06\x6a\xbf",
                  b"\x82\x86\x04\x81\xff"]  # (not Huffman: refused)
#: One round of a busy connection: requests on new streams (one header list, as h2load sends),
#: their bodies, then the server answers them in some order, other steps in between.
rounds = st.lists(st.tuples(
    st.integers(1, 10), st.sampled_from([0, 0, 18, 18, 1, 2, 3, 4, 19, 20]), st.booleans(),
    st.lists(st.sampled_from([0, 0, 1, 9, 3, 8]), min_size=1, max_size=3),
    st.lists(st.one_of(
        st.tuples(st.just("raw-request"), st.sampled_from(INDEXED_BLOCKS), st.booleans()),
        st.tuples(st.just("body"), st.integers(0, 9), st.sampled_from([0, 5, 7, 9]), st.booleans()),
        st.tuples(st.just("window"), st.integers(0, 9), st.sampled_from([1, 40, 1000, 2**31 - 1])),
        other_client_steps, other_server_steps), max_size=3),
    st.randoms(use_true_random=False)),
    min_size=1, max_size=8)
#: The client's SETTINGS: a small window makes responses wait; a smaller table, size updates.
client_settings = st.fixed_dictionaries({}, optional={
    1: st.sampled_from([0, 100, 4096]), 4: st.sampled_from([0, 30, 100, 65535]), 5: st.just(16384)})


@pytest.mark.timeout(300)  # CPU-bound, not timed: a loaded machine may take thrice as long
@settings(max_examples=leg_examples(500), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rounds, st.sampled_from([10_000, 10_000, 200, 37]), client_settings, st.sampled_from([100, 100, 4, 1]),
       st.sampled_from([0, 0, 0, 400]))
def test_same_as_h2_on_busy_connections(plan: list[Any], chunks: int, settings_: dict[int, int], max_streams: int,
                                        header_list: int) -> None:
    """Mostly what a loaded connection sees: the cached request path and cached heads, every round."""
    steps: list[Any] = []
    for count, which, end, heads, extra, rnd in plan:
        steps += [("request", which, end, "next", 0)] * count
        if not end:
            steps += [("body", -1 - i, rnd.choice([0, 5, 7]), True) for i in range(count)]
        answers = [("serve", -1 - i, rnd.choice(heads), rnd.randint(0, 60), rnd.random() < 0.2) for i in range(count)]
        rnd.shuffle(answers)
        for step in extra:
            answers.insert(rnd.randint(0, len(answers)), step)
        steps += answers
    run(steps, chunks, Pair(max_streams, header_list), settings_)


@pytest.mark.timeout(300)
@settings(max_examples=leg_examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.tuples(st.just("request"), st.sampled_from([0, 2, 4, 5, 16]), st.just(True), st.just("next"), st.just(0)),
    st.tuples(st.just("request"), st.sampled_from([18, 19, 20]), st.just(True), st.just("next"), st.just(0)),
    st.tuples(st.just("raw-request"),
              st.sampled_from([b"\x82\x86\x84\xbe", b"\x82\x86\x84\xbf", b"\x82\x86\x84\xc0",
                               b"\x82\x86\x84\xc0\xbe", b"\x82\x86\x84\xc1", b"\x82\x86\x84\x0f\x2f\x01x",
                               b"\x82\x86\x04\x02/a\xbe\x1f\x30\x01y"]),
              st.just(True))), min_size=2, max_size=24))
def test_request_cache_follows_the_dynamic_table(steps: list[Any]) -> None:
    """The same indexed block means other fields once the client inserted some: never a stale hit."""
    run(steps, 10_000)


@pytest.mark.parametrize("which", [0, 18])
def test_repeated_requests_take_the_cached_path(which: int) -> None:
    """The differential tests above prove nothing if the fast path never runs: it does, from the third
    request, for a client that indexes every field and for one that never indexes ``:path`` (nghttp2)."""
    pair = Pair()
    machine = pair.fast.machine
    assert isinstance(machine, FastMachine)
    hits = []
    lookup = machine.decoder.lookup  # type: ignore[attr-defined]

    def spy(data: bytes) -> Any:
        found = lookup(data)
        hits.append(found is not None)
        return found

    machine.decoder.lookup = spy  # type: ignore[attr-defined]
    by_h2 = []
    receive_frame = machine._receive_frame

    def frame_spy(frame: Any) -> Any:
        by_h2.append(type(frame).__name__)
        return receive_frame(frame)

    machine._receive_frame = frame_spy  # type: ignore[method-assign]
    client = Client()
    pair.receive(PREFACE + settings_frame(False, {}) + settings_frame(True, {}))
    found = []
    for _ in range(3):
        by_h2.clear()
        hits.clear()
        pair.receive(client.request(which, True, "next", 0))
        found.append(any(hits))
        server_act(pair, client, ("respond", -1, 0, False))
        server_act(pair, client, ("send-data", -1, 13, True))
    assert found == [False, False, True]  # the first block indexes its fields, the second is stored
    assert by_h2 == []  # the third HEADERS frame never reached h2's frame objects (receive_data)


@pytest.mark.parametrize("table_size", [0, 100, 4096])
def test_table_size_update_comes_first(table_size: int) -> None:
    """A client's SETTINGS_HEADER_TABLE_SIZE is acknowledged in the next block, as hpack does (RFC 7541 §4.2)."""
    pair = Pair()
    client = Client()
    pair.receive(PREFACE + settings_frame(False, {1: table_size}) + settings_frame(True, {}))
    pair.receive(client.request(0, True, "next", 0))
    server_act(pair, client, ("respond", -1, 0, True))
    pair.receive(client.request(1, True, "next", 0))
    server_act(pair, client, ("respond", -1, 1, True))
    update = bytes(encode_integer(table_size, 5))
    update = bytes((update[0] | 0x20,)) + update[1:]
    for side in (pair.plain, pair.fast):
        assert side.blocks[0].startswith(update) == (table_size != 4096)
        assert not side.blocks[1].startswith(update)


def test_request_cache_follows_the_header_list_limit() -> None:
    """A block accepted under one ``max_header_list_size`` is refused under a smaller one, cached or not."""
    pair = Pair()
    client = Client()
    pair.receive(PREFACE + settings_frame(False, {}) + settings_frame(True, {}))
    for _ in range(3):  # indexes its fields, then stores the indexed block, then hits it
        pair.receive(client.request(0, True, "next", 0))
    for side in (pair.plain, pair.fast):
        side.machine.decoder.max_header_list_size = 100
    result = pair.receive(client.request(0, True, "next", 0))
    assert result[0] == "error"


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("reset", [True, False])
def test_frame_on_a_forgotten_stream(reset: bool, cached: bool) -> None:
    """HEADERS again on a stream h2 closed and forgot: RST_STREAM(STREAM_CLOSED) if we reset it,
    a connection error if it ended normally (RFC 9113 §5.1), as h2's own ``_receive_frame`` says;
    the same with a block the fast path has cached (it must leave such a frame to h2)."""
    pair = Pair()
    client = Client()
    pair.receive(PREFACE + settings_frame(False, {}) + settings_frame(True, {}))
    pair.receive(client.request(18, not reset, "next", 0))
    if reset:
        server_act(pair, client, ("reset", -1, ERROR_CODES[8]))
    else:
        server_act(pair, client, ("serve", -1, 0, 5, False))
    for _ in range(2):  # opening stream 3 prunes closed stream 1; stream 5's block is the cached one
        repeated = client.request(18, True, "next", 0)
        pair.receive(repeated)
    block = repeated[9:] if cached else b"\x82\x86\x84"
    result = pair.receive(raw(0x1, 0x5, 1, block))
    assert (result[0] == "ok") == reset
