"""The app misbehaves: the worker names the broken rule, answers what it still can, keeps serving.

* ASGI messages out of order, a str body, a return value: one error in the log
  naming the ASGI rule; the client gets a 500 when nothing of the response was
  sent, or a closed connection (never a response that looks complete but is
  not) when the head was already out; the same worker serves the next request.
* Lifespan shutdown raising: logged with its traceback, the worker still exits
  cleanly (master exit code 0, worker_exit runs).
* A loop blocked by a synchronous call: WORKER TIMEOUT and a new worker
  (tests/loop/test_lifecycle.py); here, that the log then lists every loop's
  connections, the stuck loop's and its siblings'.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.harness import HOST, Gunicorn, config_file, read_until_close, response_statuses, serve

APP = "tests.apps:misbehaves"


@pytest.fixture
def misbehaving(mode: str) -> Iterator[Gunicorn]:
    with serve(APP, mode=mode) as server:
        yield server


def get(port: int, path: str, keep_alive: bool = False) -> tuple[bytes, str]:
    """Everything the server sends for one request on a new connection, and how it ended."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        close = b"" if keep_alive else b"Connection: close\r\n"
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n")
        return read_until_close(sock, 10.0)


def serves_normally(server: Gunicorn, pid: int) -> None:
    data, how = get(server.port, "/ok")
    assert response_statuses(data) == [200], data
    assert data.endswith(f"ok {pid}".encode()), "a different worker answered: the first one died?"
    assert how == "eof"


def logged_once(server: Gunicorn, text: str) -> str:
    """The log entry (with its traceback) of the one failed request whose error contains ``text``."""
    server.wait_for_log(re.escape(text))
    log = server.log()
    assert log.count(text) == 1, log
    return log


#: path -> the ASGI rule the error must state.
RULES = {
    "/body-before-start": "ASGI: expected 'http.response.start' as the first message, got 'http.response.body'",
    "/start-twice": "ASGI: expected 'http.response.body' after 'http.response.start', got 'http.response.start'",
    "/body-after-end": "ASGI: message 'http.response.body' sent after the response was complete",
    "/start-after-end": "ASGI: message 'http.response.start' sent after the response was complete",
    "/str-body": "ASGI: 'http.response.body' body must be bytes, got str",
}


@pytest.mark.parametrize("path", ["/body-before-start"])
def test_nothing_sent_yet_gives_500(misbehaving: Gunicorn, path: str) -> None:
    (pid,) = misbehaving.worker_pids()
    data, how = get(misbehaving.port, path, keep_alive=True)
    assert response_statuses(data) == [500], data
    assert data.endswith(b"Internal Server Error") and b"connection: close" in data.lower()
    assert how == "eof"
    log = logged_once(misbehaving, RULES[path])
    assert f"Exception in ASGI application while handling GET {path}" in log
    serves_normally(misbehaving, pid)


@pytest.mark.parametrize("path", ["/start-twice", "/str-body"])
def test_broken_after_the_head_closes_the_connection(misbehaving: Gunicorn, path: str) -> None:
    """The head was accepted: the client sees it, then a close before the body's end (the
    response is chunked, so the missing terminating chunk shows it is incomplete)."""
    (pid,) = misbehaving.worker_pids()
    data, how = get(misbehaving.port, path, keep_alive=True)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower(), data
    assert not body.endswith(b"0\r\n\r\n"), "an incomplete response must not look complete"
    assert how == "eof"
    logged_once(misbehaving, RULES[path])
    serves_normally(misbehaving, pid)


@pytest.mark.parametrize("path", ["/body-after-end", "/start-after-end"])
def test_message_after_the_response_is_logged_and_the_response_stands(misbehaving: Gunicorn, path: str) -> None:
    """The response was complete before the app broke the rule: the client has it whole; the
    connection is closed afterwards (as uvicorn does), the next connection is served."""
    (pid,) = misbehaving.worker_pids()
    data, how = get(misbehaving.port, path, keep_alive=True)
    body = data.partition(b"\r\n\r\n")[2]
    assert response_statuses(data) == [200], data
    assert body == b"8\r\ncomplete\r\n0\r\n\r\n"
    assert how == "eof"
    logged_once(misbehaving, RULES[path])
    serves_normally(misbehaving, pid)


