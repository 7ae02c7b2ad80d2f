"""Overload and many connections: backpressure instead of refusal, fair loops, bounded memory.

* ``--worker-connections K`` with 10 x K clients: every request completes, no
  client sees a reset, and no loop ever holds more than its share of K
  (the app counts requests in flight per loop thread);
* connections arriving together are spread over the loops of a worker
  (thread mode, 2 and 4 loops): no loop more than twice its fair share;
* memory: the worker's RSS with 5,000 idle keep-alive connections and during a
  10 MB upload. These are measurements (printed with ``-s``); only loose sanity
  bounds are asserted.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from pounce_worker.config import share
from tests.harness import HOST, Gunicorn, proc_status_kb, read_until_close, response_statuses

APP = "tests.apps:hostile"


def start(started: list[Gunicorn], mode: str | None, *args: str, threads: int = 2, **env: str) -> Gunicorn:
    server = Gunicorn(APP, *args, mode=mode, threads=threads, env=env)
    started.append(server)
    return server.start()


def fetch_json(port: int, path: str) -> dict[str, object]:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data, _how = read_until_close(sock, 10.0)
    assert response_statuses(data) == [200], data[:300]
    return dict(json.loads(data.partition(b"\r\n\r\n")[2]))


def assert_clean_log(server: Gunicorn) -> None:
    log = server.log()
    assert "Traceback" not in log and "[ERROR]" not in log, log


# -- overload ---------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_overload_is_backpressure_within_each_loops_share(started: list[Gunicorn], mode: str) -> None:
    """K=8 connections per worker, 80 clients each holding a request 0.3 s: all served, none over a share."""
    k, clients, hold = 8, 80, 0.3
    server = start(started, mode, "--worker-connections", str(k), "--backlog", "2048")
    loops = 2 if mode == "threads" else 1
    results: list[object] = [None] * clients
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        try:
            barrier.wait(10)
            with socket.create_connection((HOST, server.port), timeout=30) as sock:
                sock.sendall(f"GET /hold/{hold} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data, how = read_until_close(sock, 30.0)
            results[i] = (response_statuses(data), how)
        except Exception as exc:  # a reset or a refused connect is a failure, reported below
            results[i] = repr(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - t0
    failures = [r for r in results if r != ([200], "eof")]
    assert not failures, failures[:5]
    # 80 requests of 0.3 s through 8 slots cannot take less than 3 s.
    assert clients * hold / k * 0.9 <= elapsed < 30, elapsed
    peaks = fetch_json(server.port, "/peaks")
    print(f"\n[measure] overload ({mode}): {clients} clients, worker_connections={k}, "
          f"{elapsed:.2f}s, in-flight peaks per loop {peaks['peak']}")
    assert peaks["served"] == clients
    peak = dict(peaks["peak"])  # type: ignore[call-overload]
    assert set(peak) == {f"pounce-loop-{i}" for i in range(loops)}, peak
    for i in range(loops):
        assert peak[f"pounce-loop-{i}"] <= share(k, loops, i), (i, peak)
    assert_clean_log(server)


# -- spreading connections over loops ----------------------------------------------------------------



def burst(server: Gunicorn, clients: int) -> list[socket.socket]:
    """``clients`` connections that are all in the backlog when the worker next runs.

    The worker is stopped (SIGSTOP, ours: a child of the master this test started) while the
    connections complete in the kernel, then continued: like a burst arriving while every loop is
    busy for a moment.
    """
    pid = server.worker_pids()[0]
    os.kill(pid, signal.SIGSTOP)
    socks = []
    try:
        for _ in range(clients):
            socks.append(socket.create_connection((HOST, server.port), timeout=10))
    finally:
        os.kill(pid, signal.SIGCONT)
    return socks


def loops_of(socks: list[socket.socket], path: bytes) -> collections.Counter[str]:
    """Send one request on each connection (kept open), return how many each loop thread answered."""
    counts: collections.Counter[str] = collections.Counter()
    for sock in socks:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    for sock in socks:
        data = b""
        while not data.endswith(b"}"):
            part = sock.recv(65536)
            assert part, data
            data += part
        counts[json.loads(data.partition(b"\r\n\r\n")[2])["thread"]] += 1
    return counts


@pytest.mark.parametrize("loops", [2, 4])
def test_burst_of_connections_spreads_over_loops(started: list[Gunicorn], loops: int) -> None:
    """32 keep-alive connections arrive at once, five times over: each loop ends up with between
    half and twice its fair share of them (the app names the loop thread of each connection)."""
    clients = 32
    fair = clients / loops
    server = start(started, "threads", threads=loops)
    for trial in range(5):
        socks = burst(server, clients)
        try:
            counts = loops_of(socks, b"/hold/0.3")  # held, so all are busy at once
        finally:
            for sock in socks:
                sock.close()
        per_loop = [counts.get(f"pounce-loop-{i}", 0) for i in range(loops)]
        print(f"\n[measure] burst of {clients} connections over {loops} loops, trial {trial}: {per_loop}")
        assert sum(per_loop) == clients
        assert max(per_loop) <= 2 * fair and min(per_loop) >= fair / 2, per_loop
        time.sleep(0.5)  # let the closed connections be released before the next burst


def test_paced_connections_reach_every_loop(started: list[Gunicorn]) -> None:
    """Connections arriving 20 ms apart on an otherwise idle 2-loop worker: both loops get some."""
    server = start(started, "threads", threads=2)
    socks = []
    try:
        for _ in range(32):
            socks.append(socket.create_connection((HOST, server.port), timeout=10))
            time.sleep(0.02)
        counts = loops_of(socks, b"/whoami")
    finally:
        for sock in socks:
            sock.close()
    print(f"\n[measure] 32 paced connections over 2 loops: {dict(counts)}")
    assert set(counts) == {"pounce-loop-0", "pounce-loop-1"}, counts


# -- memory ---------------------------------------------------------------------------------------------

IDLE = 5000


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {wanted}: raise it (ulimit -Hn) to run this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def fd_limit_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' line")


@pytest.mark.timeout(120)
def test_memory_with_5000_idle_keepalive_connections(started: list[Gunicorn], mode: str) -> None:
    raise_fd_limit(2 * IDLE + 500)  # our client sockets plus the worker's (it inherits the limit)
    server = start(started, mode, "--worker-connections", str(IDLE + 100), "--keep-alive", "120",
                   POUNCE_HEADER_TIMEOUT="120")
    pid = server.worker_pids()[0]
    assert fd_limit_of(pid) >= IDLE + 100, "the worker cannot hold the connections"
    fetch_json(server.port, "/warm-up")
    before = proc_status_kb(pid, "VmRSS")
    socks: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            sock = socket.create_connection((HOST, server.port), timeout=10)
            socks.append(sock)
            sock.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in socks:  # every connection served once, then left idle (keep-alive)
            data = b""
            while not data.endswith(b"}"):
                part = sock.recv(65536)
                assert part, "a connection closed before its response"
                data += part
            assert data.startswith(b"HTTP/1.1 200 ")
        time.sleep(0.5)
        during = proc_status_kb(pid, "VmRSS")
        peak = proc_status_kb(pid, "VmHWM")
        # Still serving with all of them open.
        assert fetch_json(server.port, "/still-here")["path"] == "/still-here"
    finally:
        for sock in socks:
            sock.close()
    per_conn = (during - before) * 1024 / IDLE
    print(f"\n[measure] {IDLE} idle keep-alive connections ({mode}): worker RSS {before / 1024:.1f} -> "
          f"{during / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB), {per_conn / 1024:.1f} KiB per connection")
    assert len(socks) == IDLE
    assert per_conn < 100 * 1024, f"{per_conn / 1024:.0f} KiB per idle connection"
    assert_clean_log(server)


@pytest.mark.timeout(60)
def test_memory_during_a_10mb_upload(started: list[Gunicorn], mode: str) -> None:
    size = 10 * 1024 * 1024
    server = start(started, mode)
    pid = server.worker_pids()[0]
    fetch_json(server.port, "/warm-up")
    before = proc_status_kb(pid, "VmHWM")
    rss_before = proc_status_kb(pid, "VmRSS")
    with socket.create_connection((HOST, server.port), timeout=30) as sock:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"u" * 65536
        for _ in range(size // len(piece)):
            sock.sendall(piece)
        data, _how = read_until_close(sock, 30.0)
    assert response_statuses(data) == [200], data[:300]
    result = json.loads(data.partition(b"\r\n\r\n")[2])
    assert result["body_len"] == size
    peak = proc_status_kb(pid, "VmHWM")
    print(f"\n[measure] 10 MiB upload to an app that streams it ({mode}): worker RSS {rss_before / 1024:.1f} MiB, "
          f"peak {before / 1024:.1f} -> {peak / 1024:.1f} MiB (+{(peak - before) / 1024:.1f} MiB), "
          f"largest receive() {result['largest']} bytes")
    # The body is streamed to the app, never held whole: the peak grows by far less than 10 MiB.
    assert (peak - before) < 8 * 1024, f"peak RSS grew by {(peak - before) / 1024:.1f} MiB"
    assert result["largest"] <= 1024 * 1024
    assert_clean_log(server)
