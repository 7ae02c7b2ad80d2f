"""Waiting for what a server does, by observing it (never a fixed sleep)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path


def _accepted_peers(port: int) -> set[int]:
    """Client ports of connections to local ``port`` that a server process has accept()ed.

    A connection still in the listen backlog has no socket file yet: inode 0 in
    /proc/net/tcp; accept() gives it one.
    """
    peers = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == port and inode != "0" and fields[3] == "01":  # ESTABLISHED
                    peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


def wait_accepted(sock: socket.socket, timeout: float = 10.0) -> None:
    """Until the server end of the connection ``sock`` was accept()ed (by a worker, for Gunicorn).

    What "sleep a moment, the worker has accepted it by now" means, observed instead of hoped.
    """
    port = sock.getpeername()[1]
    mine = sock.getsockname()[1]
    if not wait_until(lambda: mine in _accepted_peers(port), timeout=timeout, interval=0.01):
        raise TimeoutError(f"connection from port {mine} to {port} not accepted in {timeout}s")


def wait_connections(port: int, count: int = 1, timeout: float = 10.0) -> None:
    """Until at least ``count`` connections to ``port`` were accept()ed and are still established.

    For a request a thread is making: its connection is in a worker, not in the backlog.
    """
    if not wait_until(lambda: len(_accepted_peers(port)) >= count, timeout=timeout, interval=0.01):
        raise TimeoutError(f"{count} accepted connection(s) to port {port} not seen in {timeout}s")



def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` passes; return its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def poll_until(predicate: object, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate()`` until it is true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout}s")


def stamp_until(path: Path, text: str, predicate: object, timeout: float = 20.0) -> bool:
    """Write ``text`` to ``path`` with a fresh, later mtime every 1.5 s until ``predicate()``.

    Gunicorn's poll reloader takes each file's baseline mtime on its first pass in a new
    worker, and only a later mtime counts as a change: a write that lands before that first
    pass (a new worker starting on a loaded machine) is never seen. Stamping again with a
    still later mtime is what an operator's next save does; the reloader polls every second.
    """
    deadline = time.monotonic() + timeout
    stamp = time.time() + 5  # ahead of any baseline, whatever the filesystem's resolution
    while time.monotonic() < deadline:
        path.write_text(text)
        os.utime(path, (stamp, stamp))
        if wait_until(predicate, timeout=1.5, interval=0.1):
            return True
        stamp += 1
    return bool(predicate())  # type: ignore[operator]
