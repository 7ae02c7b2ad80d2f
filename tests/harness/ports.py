"""Where the suite is, and listening sockets made here (never a port probed and bound later)."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HOST = "127.0.0.1"


def listening_socket(host: str = HOST, backlog: int = 2048) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def reserve_port(host: str = HOST) -> socket.socket:
    """A socket bound to a fresh port with SO_REUSEADDR, not listening: a reservation.

    While it stays open no other process takes the port by accident: the kernel
    never hands a bound port to another ``bind(port 0)`` nor to a client's
    ``connect()``, and a ``bind`` without SO_REUSEADDR fails. A server that sets
    SO_REUSEADDR itself (nginx, systemd-socket-activate, pounce_worker's status
    listener) can still bind and listen on it. Close it once the server stopped.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def reserve_port_run(length: int, host: str = HOST) -> list[socket.socket]:
    """``length`` consecutive reserved ports (see ``reserve_port``); the first is the base."""
    for _ in range(100):
        first = reserve_port(host)
        base = first.getsockname()[1]
        held = [first]
        try:
            for port in range(base + 1, base + length):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # Another socket on the port (even one that also set SO_REUSEADDR but is
                # connected or listening) is refused: SO_REUSEADDR only shares with idle binds.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
                sock.bind((host, port))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except OSError:
            for sock in held:
                sock.close()
            continue
        return held
    raise RuntimeError(f"no run of {length} free ports")
