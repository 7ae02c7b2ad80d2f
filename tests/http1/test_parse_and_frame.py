"""The fast path is h11, only faster: differential tests against h11 itself.

Requests: for generated heads (valid, odd and invalid), whenever
``parse_head`` accepts a head, h11 must accept it too and produce the same
method, target, version, headers, body framing and keep-alive decision.
(``parse_head`` returning None hands the head to h11, so it is always allowed.)

Responses: for generated statuses, methods, header sets and body chunks,
``FastResponse`` must produce the very bytes h11 produces, and fail (with
h11.LocalProtocolError) exactly where h11 fails.

End to end: the same corpus of raw requests, sent to a worker with the fast
path on and one with it off, gets byte-identical responses (Date aside).
"""

from __future__ import annotations

import concurrent.futures
import re

import h11
import httpx
import pytest

from pounce_worker.asgi import STATUS_PHRASES
from pounce_worker.http1.frame import (
    HEADER_BLOCK_ENTRIES,
    HEADER_BLOCK_SIZE,
    FastResponse,
    ResponseHeaderCache,
    primed_h11,
    render,
)
from pounce_worker.http1.parse import (
    FIELD_BLOCK_ENTRIES,
    FIELD_BLOCK_SIZE,
    FIELD_CACHE_ENTRIES,
    FIELD_CACHE_LINE,
    FieldCache,
    parse_head,
)
from tests.harness import Gunicorn, raw_request, running
from tests.hypothesis_compat import HealthCheck, example, given, settings, st

# -- generators -------------------------------------------------------------------------

METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"CONNECT", b"get", b"X-CUSTOM", b"G T", b""])
TARGETS = st.one_of(
    st.sampled_from([b"/", b"/a?b=c", b"*", b"http://x/y", b"/%20", b"/a b", b"", b"/\x7f", b"/caf\xc3\xa9"]),
    st.binary(min_size=1, max_size=12),
)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11"])
HEADER_NAMES = st.sampled_from([
    b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection",
    b"Expect", b"Upgrade", b"X-Thing", b"Accept", b"Bad Name", b"Bad:Name", b"", b"X_Under", b"\xff",
])
HEADER_VALUES = st.one_of(
    st.sampled_from([
        b"", b"x", b"5", b"0", b"05", b"+5", b"5, 5", b"5,6", b" 5 ", b"chunked", b"close", b"keep-alive",
        b"Keep-Alive, close", b"upgrade", b"100-continue", b"a\tb", b" lead", b"trail ", b"a\x00b", b"a\x01b",
        b"\xe9t\xe9", b"99999999999999999999999",
    ]),
    st.binary(max_size=10),
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6)


def build_head(method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [method + b" " + target + b" " + version]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def h11_parse(head: bytes) -> tuple[h11.Connection, h11.Request] | None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    return conn, event


def h11_body_length(conn: h11.Connection, limit: int = 64) -> int | None:
    """How many body bytes h11 expects, probed by feeding bytes one at a time (None: not a plain length)."""
    if isinstance(conn.next_event(), h11.EndOfMessage):
        return 0
    for n in range(1, limit + 1):
        conn.receive_data(b"x")
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.EndOfMessage):
                return n
    return None


# -- requests ----------------------------------------------------------------------------

#: Parsed fields shared by every example (parse_head's per-loop cache).
WARM_FIELDS = FieldCache()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(METHODS, TARGETS, VERSIONS, HEADERS, st.booleans())
@example(b"GET", b"/", b"HTTP/1.1", [(b"Host", b"a"), (b"Content-Length", b"5, 5")], False)
@example(b"GET", b"/", b"HTTP/1.1", [(b"Host", b"a"), (b"Host", b"a")], False)
@example(b"POST", b"/", b"HTTP/1.1", [(b"Host", b"a"), (b"Content-Length", b"3")], True)
@example(b"GET", b"/", b"HTTP/1.1", [(b"Host", b"a"), (b"Connection", b"Keep-Alive, close")], True)
def test_fast_request_parse_equals_h11(method, target, version, headers, add_host):
    if add_host:
        headers = [(b"Host", b"example"), *headers]
    head = build_head(method, target, version, headers)
    fast = parse_head(head)
    # The same head through the field cache every example shares, as a loop's is: its
    # lines may be cached already, then the whole block is (a second parse hits it).
    assert parse_head(head, WARM_FIELDS) == fast
    assert parse_head(head, WARM_FIELDS) == fast
    if fast is None:
        return  # h11 decides: nothing to compare
    parsed = h11_parse(head)
    assert parsed is not None, f"fast path accepted what h11 rejects: {head!r}"
    conn, request = parsed
    assert (fast.method, fast.target, b"1.1") == (request.method, request.target, request.http_version)
    assert fast.headers == list(request.headers)  # lower-cased names, as h11 gives them
    assert fast.close == (not conn._cstate.keep_alive)
    assert h11_body_length(conn, limit=max(fast.content_length, 1)) == fast.content_length


