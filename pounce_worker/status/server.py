"""The status listener: its own thread, so the view stays readable while a loop is stuck.

See readings.py for what it serves and why the counters are read without a lock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

import h11

from .bind import BIND_ENV, StatusBind
from .readings import WorkerFacts, WorkerReading, read_worker, route

#: Seconds one status client may take to send its request; the view serves one client at a time.
CLIENT_TIMEOUT = 2.0
#: How often the accept loop checks whether the worker is stopping.
POLL_INTERVAL = 0.25

# -- the listener -----------------------------------------------------------------------------


def _describe(family: int, address: Any) -> str:
    if family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def _bind(bind: StatusBind, pid: int) -> tuple[socket.socket, str] | None:
    """Listen on the first free candidate address; None when every one is taken."""
    for candidate in bind.candidates(pid):
        sock = socket.socket(bind.family, socket.SOCK_STREAM)
        try:
            if bind.family == socket.AF_UNIX:
                # A file left by a dead process with this pid: a socket nobody serves.
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISSOCK(os.stat(candidate).st_mode):
                        os.unlink(candidate)
            else:
                # SO_REUSEADDR only skips TIME_WAIT; it never lets two listeners share a
                # port on Linux. SO_REUSEPORT (which would) is left off on purpose.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(candidate)
            sock.listen(16)
        except OSError:
            sock.close()
            continue
        return sock, _describe(bind.family, sock.getsockname())
    return None


class StatusServer:
    """The status listener of one worker process, served from its own daemon thread.

    One client at a time, ``Connection: close``, each client bounded by
    ``CLIENT_TIMEOUT``: operators and a scraper need nothing more, and a
    stuck client cannot hold more than one thread.
    """

    def __init__(self, sock: socket.socket, address: str, read: Callable[[], WorkerReading], log: Any) -> None:
        self.sock = sock
        self.address = address
        self.read = read
        self.log = log
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(
        cls, bind: StatusBind, facts: WorkerFacts, servers: Sequence[Any], budget: Any, log: Any
    ) -> StatusServer | None:
        """Bind and start serving; None (with an error logged) when no address is free.

        A taken port does not stop the worker from booting: the app keeps
        serving, only this worker's status view is missing, and the log says so.
        """
        bound = _bind(bind, facts.pid)
        if bound is None:
            tried = bind.candidates(facts.pid)
            log.error(
                "pounce_worker: %s: no free address for this worker's status view (tried %s to %s); "
                "serving without it", BIND_ENV, _describe(bind.family, tried[0]), _describe(bind.family, tried[-1]),
            )
            return None
        sock, address = bound
        box: list[StatusServer] = []
        server = cls(sock, address, lambda: read_worker(facts, servers, budget, box[0].address), log)
        box.append(server)
        server.start()
        log.info("pounce_worker: status view of worker %d on %s (%s)", facts.pid, address, BIND_ENV)
        return server

    def start(self) -> None:
        self.sock.settimeout(POLL_INTERVAL)
        self._thread = threading.Thread(target=self._serve, name="pounce-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the client being answered, then close (the worker's orderly exit)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(CLIENT_TIMEOUT + POLL_INTERVAL + 1.0)
        self.close()

    def close(self) -> None:
        """Close at once, without waiting for the thread (the worker is aborting)."""
        self._stopping.set()
        self.sock.close()
        if self.address.startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(self.address[len("unix:"):])

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                self.log.error("pounce_worker: status view accept() failed: %s", exc)
                time.sleep(POLL_INTERVAL)
                continue
            with conn:
                try:
                    conn.settimeout(CLIENT_TIMEOUT)
                    self._answer(conn)
                except (OSError, h11.ProtocolError) as exc:
                    self.log.debug("pounce_worker: status client dropped: %s", exc)
                except Exception:
                    self.log.exception("pounce_worker: error in the status view")

    def _answer(self, conn: socket.socket) -> None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError:
                self._send(conn, http, b"GET", 400, b"text/plain; charset=utf-8", b"Bad request.\n")
                return
            if event is h11.NEED_DATA:
                if time.monotonic() > deadline:
                    return
                http.receive_data(conn.recv(16384))
                continue
            if isinstance(event, h11.Request):
                break
            return  # the client closed before sending a request
        status, content_type, body = route(event.method, event.target, self.read)
        self._send(conn, http, event.method, status, content_type, body)

    @staticmethod
    def _send(
        conn: socket.socket, http: h11.Connection, method: bytes, status: int, content_type: bytes, body: bytes
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        reason = HTTPStatus(status).phrase.encode("ascii")
        out = http.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
        if method != b"HEAD":
            out += http.send(h11.Data(data=body)) or b""
        out += http.send(h11.EndOfMessage()) or b""
        conn.sendall(out)
