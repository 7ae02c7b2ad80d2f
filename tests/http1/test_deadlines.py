"""Every connection state has a deadline, and a refusal is read whole by the client.

The states, and the deadline each is held to (README.rst, "Connection deadlines"):

* request head: ``POUNCE_HEADER_TIMEOUT`` (tests/test_hostile_slow.py);
* request body the app waits for: ``POUNCE_BODY_TIMEOUT`` (longest pause) and
  ``POUNCE_BODY_MIN_RATE`` (average rate past that allowance): a body stalled
  mid-chunk, or trickled a byte at a time, gets 408 and the app ``http.disconnect``;
* request body left unread after the response: ``keepalive``;
* response the client does not read: ``POUNCE_SEND_TIMEOUT``;
* idle keep-alive: ``keepalive`` (tests/test_hostile_slow.py);
* closing: a lingering close of at most 2 s, so that a refusal sent while the
  client's bytes are still unread reaches it whole, followed by a clean FIN and
  never a reset.

Each deadline test fails on a worker without that deadline: the connection stays
open past the test's bound, which is far above the deadline itself, so a loaded
machine cannot make it fail.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import HOST, Gunicorn, poll_until, read_until_close, response_statuses

APP = "tests.deadline_apps:app"
STATUS_LOG = r"status view of worker \d+ on (\S+) \(POUNCE_STATUS_BIND\)"


def start(started: list[Gunicorn], mode: str, *args: str, **env: str) -> tuple[Gunicorn, Path]:
    server = Gunicorn(APP, *args, mode=mode)
    notes = server.tmp / "notes.txt"
    notes.touch()
    server.extra_env = {"POUNCE_TEST_DEADLINE_FILE": str(notes), **env}
    started.append(server)
    server.start()
    return server, notes


def connect(server: Gunicorn) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def lines(server: Gunicorn, text: str) -> list[str]:
    return [line for line in server.log().splitlines() if text in line]


# -- body deadlines ---------------------------------------------------------------------------------


def test_body_left_unread_after_the_response_is_bounded_by_keepalive(started: list[Gunicorn], mode: str) -> None:
    """The measured case: 10 of 1,000,000 body bytes, a 401 at once, then silence."""
    server, _ = start(started, mode, "--keep-alive", "1")
    with connect(server) as sock:
        sock.sendall(b"POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789")
        data, how = read_until_close(sock, 20.0)
    assert response_statuses(data) == [401] and how == "eof", (data, how)
    found = server.wait_for_log(r"the rest of the request body did not arrive within keepalive=1s")
    assert len(found) == 1


def test_chunked_body_stalled_mid_chunk_gets_408_and_the_app_a_disconnect(
    started: list[Gunicorn], mode: str
) -> None:
    server, notes = start(started, mode, POUNCE_BODY_TIMEOUT="1")
    with connect(server) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123")
        data, how = read_until_close(sock, 20.0)
    assert response_statuses(data) == [408] and how == "eof", (data, how)
    assert b"POUNCE_BODY_TIMEOUT=1s" in data
    poll_until(lambda: "/upload disconnected" in notes.read_text(), what="the app's http.disconnect")
    assert len(lines(server, "Request body not received in time")) == 1


def test_body_trickled_a_byte_at_a_time_is_cut_by_the_rate_rule(started: list[Gunicorn], mode: str) -> None:
    """4 bytes/s never pauses for POUNCE_BODY_TIMEOUT, but falls behind POUNCE_BODY_MIN_RATE=100."""
    server, notes = start(started, mode, POUNCE_BODY_TIMEOUT="1", POUNCE_BODY_MIN_RATE="100")
    data, how = b"", "timeout"
    with connect(server) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(120):  # at most 30 s of trickling; the rule cuts it after about 1 s
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.25)
            try:
                first = sock.recv(65536)
            except TimeoutError:
                continue
            data, how = read_until_close(sock, 10.0)
            data = first + data
            break
    assert response_statuses(data) == [408] and how == "eof", (data, how)
    poll_until(lambda: "/upload disconnected" in notes.read_text(), what="the app's http.disconnect")


@pytest.mark.serial  # the client's own pauses must stay under 3 s: a wall-clock window
def test_slow_steady_body_is_served(started: list[Gunicorn], mode: str) -> None:
    """300 bytes/s for 2 s, pausing 0.1 s at a time: within both rules (3 s, 100 bytes/s)."""
    server, _ = start(started, mode, POUNCE_BODY_TIMEOUT="3", POUNCE_BODY_MIN_RATE="100")
    with connect(server) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\nConnection: close\r\n\r\n")
        for _ in range(20):
            sock.sendall(b"y" * 30)
            time.sleep(0.1)
        data, how = read_until_close(sock, 20.0)
    assert response_statuses(data) == [200] and data.endswith(b"\r\n\r\n600"), (data, how)
    assert lines(server, "Request body not received in time") == []


def test_expect_100_body_clock_starts_with_the_100(started: list[Gunicorn], mode: str) -> None:
    """The app asks for the body after 2 s; a client waiting for 100 Continue is not cut at 1 s."""
    server, _ = start(started, mode, POUNCE_BODY_TIMEOUT="1")
    with connect(server) as sock:
        sock.sendall(b"POST /late-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        sock.settimeout(20)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        sock.sendall(b"hello")
        data, how = read_until_close(sock, 20.0)
    assert response_statuses(data) == [200] and data.endswith(b"\r\n\r\n5"), (data, how)


def test_stalled_body_frees_its_slot_in_the_status_view(started: list[Gunicorn], mode: str) -> None:
    """The client keeps its socket open and silent: the worker still closes it and counts it gone."""
    server, _ = start(started, mode, POUNCE_BODY_TIMEOUT="1", POUNCE_STATUS_BIND="127.0.0.1:0")
    address = server.wait_for_log(STATUS_LOG)[0]

    def open_connections() -> int:
        with httpx.Client(base_url=f"http://{address}", timeout=5) as client:
            return int(client.get("/status").json()["totals"]["connections"])

    with connect(server) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        poll_until(lambda: open_connections() == 1, what="the stalled connection counted")
        poll_until(lambda: open_connections() == 0, timeout=20, what="the stalled connection's slot freed")
        data, how = read_until_close(sock, 5.0)
    assert response_statuses(data) == [408] and how == "eof", (data, how)


# -- the response the client does not read --------------------------------------------------------------


def test_client_that_stops_reading_is_closed_after_send_timeout(started: list[Gunicorn], mode: str) -> None:
    server, notes = start(started, mode, POUNCE_SEND_TIMEOUT="1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    with sock:
        sock.connect((HOST, server.port))
        sock.sendall(b"GET /firehose HTTP/1.1\r\nHost: x\r\n\r\n")
        poll_until(lambda: "/firehose ended by ClientDisconnected" in notes.read_text(), timeout=30,
                   what="the app told the client is gone")
    found = lines(server, "it read nothing of the response for POUNCE_SEND_TIMEOUT=1s")
    assert len(found) == 1, server.log()


# -- refusals are read whole (lingering close) --------------------------------------------------------------

#: Requests refused while more of the client's bytes are on their way or unread: (bytes, status).
REFUSED = {
    "body_over_limit": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"z" * 200000, 413),
    "bad_head_then_pipelined": (
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n" + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20000, 400),
    "host_in_chunked_trailers": (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nHost: evil\r\n\r\n"
        + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20000, 400),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refusal_is_read_whole_then_a_clean_close(started: list[Gunicorn], mode: str, case: str) -> None:
    """Repeated, since a reset destroys the response only when it overtakes the client's read."""
    request, status = REFUSED[case]
    server, _ = start(started, mode, POUNCE_MAX_BODY_SIZE="1000")
    outcomes = []
    for _ in range(25):
        with connect(server) as sock:
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the rest went out: what it reads is what counts
            data, how = read_until_close(sock, 10.0)
        outcomes.append((response_statuses(data), how))
    assert outcomes == [([status], "eof")] * 25, outcomes
    assert len(re.findall(r"Invalid request from", server.log())) == 25


