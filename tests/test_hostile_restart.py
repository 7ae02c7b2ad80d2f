"""Restarts under load: no request sent on a connection is lost or truncated.

Several clients keep sending requests one after another on keep-alive
connections (raw sockets, one thread each) while the workers are restarted:
SIGTERM to one worker, ``max_requests`` restarts, the master's HUP, TTIN/TTOU.

Every request carries a unique id; the app (``tests.apps:restart_probe``)
appends each id it sees to a file and echoes it. A request counts as:

* served: a complete response (by Content-Length) with its own id;
* retried: the server closed the keep-alive connection cleanly (EOF, no
  response byte) at a request boundary before reading the request, as it may
  (RFC 9112 §9.3.1; HTTP clients retry such requests). The client sends it
  again, with a new id, on a new connection. The test checks the app never saw
  a retried id, so a "retry" can never hide a request that was processed;
* failed: anything else (a reset, a truncated response, a timeout, a wrong id).

Zero failures, and the ids the app saw are exactly the ids served.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import HOST, Gunicorn, poll_until

APP = "tests.apps:restart_probe"
CLIENTS = 6
#: Each scenario keeps the clients sending at least this long.
MIN_LOAD_SECONDS = 3.0


@dataclass
class Tally:
    """What one client saw; merged over all clients at the end."""

    sent: int = 0
    served: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    closes: int = 0  # responses that said Connection: close (the client reconnected)
    pids: set[int] = field(default_factory=set)

    def merge(self, other: Tally) -> None:
        self.sent += other.sent
        self.served += other.served
        self.retried += other.retried
        self.failures += other.failures
        self.closes += other.closes
        self.pids |= other.pids


def read_response(sock: socket.socket, timeout: float) -> tuple[str, bytes, dict[bytes, bytes], bytes]:
    """One response: ``(outcome, status line, headers, body)``; outcome is ``ok``, ``eof``
    (closed before any byte), or a failure: ``reset``, ``truncated``, ``timeout``."""
    data = b""
    sock.settimeout(timeout)

    def more() -> str | None:
        nonlocal data
        try:
            part = sock.recv(65536)
        except TimeoutError:
            return "timeout"
        except ConnectionResetError:
            return "reset"
        if not part:
            return "eof" if not data else "truncated"
        data += part
        return None

    while b"\r\n\r\n" not in data:
        if (problem := more()) is not None:
            return problem, data, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"-1"))
    if length < 0:
        return "truncated", data, headers, body  # this app always sends Content-Length
    while len(body) < length:
        before = len(data)
        if (problem := more()) is not None:
            return ("truncated" if problem == "eof" else problem), data, headers, body
        body += data[before:]
    if len(body) > length:
        return "truncated", data, headers, body  # bytes nobody asked for: a framing error
    return "ok", status, headers, body


class LoadClient(threading.Thread):
    """One keep-alive connection at a time, one request in flight, until stopped."""

    def __init__(self, index: int, port: int, stop: threading.Event, path: Callable[[str], str] | None = None) -> None:
        super().__init__(name=f"load-client-{index}", daemon=True)
        self.index = index
        self.port = port
        self.stop = stop
        self.path = path or (lambda rid: f"/r/{rid}")
        self.tally = Tally()
        self.served_now = 0  # read by the test thread to wait for progress

    def run(self) -> None:
        tally = self.tally
        sock: socket.socket | None = None
        attempt = 0
        while not self.stop.is_set():
            if sock is None:
                try:
                    sock = socket.create_connection((HOST, self.port), timeout=10)
                except OSError as exc:
                    tally.failures.append(f"connect: {exc!r}")
                    time.sleep(0.05)
                    continue
            rid = f"c{self.index}a{attempt}"
            attempt += 1
            request = f"GET {self.path(rid)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            try:
                sock.sendall(request)
            except OSError:
                # Nothing of it reached the server as a request it could answer: the
                # connection was already closed. Not counted as sent; a new connection follows.
                sock.close()
                sock = None
                continue
            tally.sent += 1
            outcome, status, headers, body = read_response(sock, timeout=20)
            if outcome == "eof":
                tally.retried.append(rid)
                sock.close()
                sock = None
                continue
            if outcome != "ok":
                tally.failures.append(f"{rid}: {outcome} after {status[:200]!r}")
                sock.close()
                sock = None
                continue
            echoed, _, pid = body.decode("latin-1").partition(" ")
            if not status.startswith(b"HTTP/1.1 200 ") or echoed != rid or headers.get(b"x-id") != rid.encode():
                tally.failures.append(f"{rid}: wrong response {status!r} {headers!r} {body!r}")
            else:
                tally.served.append(rid)
                tally.pids.add(int(pid))
                self.served_now += 1
            if headers.get(b"connection", b"").lower() == b"close":
                tally.closes += 1
                sock.close()
                sock = None
        if sock is not None:
            sock.close()


class Load:
    """``CLIENTS`` load clients against one server, and the verdict at the end."""

    def __init__(self, server: Gunicorn, seen_dir: Path, clients: int = CLIENTS) -> None:
        self.server = server
        self.seen_dir = seen_dir
        self.stop = threading.Event()
        self.clients = [LoadClient(i, server.port, self.stop) for i in range(clients)]
        self.started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for client in self.clients:
            client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for client in self.clients:
            client.join(30)
        self.elapsed = time.monotonic() - self.started

    def lasting(self, seconds: float = MIN_LOAD_SECONDS) -> None:
        """Keep the load on until it has run ``seconds`` in all (requests before, during and after)."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def served(self) -> int:
        return sum(client.served_now for client in self.clients)

    def wait_served(self, more: int, timeout: float = 30.0) -> None:
        target = self.served() + more
        poll_until(lambda: self.served() >= target, timeout, what=f"{more} more responses")

    def seen_ids(self) -> list[str]:
        """Every request id the app recorded, in any worker so far."""
        seen: list[str] = []
        for path in self.seen_dir.glob("seen-*.txt"):
            seen += path.read_text().split()
        return seen

    def seen(self) -> set[str]:
        return set(self.seen_ids())

    def verdict(self, scenario: str, extra: tuple[LoadClient, ...] = ()) -> Tally:
        """Asserts zero failures; ``extra``: other clients of the same server (their ids are in the app's record)."""
        total = Tally()
        for client in (*self.clients, *extra):
            assert not client.is_alive(), f"{client.name} did not stop"
            total.merge(client.tally)
        seen = self.seen_ids()
        print(f"\n[measure] {scenario}: {total.sent} requests sent in {self.elapsed:.1f}s by {len(self.clients)} "
              f"keep-alive clients, {len(total.served)} served, {len(total.retried)} retried "
              f"(closed by the server before it read them), {len(total.failures)} lost or truncated; "
              f"{total.closes} responses closed their connection; worker pids {len(total.pids)}")
        assert total.failures == [], total.failures[:10]
        assert total.sent == len(total.served) + len(total.retried)
        assert len(seen) == len(set(seen)), "the app saw a request twice"
        never_answered = set(seen) - set(total.served)
        assert not never_answered, f"the app saw requests whose response never arrived: {sorted(never_answered)[:10]}"
        retried_but_seen = set(total.retried) & set(seen)
        assert not retried_but_seen, f"closed unanswered after the app saw them: {sorted(retried_but_seen)[:10]}"
        assert set(total.served) <= set(seen)
        return total


