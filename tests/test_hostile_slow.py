"""Slow, idle and greedy clients: timeouts fire when they should (and only then), memory stays bounded.

* header timeout (``POUNCE_HEADER_TIMEOUT``): a head trickled byte by byte is cut
  off after a bounded time, a silent connection is closed, but a head that is
  complete in time, or a slow *body*, is served;
* keep-alive (``--keep-alive``): an idle connection is closed after it, but a
  request whose first byte arrived before the deadline is served;
* a client that reads a 50 MiB response slowly does not make the worker buffer it;
* a body over ``POUNCE_MAX_BODY_SIZE`` gets 413 before the app has read it all,
  with Content-Length and chunked.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.harness import (
    HOST,
    Gunicorn,
    proc_status_kb,
    read_until_close,
    response_statuses,
    wait_connections,
    wait_until,
)

APP = "tests.apps:hostile"
MiB = 1024 * 1024


def start(started: list[Gunicorn], mode: str, *args: str, **env: str) -> Gunicorn:
    server = Gunicorn(APP, *args, mode=mode, env=env)
    started.append(server)
    return server.start()


def connect(server: Gunicorn, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((HOST, server.port), timeout=timeout)


def invalid_lines(server: Gunicorn) -> list[str]:
    return [line for line in server.log().splitlines() if "Invalid request from" in line]


def assert_no_traceback(server: Gunicorn) -> None:
    log = server.log()
    assert "Traceback" not in log and "[ERROR]" not in log, log


def get(path: str = "/", close: bool = False) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()


def read_one_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One Content-Length framed response off a keep-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"closed before a response: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        part = sock.recv(65536)
        assert part, "closed mid-body"
        body += part
    assert len(body) == length, "more bytes than the response holds"
    return head + b"\r\n\r\n" + body


# -- header timeout ------------------------------------------------------------------------------


@pytest.mark.serial  # wall-clock window around a 1-2 s timer
def test_trickled_head_is_cut_off(started: list[Gunicorn], mode: str) -> None:
    """One byte every 0.3 s never completes a head: closed (408 or silently) about 1 s after connecting."""
    server = start(started, mode, POUNCE_HEADER_TIMEOUT="1")
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    sock = connect(server)
    t0 = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:
        for byte in head:
            if stop.wait(0.3):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        data, how = read_until_close(sock, 6.0)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        sender.join()
        sock.close()
    assert how in ("eof", "reset"), how
    assert 0.9 <= elapsed <= 2.5, elapsed
    assert response_statuses(data) in ([], [408]), data
    if data:
        assert len(invalid_lines(server)) == 1
    assert_no_traceback(server)


@pytest.mark.serial  # wall-clock window around a 1-2 s timer
def test_silent_connection_closed_at_header_timeout(started: list[Gunicorn], mode: str) -> None:
    server = start(started, mode, POUNCE_HEADER_TIMEOUT="1")
    with connect(server) as sock:
        t0 = time.monotonic()
        data, how = read_until_close(sock, 6.0)
        elapsed = time.monotonic() - t0
    assert (data, how) == (b"", "eof")
    assert 0.9 <= elapsed <= 2.5, elapsed
    assert_no_traceback(server)


@pytest.mark.serial  # wall-clock window around a 1-2 s timer
def test_head_completed_in_time_is_served(started: list[Gunicorn], mode: str) -> None:
    """Four pieces 0.3 s apart, complete 0.9 s after connecting: inside a 2 s header timeout."""
    server = start(started, mode, POUNCE_HEADER_TIMEOUT="2")
    request = get("/in-time", close=True)
    with connect(server) as sock:
        for i in range(4):
            time.sleep(0.3)
            sock.sendall(request[i * len(request) // 4:(i + 1) * len(request) // 4])
        data, how = read_until_close(sock, 5.0)
    assert response_statuses(data) == [200] and how == "eof"
    assert b'"/in-time"' in data


def test_slow_body_is_not_cut_by_header_timeout(started: list[Gunicorn], mode: str) -> None:
    """The header timeout bounds the head only: a body trickled over 2.5 s still arrives (timeout 1 s)."""
    server = start(started, mode, POUNCE_HEADER_TIMEOUT="1")
    with connect(server) as sock:
        sock.sendall(b"POST /slow-body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            time.sleep(0.25)
            sock.sendall(b"b")
        data, _how = read_until_close(sock, 5.0)
    assert response_statuses(data) == [200], data
    assert json.loads(data.partition(b"\r\n\r\n")[2])["body_len"] == 10


@pytest.mark.serial  # wall-clock window around a 1-2 s timer
def test_header_timeout_applies_to_a_later_request_on_the_connection(started: list[Gunicorn], mode: str) -> None:
    """After a first request, a second head that stalls half-way is cut off by the header timeout
    (1 s), long before the keep-alive timeout (5 s) would close the connection."""
    server = start(started, mode, "--keep-alive", "5", POUNCE_HEADER_TIMEOUT="1")
    with connect(server) as sock:
        sock.sendall(get("/first"))
        assert response_statuses(read_one_response(sock)) == [200]
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        data, how = read_until_close(sock, 8.0)
        elapsed = time.monotonic() - t0
    assert how in ("eof", "reset") and response_statuses(data) in ([], [408]), (data, how)
    assert 0.9 <= elapsed <= 2.5, elapsed


# -- keep-alive --------------------------------------------------------------------------------------


@pytest.mark.serial  # wall-clock window around a 1-2 s timer
def test_idle_keepalive_connection_is_closed(started: list[Gunicorn], mode: str) -> None:
    server = start(started, mode, "--keep-alive", "1", POUNCE_HEADER_TIMEOUT="10")
    with connect(server) as sock:
        sock.sendall(get("/first"))
        assert response_statuses(read_one_response(sock)) == [200]
        t0 = time.monotonic()
        data, how = read_until_close(sock, 6.0)
        elapsed = time.monotonic() - t0
    assert (data, how) == (b"", "eof")
    assert 0.8 <= elapsed <= 2.5, elapsed
    assert invalid_lines(server) == []
    assert_no_traceback(server)


@pytest.mark.serial  # wall-clock window around a 1-2 s timer
def test_request_begun_before_keepalive_deadline_is_served(started: list[Gunicorn], mode: str) -> None:
    """First byte 1 s into a 2 s keep-alive, the rest 1.6 s later (past the deadline): served."""
    server = start(started, mode, "--keep-alive", "2", POUNCE_HEADER_TIMEOUT="10")
    with connect(server) as sock:
        sock.sendall(get("/first"))
        assert response_statuses(read_one_response(sock)) == [200]
        request = get("/second", close=True)
        time.sleep(1.0)
        sock.sendall(request[:1])
        time.sleep(1.6)
        try:
            sock.sendall(request[1:])
        except (BrokenPipeError, ConnectionResetError):
            pytest.fail("the connection was closed after the first byte of a request arrived")
        data, how = read_until_close(sock, 5.0)
    assert response_statuses(data) == [200], (data, how)
    assert b'"/second"' in data


# -- a slow reader of a large response ---------------------------------------------------------------


def asgi_loop(loop: str) -> str:
    """The ``--asgi-loop`` value for a test parametrized over loops; uvloop is optional (bench extra)."""
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed (pip install uvloop)")
    return loop


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_slow_reader_does_not_make_the_worker_buffer(started: list[Gunicorn], mode: str, loop: str) -> None:
    """The app streams 50 MiB; the client reads 1 MiB and stalls: the worker must not buffer the rest."""
    server = start(started, mode, "--asgi-loop", asgi_loop(loop))
    pid = server.worker_pids()[0]
    with connect(server) as warm:  # the code paths and buffers of a streamed response, once
        warm.sendall(get("/stream/2", close=True))
        data, _how = read_until_close(warm, 10.0)
        assert len(data) > 2 * MiB
    baseline = proc_status_kb(pid, "VmRSS")
    total = 50 * MiB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(10)
    sock.connect((HOST, server.port))
    with sock:
        sock.sendall(get("/stream/50", close=True))
        received = 0
        while received < MiB:
            part = sock.recv(65536)
            assert part
            received += len(part)
        peak = baseline
        for _ in range(20):  # stall 2 s while the app would like to send 49 MiB more
            time.sleep(0.1)
            peak = max(peak, proc_status_kb(pid, "VmRSS"))
        while True:
            part = sock.recv(1 << 20)
            if not part:
                break
            received += len(part)
    growth_mib = (peak - baseline) / 1024
    print(f"\n[measure] slow reader of a 50 MiB response ({mode}, {loop}): worker RSS {baseline / 1024:.1f} MiB, "
          f"+{growth_mib:.1f} MiB while stalled")
    assert received > total, received  # the whole body (and the head) arrived in the end
    assert growth_mib < 30, f"worker RSS grew by {growth_mib:.1f} MiB while the client stalled"
    assert_no_traceback(server)


# -- POUNCE_MAX_BODY_SIZE ------------------------------------------------------------------------------

LIMIT = 1_000_000


def test_declared_body_over_limit_gets_413_before_it_is_sent(started: list[Gunicorn], mode: str) -> None:
    server = start(started, mode, POUNCE_MAX_BODY_SIZE=str(LIMIT))
    for expect in (b"", b"Expect: 100-continue\r\n"):
        with connect(server) as sock:
            sock.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n" + expect + b"\r\n")
            data, how = read_until_close(sock, 3.0)
        assert response_statuses(data) == [413], data  # and no 100 Continue first
        assert how == "eof"
    assert len(invalid_lines(server)) == 2
    assert_no_traceback(server)


def chunked(body_size: int, piece: int = 65536) -> Iterator[bytes]:
    sent = 0
    while sent < body_size:
        size = min(piece, body_size - sent)
        yield b"%x\r\n" % size + b"b" * size + b"\r\n"
        sent += size
    yield b"0\r\n\r\n"


def push_until_answered(sock: socket.socket, pieces: Iterator[bytes]) -> tuple[int, bool]:
    """Send pieces until the server answers (or all are sent): (bytes sent, answered early)."""
    sent = 0
    for piece in pieces:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent, True
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return sent, True
        sent += len(piece)
    return sent, False


def test_chunked_body_over_limit_gets_413_while_the_app_reads(started: list[Gunicorn], mode: str) -> None:
    server = start(started, mode, POUNCE_MAX_BODY_SIZE=str(LIMIT))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.settimeout(10)
    sock.connect((HOST, server.port))
    total = 20_000_000
    with sock:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        sent, early = push_until_answered(sock, chunked(total))
        data, _how = read_until_close(sock, 5.0)
    assert response_statuses(data) == [413], data[:300]
    assert early and sent < total, f"the whole {sent}-byte body was taken before any answer"
    assert_no_traceback(server)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_at_the_limit_is_served(started: list[Gunicorn], mode: str, framing: str) -> None:
    server = start(started, mode, POUNCE_MAX_BODY_SIZE=str(LIMIT))
    if framing == "chunked":
        request = b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        request += b"".join(chunked(LIMIT))
    else:
        request = b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % LIMIT
        request += b"b" * LIMIT
    with connect(server) as sock:
        sock.sendall(request)
        data, _how = read_until_close(sock, 10.0)
    assert response_statuses(data) == [200], data[:300]
    assert json.loads(data.partition(b"\r\n\r\n")[2])["body_len"] == LIMIT


# -- slowloris and pipelining floods --------------------------------------------------------------------


def test_slowloris_connections_are_reaped_and_their_slots_freed(started: list[Gunicorn], mode: str) -> None:
    """worker_connections=16, all taken by clients that never finish a head: a real client waits in
    the backlog (no refusal) and is served once the header timeout (1 s) frees the slots."""
    server = start(started, mode, "--worker-connections", "16", POUNCE_HEADER_TIMEOUT="1")
    hogs = [connect(server) for _ in range(16)]
    try:
        for hog in hogs:
            hog.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Never: ")
        wait_connections(server.port, 16)  # the hogs are accepted and hold every slot
        t0 = time.monotonic()
        with connect(server) as sock:
            sock.sendall(get("/patient", close=True))
            data, how = read_until_close(sock, 10.0)
        waited = time.monotonic() - t0
        # Every hog is reaped (one 408 line each) before the hogs hang up: a hog closed
        # first would end in EOF, not in the header timeout this test counts.
        wait_until(lambda: len(invalid_lines(server)) >= 16, timeout=10.0)
    finally:
        for hog in hogs:
            hog.close()
    assert response_statuses(data) == [200] and how == "eof", data
    assert b'"/patient"' in data
    print(f"\n[measure] slowloris with every slot taken ({mode}): the real client waited {waited:.2f}s")
    # It did wait for the reaping (1 s and a tick: about 1.3 s on a quiet machine), and was served
    # well before its own 10 s read deadline: nothing but the reaping frees a slot here. The upper
    # bound leaves room for a loaded machine (the free-threaded leg once took just over 3 s).
    assert 0.5 <= waited <= 8.0, waited
    # One 408 line per hog; each loop reaps on its own tick, so the last ones may come a tick later.
    deadline = time.monotonic() + 3.0
    while len(invalid_lines(server)) < 16 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(invalid_lines(server)) == 16
    assert_no_traceback(server)


PIPELINED = {
    # A 4 KiB head (the worker's fast path takes simple requests) ...
    "get": b"GET /p HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 4000 + b"\r\n\r\n",
    # ... and a 4 KiB chunked body (Transfer-Encoding goes through h11).
    "chunked": b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfa0\r\n" + b"p" * 4000
    + b"\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("kind", sorted(PIPELINED))
def test_pipelining_client_that_never_reads_is_throttled(
    started: list[Gunicorn], mode: str, kind: str, loop: str
) -> None:
    """15,000 pipelined 4 KiB requests (60 MiB) from a client that reads nothing for 2 s: the worker
    stops reading when its requests back up instead of buffering them (or the responses); every
    request is answered once the client reads."""
    server = start(started, mode, "--asgi-loop", asgi_loop(loop))
    pid = server.worker_pids()[0]
    requests = 15_000
    request = PIPELINED[kind]
    mark = b"HTTP/1.1 200 "
    baseline = proc_status_kb(pid, "VmRSS")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(30)
    sock.connect((HOST, server.port))
    def send_all() -> None:
        # send() piece by piece: the socket's 30 s timeout then bounds a stall, not the whole
        # 60 MiB upload (sendall's timeout is a total, which a loaded machine exceeds; the rest
        # of the requests was then never sent and the reader waited for their answers).
        data = memoryview(request * requests)
        try:
            while data:
                data = data[sock.send(data):]
        except OSError:
            pass  # closed by the test after a failed check

    with sock:
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        peak = baseline
        for _ in range(20):
            time.sleep(0.1)
            peak = max(peak, proc_status_kb(pid, "VmRSS"))
        growth_mib = (peak - baseline) / 1024
        print(f"\n[measure] {requests} pipelined 4 KiB requests ({kind}), client not reading ({mode}, {loop}): "
              f"worker RSS +{growth_mib:.1f} MiB while stalled")
        assert growth_mib < 30, growth_mib
        answered = 0
        tail = b""
        deadline = time.monotonic() + 60
        while answered < requests and time.monotonic() < deadline:
            part = sock.recv(1 << 20)
            assert part, f"closed after {answered} responses"
            chunk = tail + part
            answered += chunk.count(mark)
            tail = chunk[-(len(mark) - 1):]
        sender.join(10)
    assert answered == requests
    assert_no_traceback(server)
