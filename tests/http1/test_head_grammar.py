"""Request-head grammar and methods, and a few smaller defects (issue 11, items 4 and 6).

Every end-to-end test runs against real gunicorn masters: pounce_worker in both
forced modes, each with the fast path on and off (so both parsers meet every
head), and, where Gunicorn is the reference, its own sync worker serving a WSGI
app (``reference``). What h11 alone does is pinned too where a check sits in
front of it.

* A head that breaks ``limit_request_fields`` or ``limit_request_field_size``
  is refused (431) as soon as it does, however it is cut into reads; a big
  head within the limits is read to its end and served, however it arrives;
  a head trickled in is scanned once, not from its start on every read.
* A bare LF that would end a head for h11 (``\\n\\r\\n``) is refused (400).
* ``HTTP/1`` and ``HTTP/01.01`` are malformed versions: 400, as Gunicorn and h11.
* ``Upgrade`` in an HTTP/1.0 request is ignored (RFC 9110 §7.8).
* ``CONNECT`` is refused before the app: 405 with ``Allow`` and a close.
* With compression on, an app that sends ``http.response.start`` and returns
  gets its status and a close, as without compression.
* A non-ASCII ``root_path`` fails the boot, naming the setting.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace

import h11
import pytest

from pounce_worker.asgi import Rejection
from pounce_worker.http1.connection import HTTPConnection
from pounce_worker.http1.validate import HeadScan
from tests.conftest import MODES
from tests.harness import HOST, Gunicorn, read_until_close, reference, response_statuses
from tests.hypothesis_compat import HealthCheck, given, settings, st

APP = "tests.apps:hostile"
WSGI = "tests.apps:wsgi_echo"
CANARY = b"GET /canary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
INVALID = "Invalid request from ip=127.0.0.1"
SERVERS = [(mode, fast) for mode in MODES for fast in ("1", "0")]


# -- servers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=SERVERS, ids=[f"{m}-fast{f}" for m, f in SERVERS])
def pounce(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """pounce_worker with Gunicorn's default limits (100 fields, 8190 bytes a field, 4094 a request line)."""
    mode, fast = request.param
    # A header timeout far above how long any client here takes to send its head, even on a
    # loaded machine (the 790 KB head goes out in 7,900 writes): no test may race it.
    server = Gunicorn(APP, mode=mode, env={"POUNCE_HEADER_TIMEOUT": "120", "POUNCE_FAST_PATH": fast})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sync() -> Iterator[Gunicorn]:
    """Gunicorn's own sync worker, the same default limits."""
    server = reference(WSGI)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, str]:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before taking it all
        return read_until_close(sock, timeout)


def status_of(data: bytes) -> int:
    statuses = response_statuses(data)
    return statuses[0] if statuses else 0


def header(data: bytes, name: bytes) -> bytes | None:
    head = data.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def invalid_lines(server: Gunicorn, before: int) -> list[str]:
    return [line for line in server.log()[before:].splitlines() if INVALID in line]


def trickle(port: int, pieces: list[bytes], pause: float) -> tuple[bytes, str, int, float]:
    """Send ``pieces`` one per write, ``pause`` apart, until the server answers or closes.

    Returns what the server sent (read to its close), how it ended, how many
    pieces went out before the answer, and the seconds from the first write to it.
    """
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        sent = 0
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:
                break  # answered (or closed) while the head was still arriving
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(pause)
        select.select([sock], [], [], 5.0)
        answered = time.monotonic() - start
        data, how = read_until_close(sock, 5.0)
    return data, how, sent, answered


# -- item 4: field lines counted and measured while the head arrives -------------------------------------

#: 10,000 field lines, 400 KB: more than one read takes (256 KiB), and more than the 64 KiB a
#: connection used to buffer before it stopped reading.
MANY_LINES = [b"X-Forwarded-Something-%05d: value-%05d\r\n" % (i, i) for i in range(10_000)]
MANY_HEAD = b"GET /many HTTP/1.1\r\nHost: x\r\n" + b"".join(MANY_LINES) + b"\r\n"