# -- asgi_disconnect_grace_period: how long an app whose client left may run on ------------------------


def grace_server(started: list[Gunicorn], worker: str, *args: str) -> tuple[Gunicorn, Path]:
    """pounce_worker in a forced mode, or Gunicorn's own ``-k asgi`` for the same input."""
    if worker == "gunicorn-asgi":
        server = Gunicorn("tests.deadline_apps:grace_app", *args, mode=None, worker_class="asgi",
                          loops_expected=False, threads=1)
    else:
        server = Gunicorn("tests.deadline_apps:grace_app", *args, mode=worker)
    notes = server.tmp / "notes.txt"
    notes.touch()
    server.extra_env = {"POUNCE_TEST_DEADLINE_FILE": str(notes)}
    started.append(server)
    server.start()
    return server, notes


def leave_mid_response(server: Gunicorn, notes: Path) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /deaf HTTP/1.1\r\nHost: x\r\n\r\n")
        poll_until(lambda: "/deaf started" in notes.read_text(), what="the app started")
        sock.settimeout(10)
        assert b"started" in sock.recv(65536)
    poll_until(lambda: "/deaf heard http.disconnect" in notes.read_text(), what="the app told")


@pytest.mark.parametrize("worker", ["threads", "processes", "gunicorn-asgi"])
def test_app_that_ignores_its_client_leaving_is_cancelled_after_the_grace_period(
    started: list[Gunicorn], worker: str
) -> None:
    server, notes = grace_server(started, worker, "--asgi-disconnect-grace-period", "1")
    leave_mid_response(server, notes)
    poll_until(lambda: "/deaf cancelled" in notes.read_text(), timeout=20, what="the app cancelled")
    assert "/deaf finished its work" not in notes.read_text()
    if worker != "gunicorn-asgi":
        assert len(lines(server, "still running 1s after its client left (asgi_disconnect_grace_period)")) == 1


def test_grace_period_0_cancels_at_once(started: list[Gunicorn], mode: str) -> None:
    server, notes = grace_server(started, mode, "--asgi-disconnect-grace-period", "0")
    leave_mid_response(server, notes)
    poll_until(lambda: "/deaf cancelled" in notes.read_text(), timeout=10, what="the app cancelled")


def test_work_after_a_complete_response_is_not_cancelled(started: list[Gunicorn], mode: str) -> None:
    """A background task after the response is not a client leaving: it runs to its end (-k asgi cuts it)."""
    server, notes = grace_server(started, mode, "--asgi-disconnect-grace-period", "0")
    with connect(server) as sock:
        sock.sendall(b"GET /background HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, how = read_until_close(sock, 10.0)
    assert response_statuses(data) == [200], (data, how)
    poll_until(lambda: "/background finished its work" in notes.read_text(), timeout=20, what="the work done")