def test_fast_request_parse_takes_the_common_request():
    head = b"GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nContent-Length: 3\r\n\r\n"
    parsed = parse_head(head)
    assert parsed is not None
    assert parsed.method == b"GET" and parsed.target == b"/a?b" and parsed.content_length == 3
    for slow in (b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Upgrade: websocket"):
        assert parse_head(b"POST / HTTP/1.1\r\nHost: x\r\n" + slow + b"\r\n\r\n") is None
    assert parse_head(b"GET / HTTP/1.0\r\n\r\n") is None


def test_field_cache_is_bounded_and_only_holds_valid_lines():
    cache = FieldCache()
    fields = cache.lines
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nX-A:  v \r\n\r\n", cache) is not None
    assert fields == {b"Host: x": (b"host", b"x"), b"X-A:  v ": (b"x-a", b"v")}
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nX-B: \x01\r\n\r\n", cache) is None
    assert b"X-B: \x01" not in fields
    long_line = b"X-Long: " + b"v" * FIELD_CACHE_LINE
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n" + long_line + b"\r\n\r\n", cache) is not None
    assert long_line not in fields
    for i in range(FIELD_CACHE_ENTRIES + 10):
        parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nX-Id: %d\r\n\r\n" % i, cache)
        assert len(fields) <= FIELD_CACHE_ENTRIES
        assert len(cache.blocks) <= FIELD_BLOCK_ENTRIES


def test_field_block_cache_gives_every_request_its_own_list():
    cache = FieldCache()
    head = b"GET /a HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    first = parse_head(head, cache)
    assert first is not None and list(cache.blocks) == [b"Host: x\r\nAccept: */*\r\n\r\n"]
    first.headers.append((b"x-added", b"by the app"))  # an app (or middleware) changing its scope
    second = parse_head(b"POST /b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", cache)
    assert second is not None
    assert (second.method, second.target) == (b"POST", b"/b")
    assert second.headers == [(b"host", b"x"), (b"accept", b"*/*")]
    assert second.headers is not first.headers
    # A block h11 must decide is never cached; a huge one is parsed but not kept.
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", cache) is None
    big = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: %s\r\n" % (b"p" * FIELD_BLOCK_SIZE) + b"\r\n"
    assert parse_head(big, cache) is not None
    assert len(cache.blocks) == 1


# -- responses ---------------------------------------------------------------------------

RESPONSE_NAMES = st.sampled_from([
    b"content-type", b"content-length", b"x-a", b"transfer-encoding", b"connection", b"host", b"set-cookie",
    b"bad name", b"", b"x\x00",
])
RESPONSE_VALUES = st.one_of(
    st.sampled_from(
        [b"text/plain", b"0", b"3", b"10", b"3, 3", b"x", b"chunked", b"gzip", b"close", b" sp", b"a\r\nb", b""]
    ),
    st.binary(max_size=6),
)
#: Validated names and values shared by every example, as a loop's caches are.
WARM_NAMES: set[bytes] = set()
WARM_VALUES: set[bytes] = set()
#: Rendered header blocks shared by every example, as a loop's ResponseHeaderCache is.
WARM_BLOCKS = ResponseHeaderCache()
STATUSES = st.sampled_from([200, 201, 204, 301, 304, 404, 418, 500, 299])
CHUNKS = st.lists(st.binary(max_size=8), max_size=4)


def fast_start(writer, status, default_lines, headers, method, close, names, values):
    """The fast writer's head for headers rendered now, or None when h11 must frame them."""
    block = render(headers, names, values)
    return writer.frame_head(status, default_lines, block, method, close) if block.fast else None


def run_production_body(writer_start, writer, chunks, head_only):
    """A whole response framed as http1/exchange.py frames it: ``FastResponse.body`` per
    ``http.response.body`` message, the last one ending the body (``more_body`` false),
    and a body that contradicts Content-Length written as far as it is valid, then refused."""
    out = []
    try:
        head = writer_start()
    except h11.LocalProtocolError as exc:
        return ("error", "start", str(exc))
    if head is None:
        return None
    out.append(head)
    try:
        bodies = [b"" if head_only else chunk for chunk in chunks] or [b""]
        for chunk in bodies[:-1]:
            out.append(writer.frame_body(chunk, True))
        last = bodies[-1]
        if not writer.chunked and writer.remaining != len(last):
            out.append(writer.frame_data(last))
            writer.frame_end()
        out.append(writer.frame_body(last, False))
    except h11.LocalProtocolError as exc:
        return ("error", "data" if "Too much" in str(exc) else "end", str(exc))
    return b"".join(out)


def run_response(writer_start, writer_data, writer_end, chunks, head_only):
    """Bytes of a whole response, or the LocalProtocolError message and the step it failed at."""
    out = []
    step = "start"
    try:
        head = writer_start()
        if head is None:
            return None
        out.append(head)
        step = "data"
        for chunk in chunks:
            if chunk and not head_only:
                out.append(writer_data(chunk))
        step = "end"
        out.append(writer_end())
    except h11.LocalProtocolError as exc:
        return ("error", step, str(exc))
    return b"".join(out)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STATUSES, st.sampled_from([b"GET", b"HEAD", b"POST"]), st.booleans(),
       st.lists(st.tuples(RESPONSE_NAMES, RESPONSE_VALUES), max_size=5), CHUNKS)