def test_ten_thousand_field_lines_at_once_get_431_at_once(pounce: Gunicorn, sync: Gunicorn) -> None:
    before = len(pounce.log())
    data, how = exchange(pounce.port, MANY_HEAD + CANARY)
    # Refused at its first read, with the rest of the head unread: the lingering close reads
    # and drops it, so the client sees the whole 431 and a clean end, never a reset. (431,
    # not the header timeout's 408, is what shows it was refused as the lines arrived.)
    assert status_of(data) == 431 and how == "eof", (data[:300], how)
    assert b"/canary" not in data
    lines = invalid_lines(pounce, before)
    assert len(lines) == 1 and "limit_request_fields=100" in lines[0], lines
    theirs, _how = exchange(sync.port, MANY_HEAD)
    assert status_of(theirs) == 431, theirs[:300]  # Gunicorn: "limit request headers fields"


def test_ten_thousand_field_lines_trickled_get_431_while_arriving(pounce: Gunicorn) -> None:
    """Five lines a write: refused once line 101 is in, long before the head could end.

    Gunicorn's sync worker buffers such a head to its end (or to its buffer limit,
    about 800 KiB) before it counts the lines.
    """
    before = len(pounce.log())
    pieces = [b"GET /many HTTP/1.1\r\nHost: x\r\n"]
    pieces += [b"".join(MANY_LINES[i:i + 5]) for i in range(0, len(MANY_LINES), 5)] + [b"\r\n"]
    data, how, sent, _answered = trickle(pounce.port, pieces, pause=0.002)
    assert status_of(data) == 431 and how == "eof", (data[:300], how, sent)
    assert sent < 400, f"answered only after {sent} writes ({sent * 5} lines)"
    lines = invalid_lines(pounce, before)
    assert len(lines) == 1 and "limit_request_fields=100" in lines[0], lines