def start(started: list[Gunicorn], tmp_path: Path, mode: str, *args: str, workers: int = 2) -> Gunicorn:
    seen = tmp_path / "seen"
    seen.mkdir()
    server = Gunicorn(APP, "--graceful-timeout", "5", *args, mode=mode, workers=workers,
                      env={"POUNCE_TEST_SEEN_DIR": str(seen)})
    started.append(server)
    return server.start()


def boots(server: Gunicorn) -> int:
    return server.log().count("Booting worker with pid")


def assert_clean_log(server: Gunicorn) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-5000:]
    assert "WORKER TIMEOUT" not in log


# -- the scenarios -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_sigterm_to_a_worker_under_load(started: list[Gunicorn], tmp_path: Path, mode: str) -> None:
    """One worker, SIGTERM by its PID while 6 clients send and 3 slow (1 s) requests are in flight:
    the slow ones finish within graceful_timeout, nothing is lost, the master's new worker serves."""
    server = start(started, tmp_path, mode, workers=1)
    (old,) = server.worker_pids()
    slow_stop = threading.Event()
    slow = [LoadClient(100 + i, server.port, slow_stop, path=lambda rid: f"/slow/1.0/{rid}") for i in range(3)]
    with Load(server, tmp_path / "seen") as load:
        load.wait_served(500)
        for client in slow:
            client.start()
        poll_until(lambda: {f"c{c.index}a0" for c in slow} <= load.seen(), 15, what="the slow requests in the app")
        slow_stop.set()  # each slow client ends after the response it is waiting for
        termed = time.monotonic()
        os.kill(old, signal.SIGTERM)
        poll_until(lambda: old not in server.worker_pids(), 15, what="the old worker gone")
        gone = time.monotonic() - termed
        poll_until(lambda: len(server.worker_pids()) == 1, 15, what="a new worker")
        load.wait_served(1000)
        load.lasting()
    for client in slow:
        client.join(30)
    slow_total = Tally()
    for client in slow:
        slow_total.merge(client.tally)
    print(f"\n[measure] old worker exited {gone:.2f}s after SIGTERM (graceful_timeout=5); "
          f"slow requests: {len(slow_total.served)} served, {len(slow_total.retried)} retried")
    assert slow_total.failures == [], slow_total.failures
    # Each was in the app when TERM came: all three answered by the terminated worker, none retried.
    assert (len(slow_total.served), slow_total.retried, slow_total.pids) == (3, [], {old}), slow_total
    assert gone < 5 + 2, "the worker outlived graceful_timeout"
    load.verdict(f"SIGTERM to one worker ({mode})", extra=tuple(slow))
    assert_clean_log(server)