@example(200, b"HEAD", False, [], [b"abc"])
@example(204, b"GET", True, [(b"content-length", b"3")], [b"abc"])
@example(200, b"GET", False, [(b"content-length", b"3")], [b"ab", b"cd"])
@example(200, b"GET", False, [(b"content-length", b"3")], [b"ab"])
def test_fast_response_bytes_equal_h11(status, method, close, headers, chunks):
    defaults = [(b"server", b"pounce"), (b"date", b"Wed, 25 Nov 2026 09:00:00 GMT")]
    default_lines = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
    all_headers = defaults + headers
    reason = STATUS_PHRASES[status]
    head_only = method == b"HEAD" or status in (204, 304)
    results = []
    for names, values in ((set(), set()), (WARM_NAMES, WARM_VALUES)):
        # Cold caches, then the caches shared by every example (as a loop's are).
        writer = FastResponse()
        results.append(run_response(
            lambda w=writer, n=names, v=values: fast_start(w, status, default_lines, headers, method, close, n, v),
            writer.frame_data, writer.frame_end, chunks, head_only,
        ))
    # Through a loop's block cache, as protocol.py frames responses: the same bytes, warm or cold.
    for _attempt in range(2):
        writer = FastResponse()

        def cached_start(w=writer):
            block = WARM_BLOCKS.get(headers)
            return w.frame_head(status, default_lines, block, method, close) if block.fast else None

        results.append(run_response(cached_start, writer.frame_data, writer.frame_end, chunks, head_only))
    # The way production frames a body (http1/exchange.py): FastResponse.body, one call a message.
    writer = FastResponse()
    results.append(run_production_body(
        lambda w=writer: fast_start(w, status, default_lines, headers, method, close, WARM_NAMES, WARM_VALUES),
        writer, chunks, head_only,
    ))
    fast = results[0]
    assert results[1:] == [fast] * 4
    if fast is None:
        return  # h11 frames this response (primed connection): nothing to compare
    conn = primed_h11(method, close)
    sent = all_headers + ([(b"connection", b"close")] if close else [])

    def h11_start():
        return conn.send(h11.Response(status_code=status, headers=sent, reason=reason))

    reference = run_response(
        h11_start, lambda d: conn.send(h11.Data(data=d)), lambda: conn.send(h11.EndOfMessage()), chunks, head_only
    )
    if isinstance(fast, tuple) or isinstance(reference, tuple):
        assert isinstance(fast, tuple) and isinstance(reference, tuple), (fast, reference)
        assert fast[1] == reference[1], (fast, reference)
    else:
        assert fast == reference


