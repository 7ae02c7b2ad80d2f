"""Malformed and hostile request bytes: what h11 does, what Gunicorn does, what the worker does.

Three layers, one table (``VECTORS``):

* ``test_h11_baseline`` feeds each vector to a bare ``h11.Connection(h11.SERVER)``
  and pins what h11 0.16 does with it (accepts the whole request, wants more
  data, or rejects it with which status hint, in the head or in the body);
* ``test_gunicorn_baseline`` sends it to Gunicorn's own sync worker serving a
  WSGI app that reads the whole body, and pins Gunicorn's answer;
* ``test_bad_request`` sends it (followed by a pipelined ``GET /canary``) to the
  pounce worker in both forced modes and checks the behaviour we want: the
  right status, the connection closed (so the canary is never answered: no
  smuggling), exactly one ``Invalid request from ip=...`` WARNING and no
  traceback in the error log, and the worker still serving afterwards.

Where h11 is laxer than Gunicorn the worker adds a check of its own
(pounce_worker/validate.py for the head, pounce_worker/chunked.py for a chunked
body); a vector it does not handle yet is marked ``xfail(strict=True)`` with the
diagnosis (none is, at present). Where both reject with different but legitimate codes (501 vs 400
for a transfer coding, 505 vs 400 for HTTP/2.0) either is accepted.

``test_fuzz_*`` throws random and mutated requests at one live worker per mode
(hypothesis, bounded) and checks that it never logs a traceback, never answers
with anything but a well-formed response, never leaves a request unanswered and
its connection open (a hang fails it: ``_fuzz_one``), and keeps serving.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import h11
import pytest

from tests.conftest import MODES
from tests.harness import HOST, Gunicorn, read_until_close, response_statuses
from tests.hypothesis_compat import HealthCheck, example, given, settings, st

APP = "tests.apps:hostile"
H = b"Host: x\r\n"
TE = b"Transfer-Encoding: chunked\r\n"
CANARY = b"GET /canary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
INVALID_LINE = "Invalid request from ip=127.0.0.1"


def _client_hello() -> bytes:
    """The first flight of a real TLS client, as a browser would send it to an https:// URL."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="example.com")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


@dataclass(frozen=True)
class Vector:
    id: str
    data: bytes
    #: What h11 0.16 does with ``data`` alone: "accept", "accept+N left", "need-data(head|body)",
    #: or the status hint of its RemoteProtocolError and where it raised, e.g. "400(body)".
    h11: str
    #: Gunicorn 27's sync worker: the status it answers, or None when it waits for more bytes.
    gunicorn: int | None
    #: The statuses the pounce worker may answer with; 200 means "serve it" (and the canary).
    expect: frozenset[int]
    #: Set while the worker gets it wrong: the xfail reason (strict).
    bug: str | None = None


def V(id: str, data: bytes, h11: str, gunicorn: int | None, *expect: int, bug: str | None = None) -> Vector:
    return Vector(id, data, h11, gunicorn, frozenset(expect), bug)