@pytest.mark.timeout(120)
def test_max_requests_restarts_under_load(started: list[Gunicorn], tmp_path: Path, mode: str) -> None:
    """max_requests=300 (no jitter), two workers: a restart every few hundred requests."""
    server = start(started, tmp_path, mode, "--max-requests", "300", "--max-requests-jitter", "0")
    with Load(server, tmp_path / "seen") as load:
        poll_until(lambda: boots(server) >= 2 + 6, 90, what="six max_requests restarts")
        load.wait_served(300)
        load.lasting()
    total = load.verdict(f"max_requests=300 restarts ({mode})")
    assert len(total.pids) >= 6
    assert server.log().count("Autorestarting worker after current request") >= 6
    assert_clean_log(server)


@pytest.mark.timeout(120)
def test_hup_under_load(started: list[Gunicorn], tmp_path: Path, mode: str) -> None:
    """HUP twice: every worker replaced each time, gracefully."""
    server = start(started, tmp_path, mode)
    with Load(server, tmp_path / "seen") as load:
        for _ in range(2):
            load.wait_served(500)
            before = set(server.worker_pids())
            server.signal(signal.SIGHUP)
            poll_until(lambda b=before: not b & set(server.worker_pids()) and len(server.worker_pids()) == 2,
                       30, what="all workers replaced")
        load.wait_served(500)
        load.lasting()
    load.verdict(f"SIGHUP x2 ({mode})")
    assert_clean_log(server)


@pytest.mark.timeout(120)
def test_ttin_ttou_under_load(started: list[Gunicorn], tmp_path: Path, mode: str) -> None:
    """TTIN adds a worker, TTOU retires the oldest, twice over."""
    server = start(started, tmp_path, mode, workers=1)
    with Load(server, tmp_path / "seen") as load:
        for _ in range(2):
            load.wait_served(500)
            (first,) = server.worker_pids()
            server.signal(signal.SIGTTIN)
            poll_until(lambda: len(server.worker_pids()) == 2, 15, what="a second worker")
            load.wait_served(500)
            server.signal(signal.SIGTTOU)
            poll_until(lambda f=first: server.worker_pids() not in ([f], []) and len(server.worker_pids()) == 1
                       and f not in server.worker_pids(), 15, what="the oldest worker retired")
        load.wait_served(500)
        load.lasting()
    load.verdict(f"TTIN/TTOU x2 ({mode})")
    assert_clean_log(server)