def test_fast_response_defers_rewritten_headers_to_h11():
    for name in (b"transfer-encoding", b"connection", b"host"):
        assert fast_start(FastResponse(), 200, b"", [(name, b"chunked")], b"GET", False, set(), set()) is None
    assert fast_start(FastResponse(), 200, b"", [(b"content-length", b"1, 1")], b"GET", False, set(), set()) is None


def test_fast_response_caches_only_valid_names_and_values():
    names: set[bytes] = set()
    values: set[bytes] = set()
    head = fast_start(FastResponse(), 200, b"", [(b"x-a", b"ok")], b"GET", False, names, values)
    assert head == b"HTTP/1.1 200 OK\r\nx-a: ok\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert names == {b"x-a"} and values == {b"ok"}
    with pytest.raises(h11.LocalProtocolError):
        fast_start(FastResponse(), 200, b"", [(b"x-a", b"a\r\nb")], b"GET", False, names, values)
    assert values == {b"ok"}


def test_header_blocks_are_keyed_by_content():
    """An app reusing (and mutating) one header list gets the block for what the list holds now."""
    cache = ResponseHeaderCache()
    headers = [(b"Content-Type", b"text/plain"), (b"content-length", b"5")]
    first = cache.get(headers)
    assert cache.get(list(headers)) is first  # an equal list: the cached block
    assert first.headers == ((b"content-type", b"text/plain"), (b"content-length", b"5"))
    assert first.lines == b"content-type: text/plain\r\ncontent-length: 5\r\n"
    assert (first.length, first.has_defaults, first.fast) == (5, False, True)
    headers[1] = (b"content-length", b"7")
    second = cache.get(headers)
    assert second is not first and second.length == 7
    assert cache.get(((b"server", b"x"), (b"connection", b"close"))).fast is False
    assert cache.get([(b"server", b"x")]).has_defaults


def test_header_blocks_render_unhashable_pairs_every_time():
    cache = ResponseHeaderCache()
    pairs = [[b"x-a", bytearray(b"1")], [b"x-b", b"2"]]  # lists and a bytearray, as some apps send
    block = cache.get(pairs)
    assert block == render(pairs, set(), set())
    assert block.lines == b"x-a: 1\r\nx-b: 2\r\n"
    # Unhashable with a ValueError rather than a TypeError: a writable or non-byte memoryview.
    for value in (memoryview(bytearray(b"v")), memoryview(b"vv").cast("H")):
        assert cache.get([(b"x-a", value)]).lines == b"x-a: " + bytes(value) + b"\r\n"
    assert cache.blocks == {}


class Counter:
    """A header value whose bytes change while it stays equal (by identity) to itself."""

    def __init__(self) -> None:
        self.n = 0

    def __bytes__(self) -> bytes:
        self.n += 1
        return b"%d" % self.n


def test_header_blocks_keep_only_bytes_so_a_hit_is_what_rendering_gives():
    cache = ResponseHeaderCache()
    value = Counter()
    assert [cache.get([(b"x-n", value)]).lines for _ in range(3)] == [b"x-n: 1\r\n", b"x-n: 2\r\n", b"x-n: 3\r\n"]
    assert cache.blocks == {}
    cache.get([(b"x-n", b"1")])
    assert list(cache.blocks) == [((b"x-n", b"1"),)]


def test_header_blocks_bound_counts_every_header_even_after_a_slow_one():
    """A set h11 must frame stops rendering at its Connection header: the bound still counts it all."""
    cache = ResponseHeaderCache()
    for n in range(20):
        block = cache.get([(b"connection", b"keep-alive"), (b"x-big", b"%d" % n + b"b" * HEADER_BLOCK_SIZE)])
        assert not block.fast
    assert cache.blocks == {}