def post(headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /a " + version + b"\r\n" + H + headers + b"\r\n" + body


def get(headers: bytes = b"", line: bytes = b"GET /a HTTP/1.1") -> bytes:
    return line + b"\r\n" + H + headers + b"\r\n"


CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"

VECTORS: list[Vector] = [
    # -- request smuggling: framing headers ---------------------------------------------------
    V("cl_te", post(b"Content-Length: 5\r\n" + TE, b"0\r\n\r\n"), "accept", 400, 400),
    V("te_cl", post(TE + b"Content-Length: 5\r\n", b"0\r\n\r\n"), "accept", 400, 400),
    V("cl_dup_same", post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), "accept", 400, 400),
    V("cl_dup_diff", post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"), "400(head)", 400, 400),
    V("cl_list_same", post(b"Content-Length: 3, 3\r\n", b"abc"), "accept", 400, 400),
    V("cl_plus", post(b"Content-Length: +3\r\n", b"abc"), "400(head)", 400, 400),
    V("cl_minus", post(b"Content-Length: -3\r\n", b"abc"), "400(head)", 400, 400),
    V("cl_hex", post(b"Content-Length: 0x3\r\n", b"abc"), "400(head)", 400, 400),
    V("cl_alpha", post(b"Content-Length: 3a\r\n", b"abc"), "400(head)", 400, 400),
    V("cl_empty", post(b"Content-Length: \r\n", b"abc"), "400(head)", 400, 400),
    V("cl_unicode_digit", post("Content-Length: \u0663\r\n".encode(), b"abc"), "400(head)", 400, 400),
    V("cl_huge", post(b"Content-Length: " + b"9" * 26 + b"\r\n", b"abc"), "400(head)", None, 400),
    V("te_chunked_identity", post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
      "501(head)", 400, 400, 501),
    V("te_identity_chunked", post(b"Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n"),
      "501(head)", 200, 400, 501),
    V("te_space_before_colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), "400(head)", 400, 400),
    V("te_leading_space_value", post(b"Transfer-Encoding:  chunked\r\n", b"0\r\n\r\n"), "accept", 200, 200),
    V("te_tab_value", post(b"Transfer-Encoding:\tchunked\r\n", b"0\r\n\r\n"), "accept", 200, 200),
    V("te_xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), "501(head)", 501, 501),
    V("te_chunked_suffix", post(b"Transfer-Encoding: chunked-false\r\n", b"0\r\n\r\n"), "501(head)", 501, 501),
    V("te_dup", post(TE + TE, b"0\r\n\r\n"), "501(head)", 400, 400, 501),
    V("te_obs_folded", post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), "accept", 400, 400),
    V("te_http10", post(TE, b"0\r\n\r\n", b"HTTP/1.0"), "accept", 400, 400),
    V("te_gzip", post(b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n"), "501(head)", 400, 400, 501),
    V("te_uppercase", post(b"Transfer-Encoding: CHUNKED\r\n", b"0\r\n\r\n"), "accept", 200, 200),
    # -- line endings and folding ----------------------------------------------------------------
    V("bare_lf_all", b"GET /a HTTP/1.1\nHost: x\n\n", "accept", 400, 400),
    V("bare_lf_header", get(b"X-A: b\nX-B: c\r\n"), "accept", 400, 400),
    V("bare_lf_end", b"GET /a HTTP/1.1\r\nHost: x\r\n\n", "accept", 400, 400),
    V("bare_cr_header", get(b"X-A: b\rX-B: c\r\n"), "400(head)", 400, 400),
    V("obs_fold", get(b"X-A: b\r\n c\r\n"), "accept", 400, 400),
    V("obs_fold_first", b"GET /a HTTP/1.1\r\n Host: x\r\n\r\n", "400(head)", 400, 400),
    # -- chunked bodies ------------------------------------------------------------------------
    V("chunk_size_overflow", post(TE, b"f" * 40 + b"\r\nabc\r\n0\r\n\r\n"), "400(body)", None, 400),
    V("chunk_size_negative", post(TE, b"-3\r\nabc\r\n0\r\n\r\n"), "400(body)", 400, 400),
    V("chunk_size_0x", post(TE, b"0x3\r\nabc\r\n0\r\n\r\n"), "400(body)", 400, 400),
    V("chunk_size_leading_space", post(TE, b" 3\r\nabc\r\n0\r\n\r\n"), "400(body)", 400, 400),
    V("chunk_size_trailing_space", post(TE, b"3 \r\nabc\r\n0\r\n\r\n"), "accept", 400, 400),
    V("chunk_ext_bare_cr", post(TE, b"3;a\rb\r\nabc\r\n0\r\n\r\n"), "accept", 400, 400),
    V("chunk_ext_invalid", post(TE, b"3;a b c\r\nabc\r\n0\r\n\r\n"), "accept", 400, 400),
    V("chunk_ext_valid", post(TE, b"3;a=b;c=\"d e\"\r\nabc\r\n0\r\n\r\n"), "accept", 200, 200),
    V("chunk_missing_crlf", post(TE, b"3\r\nabcXX0\r\n\r\n"), "400(body)", 400, 400),
    V("chunk_bare_lf_size", post(TE, b"3\nabc\r\n0\r\n\r\n"), "400(body)", 400, 400),
    V("chunk_last_bare_lf", post(TE, b"3\r\nabc\r\n0\r\n\n"), "accept", 400, 400),
    V("trailer_bare_lf", post(TE, b"3\r\nabc\r\n0\r\nX: y\n\n"), "accept", 400, 400),
    V("trailer_obs_fold", post(TE, b"3\r\nabc\r\n0\r\nX: y\r\n z\r\n\r\n"), "accept", 400, 400),
    V("trailer_content_length", post(TE, b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n"), "accept", 400, 400),
    # -- Host ------------------------------------------------------------------------------------
    V("host_list", b"GET /a HTTP/1.1\r\nHost: a, b\r\n\r\n", "accept", 200, 400),
    V("host_dup", b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400(head)", 400, 400),
    V("host_missing", b"GET /a HTTP/1.1\r\n\r\n", "400(head)", 200, 400),
    V("host_invalid_chars", b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", "accept", 200, 400),
    # -- request line: method, target, version ------------------------------------------------------
    V("method_lowercase", b"get /a HTTP/1.1\r\n" + H + b"\r\n", "accept", 400, 400),
    V("method_bad_char", b"G@T /a HTTP/1.1\r\n" + H + b"\r\n", "400(head)", 400, 400),
    V("method_hash", b"ME#TH /a HTTP/1.1\r\n" + H + b"\r\n", "accept", 400, 400),  # Gunicorn's [a-z#]
    V("method_too_long", b"A" * 30 + b" /a HTTP/1.1\r\n" + H + b"\r\n", "accept", 400, 400),
    V("method_empty", b" /a HTTP/1.1\r\n" + H + b"\r\n", "400(head)", 400, 400),
    V("target_no_slash", get(line=b"GET a HTTP/1.1"), "accept", 400, 400),
    V("target_asterisk_get", get(line=b"GET * HTTP/1.1"), "accept", 400, 400),
    V("target_nonascii", get(line=b"GET /\xff HTTP/1.1"), "400(head)", 400, 400),
    V("target_nul", get(line=b"GET /\x00 HTTP/1.1"), "400(head)", 400, 400),
    V("target_del", get(line=b"GET /\x7f HTTP/1.1"), "400(head)", 400, 400),
    V("request_line_double_space", get(line=b"GET  /a HTTP/1.1"), "400(head)", 400, 400),
    V("request_line_tabs", get(line=b"GET\t/a\tHTTP/1.1"), "400(head)", 400, 400),
    V("version_2_0", get(line=b"GET /a HTTP/2.0"), "accept", 400, 400, 505),
    V("version_1_2", get(line=b"GET /a HTTP/1.2"), "accept", 200, 200),
    V("version_0_9", get(line=b"GET /a HTTP/0.9"), "accept", 400, 400, 505),
    V("version_1_10", get(line=b"GET /a HTTP/1.10"), "400(head)", 400, 400),
    V("version_lowercase", get(line=b"GET /a http/1.1"), "400(head)", 400, 400),
    V("version_missing", get(line=b"GET /a"), "400(head)", 400, 400),
    V("h2_prior_knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "accept+6 left", 400, 400, 505),
    # -- header fields -------------------------------------------------------------------------
    V("value_nul", get(b"X-A: a\x00b\r\n"), "400(head)", 400, 400),
    V("value_ctl", get(b"X-A: a\x01b\r\n"), "accept", 400, 400),
    V("value_del", get(b"X-A: a\x7fb\r\n"), "accept", 400, 400),
    V("value_obs_text", get(b"X-A: a\xe9b\r\n"), "accept", 200, 200),
    V("name_nul", get(b"X-\x00A: b\r\n"), "400(head)", 400, 400),
    V("name_space", get(b"X A: b\r\n"), "400(head)", 400, 400),
    V("name_underscore", get(b"X_A: b\r\n"), "accept", 200, 200),
    V("name_empty", get(b": b\r\n"), "400(head)", 400, 400),
    V("no_colon", get(b"X-A b\r\n"), "400(head)", 400, 400),
    V("name_nonascii", get(b"X-\xe9: b\r\n"), "400(head)", 400, 400),
    V("expect_unknown", get(b"Expect: 200-ok\r\n"), "accept", 417, 417),
    V("content_type_dup", get(b"Content-Type: a/b\r\nContent-Type: c/d\r\n"), "accept", 400, 400),
    # -- before the request line -------------------------------------------------------------------
    V("leading_crlf", b"\r\n" + get(), "400(head)", 200, 200),
    V("leading_two_crlf", b"\r\n\r\n" + get(), "400(head)", 400, 400),
    V("binary_garbage", bytes(range(256)) * 4, "400(head)", 400, 400),
    V("tls_client_hello", _client_hello(), "400(head)", 400, 400),
    # -- limits (Gunicorn's defaults: line 4094, 100 fields, 8190 bytes per field) ---------------------
    V("request_line_too_long", get(line=b"GET /" + b"a" * 5000 + b" HTTP/1.1"), "accept", 414, 414),
    V("too_many_headers", get(b"".join(b"X-%d: y\r\n" % i for i in range(150))), "accept", 431, 431),
    V("header_too_large", get(b"X-Big: " + b"y" * 9000 + b"\r\n"), "accept", 431, 431),
]

IDS = [v.id for v in VECTORS]
assert len(set(IDS)) == len(IDS)


def with_bug(vectors: list[Vector]) -> list[object]:
    return [
        pytest.param(v, id=v.id, marks=[pytest.mark.xfail(strict=True, reason=v.bug)] if v.bug else [])
        for v in vectors
    ]


# -- layer 1: h11 alone -----------------------------------------------------------------------------


def h11_verdict(data: bytes) -> str:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    stage = "head"
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return f"need-data({stage})"
            if isinstance(event, h11.Request):
                stage = "body"
            elif isinstance(event, h11.EndOfMessage):
                left = len(conn.trailing_data[0])
                return f"accept+{left} left" if left else "accept"
    except h11.RemoteProtocolError as exc:
        return f"{exc.error_status_hint}({stage})"


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_h11_baseline(vector: Vector) -> None:
    """Pins what h11 itself does; when h11 changes, the table (and the hardening) needs a look."""
    assert h11_verdict(vector.data) == vector.h11


# -- layer 2: Gunicorn's own parser (sync worker) ------------------------------------------------------


@pytest.fixture(scope="module")
def gunicorn_sync() -> Iterator[Gunicorn]:
    server = Gunicorn("tests.apps:wsgi_echo", worker_class="sync", mode=None, threads=1, loops_expected=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def first_status(data: bytes) -> int | None:
    match = re.match(rb"HTTP/\d\.\d (\d{3}) ", data)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_gunicorn_baseline(gunicorn_sync: Gunicorn, vector: Vector) -> None:
    """Pins Gunicorn's answer (sync worker, WSGI app that reads the body) to the vector alone."""
    with socket.create_connection((HOST, gunicorn_sync.port), timeout=5) as sock:
        sock.sendall(vector.data)
        data, _how = read_until_close(sock, 1.0 if vector.gunicorn is None else 5.0)
    assert first_status(data) == vector.gunicorn, data[:200]


# -- layer 3: the pounce worker -------------------------------------------------------------------------


#: Both forced modes with the default loop (uvloop when installed on a GIL build), and thread
#: mode on plain asyncio, which is what a free-threaded build runs.
SERVERS = [(mode, "auto") for mode in MODES] + [("threads", "asyncio")]


@pytest.fixture(scope="module", params=SERVERS, ids=[m if loop == "auto" else f"{m}-{loop}" for m, loop in SERVERS])
def pounce(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """One worker per mode for the whole module: every test checks it is still the same process."""
    mode, loop = request.param
    server = Gunicorn(APP, "--asgi-loop", loop, mode=mode, env={"POUNCE_HEADER_TIMEOUT": "5"})
    server.start()
    server.initial_pids = server.worker_pids()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0, half_close: bool = False) -> tuple[bytes, str]:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all
        return read_until_close(sock, timeout)


def assert_healthy(server: Gunicorn, log_before: int) -> str:
    """The worker still serves, was not replaced, and logged no traceback or error since ``log_before``."""
    data, how = exchange(server.port, HEALTH)
    assert response_statuses(data) == [200], (data[:300], how)
    assert server.worker_pids() == server.initial_pids, "the worker process was replaced"  # type: ignore[attr-defined]
    new_log = server.log()[log_before:]
    assert "Traceback" not in new_log, new_log
    assert "[ERROR]" not in new_log and "[CRITICAL]" not in new_log, new_log
    return new_log


@pytest.mark.parametrize("vector", with_bug(VECTORS))
def test_bad_request(pounce: Gunicorn, vector: Vector) -> None:
    before = len(pounce.log())
    data, how = exchange(pounce.port, vector.data + CANARY)
    statuses = response_statuses(data)
    new_log = assert_healthy(pounce, before)
    invalid = [line for line in new_log.splitlines() if "Invalid request from" in line]
    if vector.expect == frozenset({200}):
        # Served, and so is the pipelined canary after it: the framing was understood.
        assert statuses == [200, 200], (data[:400], how)
        assert invalid == [], invalid
    else:
        # Refused with one response, then closed: the canary must never be answered.
        assert len(statuses) == 1 and statuses[0] in vector.expect, (statuses, data[:400], how)
        assert how == "eof", how
        assert b"/canary" not in data
        assert len(invalid) == 1, invalid
        assert INVALID_LINE in invalid[0] and "[WARNING]" in invalid[0], invalid


BY_ID = {v.id: v for v in VECTORS}
PIPELINED_BAD = ["cl_te", "cl_dup_same", "bare_lf_all", "obs_fold", "value_ctl", "chunk_size_overflow",
                 "method_lowercase", "binary_garbage", "too_many_headers"]


@pytest.mark.parametrize("bad", PIPELINED_BAD)
def test_bad_request_pipelined_after_a_good_one(pounce: Gunicorn, bad: str) -> None:
    """The checks apply to every request of a connection, not only the first."""
    vector = BY_ID[bad]
    assert vector.bug is None and 200 not in vector.expect
    before = len(pounce.log())
    first = b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
    data, how = exchange(pounce.port, first + vector.data + CANARY)
    statuses = response_statuses(data)
    new_log = assert_healthy(pounce, before)
    assert len(statuses) == 2 and statuses[0] == 200 and statuses[1] in vector.expect, (statuses, data[:400])
    assert b'"/first"' in data and b"/canary" not in data
    assert how == "eof", how
    assert len([line for line in new_log.splitlines() if "Invalid request from" in line]) == 1


#: Chunked bodies whose pieces arrive in separate reads, after the app has started: the
#: scanner (pounce_worker/chunked.py) sees them as they come, before h11 parses them.
TRICKLED_CHUNKED = {
    "valid_split_everywhere": ([b"5;a=b\r\nhel", b"lo\r\n0\r", b"\nX-T: v\r\n", b"\r\n"], 200),
    "bad_size_in_second_chunk": ([b"5\r\nhello\r\n", b"3 \r\nabc\r\n0\r\n\r\n"], 400),
    "bad_extension_split": ([b"5\r\nhello\r\n3;a", b" b\r\nabc\r\n0\r\n\r\n"], 400),
    "host_in_trailers": ([b"5\r\nhello\r\n0\r\n", b"Host: evil\r\n\r\n"], 400),
    "bare_lf_ends_trailers": ([b"5\r\nhello\r\n0\r\n", b"\n"], 400),
}


@pytest.mark.parametrize("name", TRICKLED_CHUNKED)
def test_chunked_body_checked_as_it_arrives(pounce: Gunicorn, name: str) -> None:
    pieces, status = TRICKLED_CHUNKED[name]
    before = len(pounce.log())
    with socket.create_connection((HOST, pounce.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(post(TE))
        try:
            for piece in pieces:
                time.sleep(0.05)  # separate reads: the app is already waiting for the body
                sock.sendall(piece)
            sock.sendall(CANARY)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before the rest went out
        data, how = read_until_close(sock, 5.0)
    statuses = response_statuses(data)
    new_log = assert_healthy(pounce, before)
    invalid = [line for line in new_log.splitlines() if "Invalid request from" in line]
    if status == 200:
        assert statuses == [200, 200], (data[:400], how)
        assert b'"body_len": 5' in data
        assert invalid == []
    else:
        assert statuses == [status] and how == "eof", (statuses, data[:400], how)
        assert b"/canary" not in data
        assert len(invalid) == 1, invalid


# -- targets: what the app sees ---------------------------------------------------------------------


def served_json(port: int, line: bytes) -> dict[str, object] | int:
    import json

    data, _how = exchange(port, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    statuses = response_statuses(data)
    if statuses != [200]:
        return statuses[0] if statuses else 0
    return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))


def test_absolute_form_target_path(pounce: Gunicorn) -> None:
    got = served_json(pounce.port, b"GET http://example.com/a/b?q=1 HTTP/1.1")
    assert isinstance(got, dict), got
    assert (got["path"], got["raw_path"]) == ("/a/b", "/a/b")


@pytest.mark.parametrize(("target", "query"), [(b"/a#frag", ""), (b"/a?x=1#frag", "x=1"), (b"/a#f?x=1", "")])
def test_fragment_not_in_path_or_query(pounce: Gunicorn, target: bytes, query: str) -> None:
    """A '#fragment' is in no request-target form: dropped, as Gunicorn does, not handed to the app."""
    got = served_json(pounce.port, b"GET " + target + b" HTTP/1.1")
    assert isinstance(got, dict), got
    assert (got["path"], got["raw_path"], got.get("query_string", "")) == ("/a", "/a", query), got


# -- limits at their boundaries, against Gunicorn with the same settings ---------------------------------

LIMITS = ("--limit-request-line", "60", "--limit-request-fields", "5", "--limit-request-field_size", "100")


@pytest.fixture(scope="module")
def limited_pair() -> Iterator[tuple[Gunicorn, Gunicorn]]:
    ours = Gunicorn(APP, *LIMITS, mode="processes")
    theirs = Gunicorn("tests.apps:wsgi_echo", *LIMITS, worker_class="sync", mode=None, threads=1, loops_expected=False)
    ours.start(wait=False)
    theirs.start(wait=False)
    try:
        ours.wait_ready()
        theirs.wait_ready()
        yield ours, theirs
    finally:
        ours.stop()
        theirs.stop()


def _status(port: int, data: bytes) -> int:
    reply, _how = exchange(port, data)
    return first_status(reply) or 0


@pytest.mark.parametrize(("line_length", "status"), [
    (97, 200), (98, 200), (99, 431), (100, 431), (101, 431), (120, 431),
])
def test_limit_request_field_size_boundary(
    limited_pair: tuple[Gunicorn, Gunicorn], line_length: int, status: int
) -> None:
    """limit_request_field_size=100: a field line (CRLF included) of up to 100 bytes passes."""
    ours, theirs = limited_pair
    line = b"X-Pad: " + b"v" * (line_length - 7)
    data = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + line + b"\r\n\r\n"
    assert _status(theirs.port, data) == status
    assert _status(ours.port, data) == status


@pytest.mark.parametrize(("line_length", "status"), [(59, 200), (60, 200), (61, 414), (200, 414)])
def test_limit_request_line_boundary(limited_pair: tuple[Gunicorn, Gunicorn], line_length: int, status: int) -> None:
    ours, theirs = limited_pair
    target = b"/" + b"a" * (line_length - len(b"GET  HTTP/1.1") - 1)
    data = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _status(theirs.port, data) == status
    assert _status(ours.port, data) == status


@pytest.mark.parametrize(("fields", "status"), [(4, 200), (5, 200), (6, 431), (50, 431)])
def test_limit_request_fields_boundary(limited_pair: tuple[Gunicorn, Gunicorn], fields: int, status: int) -> None:
    ours, theirs = limited_pair
    extra = b"".join(b"X-%d: y\r\n" % i for i in range(fields - 2))
    data = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"
    assert _status(theirs.port, data) == status
    assert _status(ours.port, data) == status


@pytest.mark.parametrize("fields", [1, 4, 5, 6, 7, 50])
def test_limit_request_fields_applies_to_trailers(limited_pair: tuple[Gunicorn, Gunicorn], fields: int) -> None:
    """Gunicorn counts a chunked body's trailer fields against limit_request_fields too."""
    ours, theirs = limited_pair
    trailers = b"".join(b"X-T%d: y\r\n" % i for i in range(fields))
    data = (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n")
    expected = _status(theirs.port, data)
    assert expected in (200, 431)
    assert _status(ours.port, data) == expected, f"Gunicorn's sync worker answers {expected}"


@pytest.mark.parametrize("data", [
    pytest.param(b"GET /" + b"a" * 300, id="endless_request_line"),
    pytest.param(b"GET /a HTTP/1.1\r\nX: " + b"a" * 3000, id="endless_header"),
])
@pytest.mark.serial  # answer within 2 s
def test_limits_apply_before_the_head_ends(limited_pair: tuple[Gunicorn, Gunicorn], data: bytes) -> None:
    """A head that never ends is refused as soon as it is over the limits, not at the header timeout."""
    ours, _theirs = limited_pair
    start = time.monotonic()
    reply, how = exchange(ours.port, data, timeout=5.0)
    assert first_status(reply) in (414, 431), reply[:200]
    assert how == "eof"
    assert time.monotonic() - start < 2.0


# -- fuzzing ------------------------------------------------------------------------------------------

TEMPLATES = [
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
]
NASTY = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b"\x00", b":", b",", b";", b"\xff", b"0", b"-1",
    b"Transfer-Encoding: chunked\r\n", b"Content-Length: 0\r\n", b"Content-Length: 10\r\n",
    b"Host: y\r\n", b"Expect: 100-continue\r\n", b"Connection: close\r\n", b"ffffffffffffffffffff\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1", b"HTTP/2.0", b" chunked", b"\x16\x03\x01",
]


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(min_size=1, max_size=512))
    data = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(data)))
        if kind == 0:
            data[pos:pos] = draw(st.sampled_from(NASTY))
        elif kind == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == 2 and data:
            end = draw(st.integers(pos, min(len(data), pos + 16)))
            del data[pos:end]
        elif kind == 3 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == 4:
            ending = draw(st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\r\n "]))
            data = bytearray(bytes(data).replace(b"\r\n", ending, 1))
        else:
            data = data[: pos]
    return bytes(data)


#: Seconds a fuzzed request has to get its responses or its close: below the fixture's
#: POUNCE_HEADER_TIMEOUT (5), so a head the worker waits on wrongly cannot pass as a 408.
FUZZ_BOUND = 3.0


def h11_outlook(data: bytes) -> tuple[int, bool]:
    """What a server owes a client that sent ``data`` and nothing more, by h11's reading of it.

    ``(complete requests, must close)``: the server must answer the complete
    requests, then close if h11 refuses what follows (the worker refuses all h11
    refuses) or a request ends the connection (``Connection: close``, HTTP/1.0);
    otherwise it may wait for more bytes. One empty line before a request is
    skipped first, as the worker does (h11 alone refuses it).
    """
    requests = 0
    while True:
        if data[:2] == b"\r\n" and data[2:4] != b"\r\n":
            data = data[2:]
        if not data:
            return requests, False  # (h11 takes empty data for the client's close)
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        try:
            event = conn.next_event()
            while not isinstance(event, h11.EndOfMessage):
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return requests, False
                if isinstance(event, h11.ConnectionClosed):
                    return requests, True
                event = conn.next_event()
        except h11.RemoteProtocolError:
            return requests, True
        requests += 1  # its body too is in: the app (which reads it all) has answered
        if conn.their_state is h11.MUST_CLOSE:
            return requests, True
        data = conn.trailing_data[0]


def finished_responses(data: bytes) -> int:
    """Complete final responses at the start of ``data`` (1xx skipped), framed by Content-Length."""
    count = 0
    while data.startswith(b"HTTP/1."):
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = data[:end].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if status >= 200:
            if len(data) < end + 4 + length:
                break
            count += 1
        data = data[end + 4 + (length if status >= 200 else 0):]
    return count


def read_responses(sock: socket.socket, wanted: int, timeout: float) -> tuple[bytes, str]:
    """Read until ``wanted`` complete responses are in (``done``), or the peer closes, or ``timeout``."""
    return read_until_close(sock, timeout, until=lambda out: finished_responses(out) >= wanted)


def _fuzz_one(server: Gunicorn, data: bytes, half_close: bool) -> None:
    """Every request gets its response or the connection its close within FUZZ_BOUND: never a hang.

    With a half-close the worker must close. Without one, it must answer what h11
    finds complete (``h11_outlook``) and close where the bytes end the connection
    or are refused; where it may wait for more, the client then leaves (FIN) and
    the worker must close. No outcome is a timeout, and no wait is a keep-alive wait.
    """
    requests, must_close = h11_outlook(data)
    with socket.create_connection((HOST, server.port), timeout=FUZZ_BOUND) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all
        if half_close or must_close:
            reply, how = read_until_close(sock, FUZZ_BOUND)
        else:
            reply, how = read_responses(sock, requests, FUZZ_BOUND)
            if how == "done":
                sock.shutdown(socket.SHUT_WR)
                rest, how = read_until_close(sock, FUZZ_BOUND)
                reply += rest
        assert how in ("eof", "reset"), (
            f"no close within {FUZZ_BOUND}s ({requests} complete request(s) by h11, must close: {must_close}): "
            f"{data!r} -> {reply[:300]!r}"
        )
    if reply:
        assert reply.startswith(b"HTTP/1.1 "), reply[:200]
        statuses = response_statuses(reply)
        assert statuses, reply[:200]
        assert all(s < 500 or s in (501, 505) for s in statuses), (data, reply[:300])


@pytest.mark.timeout(300)
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=request_bytes(), half_close=st.sampled_from([True, True, True, False]))
# A head h11 ends at "\n\r\n" (a bare LF): the fast path used to wait for CRLFCRLF until the header timeout.
@example(data=b"GET /a HTTP/1.1\r\nHost: x\n\r\n", half_close=False)
def test_fuzz_mutated_requests(pounce: Gunicorn, data: bytes, half_close: bool) -> None:
    before = len(pounce.log())
    _fuzz_one(pounce, data, half_close)
    assert_healthy(pounce, before)