def test_returning_a_value_is_reported_and_answered_500(misbehaving: Gunicorn) -> None:
    (pid,) = misbehaving.worker_pids()
    data, how = get(misbehaving.port, "/returns-str")
    assert response_statuses(data) == [500], data
    assert how == "eof"
    misbehaving.wait_for_log(r"ASGI callable should return None, but returned 'a str instead of None'")
    misbehaving.wait_for_log(r"ASGI callable returned without starting a response")
    serves_normally(misbehaving, pid)


def test_many_misbehaving_requests_do_not_hurt_the_worker(misbehaving: Gunicorn) -> None:
    """Every kind of breakage, 20 times over, interleaved with good requests: same worker, no
    loop died, every good request answered."""
    (pid,) = misbehaving.worker_pids()
    for _ in range(20):
        for path in (*RULES, "/returns-str"):
            get(misbehaving.port, path)
            serves_normally(misbehaving, pid)
    assert misbehaving.worker_pids() == [pid]
    log = misbehaving.log()
    assert "died" not in log and "Event loop stopped by an error" not in log
    for rule in RULES.values():
        assert log.count(rule) == 20, rule


# -- lifespan shutdown ---------------------------------------------------------------------------


def test_lifespan_shutdown_exception_is_logged_and_the_worker_exits_cleanly(mode: str, tmp_path) -> None:
    server = Gunicorn("tests.apps:shutdown_raises", mode=mode, threads=2)
    record = tmp_path / "exits.txt"
    server.args += ["-c", str(config_file(server, f"""
def worker_exit(server, worker):
    with open({str(record)!r}, "a") as fh:
        fh.write(f"worker_exit {{worker.pid}}\\n")
"""))]
    server.start()
    try:
        (pid,) = server.worker_pids()
        data, _ = get(server.port, "/")
        assert response_statuses(data) == [200]
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait(20)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    log = server.log()
    loops = 2 if mode == "threads" else 1
    assert code == 0, server.output()
    assert log.count("ASGI lifespan shutdown raised") == loops, log
    assert log.count("RuntimeError: lifespan shutdown exploded on purpose") == loops
    assert "did not stop in time" not in log and "Event loop stopped by an error" not in log
    assert record.read_text() == f"worker_exit {pid}\n"
    assert elapsed < 8, f"exit took {elapsed:.1f}s"


# -- a blocked loop: every loop's connections in the log -----------------------------------------


@pytest.mark.serial  # the 3 idle connections must outlive the 2 s keep-alive until the 3 s WORKER TIMEOUT
def test_blocked_loop_log_lists_every_loops_connections() -> None:
    """Thread mode, 2 loops: 3 idle keep-alive connections and one request that blocks its loop.
    The warning while the heartbeat is withheld and the abort log after WORKER TIMEOUT both list
    both loops, with the 4 connections between them."""
    with serve("tests.apps:blocking", "--timeout", "3", mode="threads", threads=2) as server:
        (old,) = server.worker_pids()
        idle = []
        try:
            for _ in range(3):
                sock = socket.create_connection((HOST, server.port), timeout=10)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
                idle.append(sock)
                time.sleep(0.1)
            blocker = threading.Thread(target=get, args=(server.port, "/block"), daemon=True)
            blocker.start()
            server.wait_for_log(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=15)
            server.wait_for_log(r"Worker aborted; loop state: ", timeout=5)
            log = server.log()
        finally:
            for sock in idle:
                sock.close()
    stale = re.search(r"Loop (\d) has not run for [\d.]+s \(a blocking call in the app\?\); heartbeat withheld. "
                      r"Loops: (.*)", log)
    assert stale, log
    aborted = re.search(r"Worker aborted; loop state: (.*)", log)
    assert aborted, log
    for states in (stale.group(2), aborted.group(1)):
        per_loop = {int(i): int(n) for i, n in re.findall(r"loop (\d): (\d+)/\d+ connections", states)}
        assert set(per_loop) == {0, 1}, states
        assert sum(per_loop.values()) == 4, states
        assert min(per_loop.values()) >= 1, f"one loop holds every connection: {states}"