def test_header_blocks_are_bounded_and_never_hold_a_rejected_set():
    cache = ResponseHeaderCache()
    for n in range(HEADER_BLOCK_ENTRIES * 3):
        cache.get([(b"x-request-id", b"%d" % n)])
        assert len(cache.blocks) <= HEADER_BLOCK_ENTRIES
    with pytest.raises(h11.LocalProtocolError):
        cache.get([(b"x-a", b"a\r\nb")])
    assert all(b"\r\nb" not in block.lines for block in cache.blocks.values())
    with pytest.raises(h11.LocalProtocolError):
        cache.get([(b"x-a", b"a\r\nb")])  # still refused: never cached


# -- end to end --------------------------------------------------------------------------

CORPUS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /p?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /stream/3 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /stream/3 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /stream/2 HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    # validate.py's rules, which each path applies in its own place
    b"GET a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/b?c=d#e HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a?b#c HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: x/y\r\nContent-Type: x/y\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    # checks in front of both parsers (validate.HeadScan, start_request): refused alike
    b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    b"GET / HTTP/1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/01.01\r\nHost: a\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n",
]
_DATE = re.compile(rb"(?im)^date: [^\r\n]*\r\n")
_PORTS = re.compile(
    rb'"(client|server)": \[[^\]]*\]|"(pid|loop_id|state_loop_id)": \d+|"(thread|state_thread)": "[^"]*"'
)


def _normalise(raw: bytes) -> bytes:
    return _PORTS.sub(b"", _DATE.sub(b"", raw))


@pytest.fixture(scope="module")
def fast_and_h11():
    # Each answer is read until the server closes: a kept-alive connection closes when its
    # idle timer (--keep-alive, 1 s: the least Gunicorn takes) runs out after the last response.
    servers = [Gunicorn("tests.apps:echo", "--keep-alive", "1", mode="processes", env={"POUNCE_FAST_PATH": flag})
               for flag in ("1", "0")]
    with running(*servers):
        yield servers


@pytest.mark.parametrize("request_bytes", CORPUS, ids=range(len(CORPUS)))
def test_fast_path_and_h11_answer_byte_for_byte(fast_and_h11, request_bytes):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # both idle timers run at once
        fast, slow = pool.map(lambda server: raw_request(server.port, request_bytes, timeout=5.0), fast_and_h11)
    assert fast, "no answer from the fast-path worker"
    assert _normalise(fast) == _normalise(slow)


def test_a_reused_header_list_changed_in_place_is_sent_as_it_is_now():
    """The loop caches rendered header blocks by the app's headers: never by the list's identity."""
    with Gunicorn("tests.apps:reused_headers", mode="threads").start() as server:
        with httpx.Client(base_url=server.url) as client:  # one keep-alive connection, one loop
            for version in ("1", "2", "1", "3", "3"):
                response = client.get(f"/?{version}")
                assert response.headers["x-version"] == version
                assert response.text == version


# -- the field grammar, against the installed h11's --------------------------------------------------

#: Bytes where the grammar's edges are: separators, white space, controls, DEL, obs-text.
_EDGE_BYTES = st.sampled_from([b"a", b"Z", b"0", b"-", b"!", b"~", b":", b" ", b"\t", b"\r", b"\n",
                               b"\x00", b"\x01", b"\x0b", b"\x0c", b"\x7f", b"\x80", b"\xff", b'"', b"("])
_FIELD_BYTES = st.one_of(st.binary(max_size=12), st.lists(_EDGE_BYTES, max_size=12).map(b"".join))


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_FIELD_BYTES)
def test_field_grammar_is_h11s(data: bytes) -> None:
    """fastpath's own RFC 9110 field grammar accepts exactly what the installed h11 accepts,
    so a new h11 release that changes its (private) grammar fails here, not in production."""
    from h11._headers import _field_name_re, _field_value_re

    from pounce_worker.http1.parse import FIELD_NAME, FIELD_VALUE

    assert bool(FIELD_NAME.fullmatch(data)) == bool(_field_name_re.fullmatch(data))
    assert bool(FIELD_VALUE.fullmatch(data)) == bool(_field_value_re.fullmatch(data))