def test_an_endless_field_line_gets_431_before_it_ends(pounce: Gunicorn) -> None:
    """limit_request_field_size (8190): a field line growing past it is refused while it grows."""
    before = len(pounce.log())
    pieces = [b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: "] + [b"v" * 1000] * 200
    data, how, sent, answered = trickle(pounce.port, pieces, pause=0.002)
    assert status_of(data) == 431 and how == "eof", (data[:300], how, sent)
    assert sent < 40, (sent, answered)
    lines = invalid_lines(pounce, before)
    assert len(lines) == 1 and "limit_request_field_size=8190" in lines[0], lines


def test_a_field_line_of_spaces_is_measured_as_h11_reads_it(pounce: Gunicorn, sync: Gunicorn) -> None:
    """The measure is the one the complete head gets (name, value without surrounding whitespace):
    a line padded with 9000 spaces is not refused for its length, cut into reads or not.

    Gunicorn counts the raw line and answers 431; h11 and the complete-head check (this
    server's, since before this change) strip the padding. What matters here is that
    the incomplete-head check never refuses what the complete-head check accepts.
    """
    head = b"GET /pad HTTP/1.1\r\nHost: x\r\nX-Pad: " + b" " * 9000 + b"v\r\nConnection: close\r\n\r\n"
    at_once, _how = exchange(pounce.port, head)
    pieces = [head[i:i + 500] for i in range(0, len(head), 500)]
    trickled, _how, _sent, _answered = trickle(pounce.port, pieces, pause=0.002)
    assert status_of(at_once) == status_of(trickled) == 200, (at_once[:200], trickled[:200])
    assert status_of(exchange(sync.port, head)[0]) == 431


#: A head within Gunicorn's default limits but over the 64 KiB a connection buffers before it
#: stops reading pipelined requests: 95 field lines of 1,100 bytes.
BIG_HEAD = (b"GET /big-head HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 1092) for i in range(95)) + b"Connection: close\r\n\r\n")


def test_a_big_head_within_the_limits_is_served_however_it_arrives(pounce: Gunicorn) -> None:
    assert 100 * 1024 < len(BIG_HEAD) < 110 * 1024
    pieces = [BIG_HEAD[i:i + 4096] for i in range(0, len(BIG_HEAD), 4096)]
    data, how, sent, _answered = trickle(pounce.port, pieces, pause=0.005)
    assert response_statuses(data) == [200] and how == "eof", (data[:300], how, sent)
    assert b'"/big-head"' in data


def test_a_big_head_pipelined_behind_a_slow_request_is_served(pounce: Gunicorn) -> None:
    """80 KB of the next head arrive while the first response is pending, so reading pauses;
    once that response is out, reading must resume (for the rest of the head) although
    more than 64 KiB are buffered."""
    first = b"GET /hold/0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((HOST, pounce.port), timeout=8) as sock:
        sock.sendall(first + BIG_HEAD[:80_000])
        time.sleep(0.6)
        sock.sendall(BIG_HEAD[80_000:])
        data, how = read_until_close(sock, 8.0)
    assert response_statuses(data) == [200, 200] and how == "eof", (data[:300], how)
    assert b'"/big-head"' in data


def worker_cpu_seconds(server: Gunicorn) -> float:
    """User and system CPU of the server's (one) worker process so far."""
    (pid,) = server.worker_pids()
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_head_trickled_in_is_not_rescanned_on_every_read(pounce: Gunicorn) -> None:
    """A 790 KB head in 100-byte writes: each read scans what it brought, not the whole head.

    Rescanning from its start (several passes a read, and on the h11 path two copies
    of the buffer) made this quadratic: 1.2 s of worker CPU for one head here, against
    0.15 s scanning from where the last read stopped.
    """
    head = (b"GET /long HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 7990) for i in range(98)) + b"Connection: close\r\n\r\n")
    pieces = [head[i:i + 100] for i in range(0, len(head), 100)]
    cpu = worker_cpu_seconds(pounce)
    data, how, sent, _answered = trickle(pounce.port, pieces, pause=0.0001)
    spent = worker_cpu_seconds(pounce) - cpu
    assert response_statuses(data) == [200] and how == "eof", (data[:300], how, sent)
    assert spent < 0.5, f"{spent:.2f} s of worker CPU for one head of {len(head):,} bytes in {len(pieces):,} writes"


def test_a_bare_lf_ending_the_head_is_refused(pounce: Gunicorn, sync: Gunicorn) -> None:
    """``\\n\\r\\n`` ends a head for h11 (its blank line is ``\\n\\r?\\n``), with a bare LF:
    refused (400) as Gunicorn does, at once, not served (h11 path) or left to the header
    timeout (fast path, which looked for CRLFCRLF only)."""
    head = b"GET /lf HTTP/1.1\r\nHost: x\n\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    assert isinstance(conn.next_event(), h11.Request)  # h11 takes it
    assert status_of(exchange(sync.port, head)[0]) == 400
    for data in ([head], [head[:-2], head[-2:]]):  # nothing after it: no CRLFCRLF anywhere
        before = len(pounce.log())
        reply, how, _sent, answered = trickle(pounce.port, data, pause=0.05)
        assert response_statuses(reply) == [400] and how == "eof", (reply[:300], how, answered)
        lines = invalid_lines(pounce, before)
        assert len(lines) == 1 and "Bare LF" in lines[0], lines


# -- the incomplete-head check against the complete-head check, without sockets --------------------------

LIMITS = SimpleNamespace(limit_request_line=40, limit_request_fields=4, limit_request_field_size=30)


def complete_head_verdict(head: bytes) -> int:
    """What the server answers a complete head, before the app: h11's parse, then the limits."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return exc.error_status_hint
    assert isinstance(event, h11.Request)
    try:
        HTTPConnection._check_limits(SimpleNamespace(config=LIMITS),  # type: ignore[arg-type]
                                     event.method, event.target, list(event.headers), 0)
    except Rejection as exc:
        return exc.status
    return 200


def scan_in_pieces(head: bytes, cuts: list[int]) -> int:
    """Feed ``head`` to a HeadScan cut at ``cuts``, as a connection does while no CRLFCRLF is in:
    the status it refuses with, or 0."""
    scan = HeadScan()
    resume = 0
    for cut in [*sorted(set(cuts)), len(head)]:
        data = head[:cut]
        if data.find(b"\r\n\r\n", resume) >= 0:
            return 0
        try:
            scan.scan(data, LIMITS.limit_request_line, LIMITS.limit_request_fields, LIMITS.limit_request_field_size)
        except Rejection as exc:
            return exc.status
        resume = max(len(data) - 3, 0)
    return 0


FIELD_NAMES = st.sampled_from([b"Host", b"X-A", b"X-Long-Name-Of-A-Field", b"Bad Name", b""])
FIELD_VALUES = st.one_of(st.sampled_from([b"", b"v", b" v ", b"\tv", b"v" * 24, b" " * 30 + b"v", b"a\nb"]),
                         st.binary(max_size=30))
FIELD_LINES = st.lists(
    st.one_of(st.tuples(FIELD_NAMES, FIELD_VALUES).map(lambda nv: nv[0] + b":" + nv[1]),
              st.sampled_from([b" folded", b"\tfolded", b"no-colon"])),
    max_size=7,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([b"GET / HTTP/1.1", b"GET /" + b"a" * 30 + b" HTTP/1.1", b"GET /\n HTTP/1.1"]),
       FIELD_LINES, st.sampled_from([b"\r\n\r\n", b"\n\r\n", b"\r\n\n"]), st.lists(st.integers(1, 200), max_size=8))
def test_incomplete_head_check_refuses_only_what_the_complete_head_check_refuses(
    request_line: bytes, lines: list[bytes], end: bytes, cuts: list[int]
) -> None:
    """Whatever the cuts, HeadScan refuses a head only if the complete head would be refused
    (by h11, by the bare-LF rule, or by the limits); and what it refuses byte by byte, it
    refuses when the same bytes come in one read (one read may find it sooner: the line
    still arriving is measured again only each time it doubled)."""
    head = b"\r\n".join([request_line, *lines]) + end
    refused = scan_in_pieces(head, [c for c in cuts if c < len(head)])
    if refused:
        bare_lf = head.count(b"\n") != head.count(b"\r\n")
        assert bare_lf or complete_head_verdict(head) != 200, (head, refused)
        if refused == 400:
            assert bare_lf, head
    ends = head.find(b"\r\n\r\n")
    whole = ends + 3 if ends >= 0 else len(head)  # the longest prefix without CRLFCRLF
    if scan_in_pieces(head, list(range(1, whole + 1))):
        assert scan_in_pieces(head, [whole]), head


# -- item 4: versions ----------------------------------------------------------------------------------

MALFORMED_VERSIONS = [b"HTTP/1", b"HTTP/01.01", b"HTTP/2", b"HTTP/10.0", b"HTTP/1.1.1"]


@pytest.mark.parametrize("version", MALFORMED_VERSIONS, ids=[v.decode() for v in MALFORMED_VERSIONS])
def test_a_malformed_version_is_400_not_505(pounce: Gunicorn, sync: Gunicorn, version: bytes) -> None:
    """RFC 9112 §2.3: HTTP-version is HTTP/DIGIT.DIGIT; anything else is malformed (400), as h11
    and Gunicorn say. 505 stays for a well-formed other major version (HTTP/2.0, HTTP/0.9)."""
    data = b"GET / " + version + b"\r\nHost: x\r\n\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    with pytest.raises(h11.RemoteProtocolError) as raised:
        conn.next_event()
    assert raised.value.error_status_hint == 400
    assert status_of(exchange(sync.port, data)[0]) == 400
    before = len(pounce.log())
    reply, how = exchange(pounce.port, data + CANARY)
    assert response_statuses(reply) == [400] and how == "eof", (reply[:300], how)
    assert len(invalid_lines(pounce, before)) == 1


@pytest.mark.parametrize(("version", "status"), [(b"HTTP/2.0", 505), (b"HTTP/0.9", 505), (b"HTTP/1.2", 200)])
def test_a_well_formed_version_keeps_its_answer(pounce: Gunicorn, version: bytes, status: int) -> None:
    reply, _how = exchange(pounce.port, b"GET / " + version + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == status, reply[:300]


# -- item 4: CONNECT --------------------------------------------------------------------------------------

ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CONNECTS = {
    "authority_form": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "origin_form": b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n",
    "http10": b"CONNECT example.com:443 HTTP/1.0\r\n\r\n",
    "with_body": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("name", CONNECTS)
def test_connect_is_refused_before_the_app(pounce: Gunicorn, name: str) -> None:
    """405 with Allow (RFC 9110 §15.5.6), Connection: close, one warning, the canary never
    served: a generic app's 200 would read as an open tunnel to a proxy in front."""
    before = len(pounce.log())
    reply, how = exchange(pounce.port, CONNECTS[name] + CANARY)
    assert response_statuses(reply) == [405] and how == "eof", (reply[:300], how)
    assert header(reply, b"allow") == ALLOW
    assert header(reply, b"connection") == b"close"
    assert b"/canary" not in reply
    lines = invalid_lines(pounce, before)
    assert len(lines) == 1 and "CONNECT" in lines[0] and "[WARNING]" in lines[0], lines


def test_connect_is_refused_as_the_second_request_of_a_connection(pounce: Gunicorn) -> None:
    first = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    reply, how = exchange(pounce.port, first + CONNECTS["authority_form"] + CANARY)
    assert response_statuses(reply) == [200, 405] and how == "eof", (reply[:400], how)
    assert b'"/first"' in reply and b"/canary" not in reply


def test_gunicorn_hands_connect_to_the_app(sync: Gunicorn) -> None:
    """The reference differs on purpose: Gunicorn's sync worker calls the WSGI app (200 here)."""
    assert status_of(exchange(sync.port, CONNECTS["authority_form"])[0]) == 200


# -- item 4: Upgrade in HTTP/1.0 ------------------------------------------------------------------------

HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture(scope="module", params=MODES)
def ws_server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    server = Gunicorn("tests.ws_apps:app", mode=request.param)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_upgrade_in_http10_is_ignored(ws_server: Gunicorn) -> None:
    """RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request: the app gets a plain
    HTTP request (uvicorn switches to WebSocket; Gunicorn's sync worker serves it as HTTP)."""
    reply, how = exchange(ws_server.port, HANDSHAKE.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert response_statuses(reply) == [200] and how == "eof", (reply[:300], how)
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {"type": "http", "path": "/ws"}


def test_upgrade_in_http11_still_switches(ws_server: Gunicorn) -> None:
    with socket.create_connection((HOST, ws_server.port), timeout=5) as sock:
        sock.sendall(HANDSHAKE)
        assert sock.recv(65536).startswith(b"HTTP/1.1 101 ")


# -- item 6: compression and an app that returns after http.response.start --------------------------------


@pytest.mark.parametrize("target", ["/start-only?type=text/plain", "/start-only?type=text/plain&raise=1"],
                         ids=["returns", "raises"])
def test_start_without_a_body_is_the_same_with_compression(mode: str, started: list[Gunicorn], target: str) -> None:
    """The app's status, then a close, with compression on as off: the held start is sent
    when the app returns (or raises) without a body message, not replaced by a 500."""
    request = (b"GET %s HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" % target.encode()
               + b"GET /canary HTTP/1.1\r\nHost: x\r\n\r\n")
    replies = []
    for coding in ("off", "gzip"):
        server = Gunicorn("tests.feature_apps:app", mode=mode, env={"POUNCE_COMPRESSION": coding})
        started.append(server)
        server.start()
        reply, how = exchange(server.port, request)
        head = reply.partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and how == "eof", (coding, reply[:300], how)
        replies.append(b"canary" in reply)
    assert replies == [False, False]


# -- item 6: root_path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("root_path", ["/café", "/a b", "/tab\there"])
def test_an_unusable_root_path_fails_the_boot_naming_it(mode: str, root_path: str) -> None:
    server = Gunicorn(APP, "--root-path", root_path, mode=mode)
    returncode = server.boot_failure(20)
    assert returncode != 0
    output = server.output()
    assert f"root_path={root_path!r}" in output and "printable ASCII" in output, output[-2000:]


def test_an_ascii_root_path_still_serves(mode: str) -> None:
    with Gunicorn(APP, "--root-path", "/api/", mode=mode) as server:
        reply, _how = exchange(server.port, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 200
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["raw_path"] == "/api/x"
