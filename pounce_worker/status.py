"""The operator status view: one worker's loops, as JSON and as Prometheus text.

Opt-in with ``POUNCE_STATUS_BIND``. Each worker process answers on its own
address (a base port plus the first free offset, an ephemeral port, or a unix
socket path with ``{pid}``) so a scraper sees every worker separately, labelled
``worker`` (pid) and ``thread`` (loop index).

Why it runs in its own small thread and not on a loop: the view must stay
readable when a loop is stuck in a synchronous call, because that is when an
operator looks. A loop that stopped ticking shows a growing
``last_tick_age`` (and ``lag``) here while its own selector is frozen.

How the counters are read: each ``LoopServer`` owns its counters (plain ints
and floats written only by its loop thread: ``active``, ``requests``,
``rejected``, ``ticks``, ``lag``...). This thread reads them without a lock
instead of having every loop publish a snapshot object each tick. A read of
an attribute holding an int is atomic in CPython (under the GIL, and on
free-threaded builds, where attribute access is made thread-safe by the
interpreter); the worst case is that two numbers of one loop come from
instants a few microseconds apart, which is irrelevant to monitoring. The
alternative, a snapshot published per tick, would cost an allocation per loop
every tick and show numbers up to a tick old; the lock-free reads cost the
loops nothing, and keep the per-request cost at the one ``requests += 1`` the
loop already does.

Everything that turns readings into bytes (``read_loop``, ``read_worker``,
``to_json``, ``to_prometheus``, ``route``) is a pure function, tested without
sockets; ``StatusServer`` only binds, accepts and speaks HTTP/1.1 with h11.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11

from . import mode as _mode

BIND_ENV = "POUNCE_STATUS_BIND"
ALLOW_REMOTE_ENV = "POUNCE_STATUS_ALLOW_REMOTE"
#: Seconds one status client may take to send its request; the view serves one client at a time.
CLIENT_TIMEOUT = 2.0
#: How often the accept loop checks whether the worker is stopping.
POLL_INTERVAL = 0.25
JSON_TYPE = b"application/json"
PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


# -- the setting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusBind:
    """Where each worker's status view listens, as parsed from ``POUNCE_STATUS_BIND``.

    ``span`` is how many consecutive ports a worker may try from ``port``:
    twice the number of workers, so a replacement worker booting while the
    one it replaces still drains finds a free port.
    """

    family: int
    host: str = ""
    port: int = 0
    path: str = ""
    span: int = 1

    def candidates(self, pid: int) -> list[Any]:
        """The addresses this worker tries, in order."""
        if self.family == socket.AF_UNIX:
            return [self.path.replace("{pid}", str(pid))]
        if self.port == 0:
            return [(self.host, 0)]
        return [(self.host, port) for port in range(self.port, min(65536, self.port + self.span))]


def parse_bind(text: str, allow_remote: bool, workers: int) -> StatusBind | None:
    """``POUNCE_STATUS_BIND`` to a ``StatusBind``; None when empty (the view is off).

    Accepts ``HOST:PORT`` with an IP literal or ``localhost`` (``[::1]:PORT``
    for IPv6) and ``unix:PATH`` where PATH contains ``{pid}``. Raises
    ``ValueError`` naming the setting for anything else, and for a
    non-loopback host unless ``POUNCE_STATUS_ALLOW_REMOTE=1``: the view tells
    anyone who can reach it how loaded the worker is.
    """
    text = text.strip()
    if not text:
        return None
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if "{pid}" not in path or not path.startswith("/"):
            raise ValueError(
                f"{BIND_ENV}={text!r}: a unix socket path must be absolute and contain {{pid}} "
                "so that every worker process gets its own file, e.g. unix:/run/pounce/status-{pid}.sock"
            )
        return StatusBind(socket.AF_UNIX, path=path)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(
            f"{BIND_ENV}={text!r} is not HOST:PORT (e.g. 127.0.0.1:9100, [::1]:9100) "
            "or unix:PATH-with-{pid}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{BIND_ENV}={text!r}: the host must be an IP address or localhost") from None
    if not address.is_loopback and not allow_remote:
        raise ValueError(
            f"{BIND_ENV}={text!r} is not a loopback address; the status view is meant for "
            f"operators on the machine. Set {ALLOW_REMOTE_ENV}=1 to expose it anyway."
        )
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return StatusBind(family, host=host, port=int(port_text), span=max(2, 2 * workers))


# -- readings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopReading:
    """One loop's numbers at one instant."""

    thread: int
    connections: int
    connection_limit: int
    peak_connections: int
    accept_paused: bool
    accept_paused_reason: str | None
    stopping: bool
    requests: int
    rejected: int
    lag: float
    last_tick_age: float
    ticks: int
    lag_total: float


@dataclass(frozen=True, slots=True)
class WorkerFacts:
    """What does not change during a worker's life, captured at boot."""

    pid: int
    mode: str
    loops: int
    tick: float
    max_requests: int
    started_monotonic: float
    started_wall: float
    interpreter: str = platform.python_implementation()
    python_version: str = platform.python_version()


@dataclass(frozen=True, slots=True)
class WorkerReading:
    facts: WorkerFacts
    gil_enabled: bool
    uptime: float
    max_requests_spent: int
    address: str
    loops: tuple[LoopReading, ...]


def read_loop(server: Any, now: float, budget_exhausted: bool = False) -> LoopReading:
    """Read a ``LoopServer``'s counters from another thread (lock-free: see the module docstring).

    ``lag`` is how late the loop's last tick fired, or, for a loop that has
    not ticked for longer than a tick interval (blocked), how late the
    missing tick already is: so a stuck loop's lag grows while it is stuck,
    not only once it recovers.
    """
    accepting = bool(server.accepting)
    active = int(server.active)
    stopping = bool(server.stopping)
    age = max(0.0, now - server.last_tick)
    reason = None
    if not accepting:
        if stopping or server.finished:
            reason = "stopping"
        elif budget_exhausted:
            reason = "max_requests"
        elif active >= server.limit:
            reason = "full"
        elif server.loop is None or not server.started.is_set():
            reason = "starting"
        else:
            reason = "backoff"
    return LoopReading(
        thread=server.index,
        connections=active,
        connection_limit=server.limit,
        peak_connections=server.peak,
        accept_paused=not accepting,
        accept_paused_reason=reason,
        stopping=stopping,
        requests=server.requests,
        rejected=server.rejected,
        lag=max(0.0, server.lag, age - server.config.tick),
        last_tick_age=age,
        ticks=server.ticks,
        lag_total=server.lag_total,
    )


def read_worker(facts: WorkerFacts, servers: Sequence[Any], budget: Any, address: str) -> WorkerReading:
    now = time.monotonic()
    exhausted = bool(budget.exhausted)
    return WorkerReading(
        facts=facts,
        gil_enabled=_mode.gil_enabled(),
        uptime=now - facts.started_monotonic,
        max_requests_spent=budget.spent,
        address=address,
        loops=tuple(read_loop(server, now, exhausted) for server in servers),
    )


# -- formats -----------------------------------------------------------------------------------


def to_json(reading: WorkerReading) -> bytes:
    facts = reading.facts
    loops = [
        {
            "thread": loop.thread,
            "connections": loop.connections,
            "connection_limit": loop.connection_limit,
            "peak_connections": loop.peak_connections,
            "accept_paused": loop.accept_paused,
            "accept_paused_reason": loop.accept_paused_reason,
            "stopping": loop.stopping,
            "requests": loop.requests,
            "rejected": loop.rejected,
            "lag": round(loop.lag, 6),
            "last_tick_age": round(loop.last_tick_age, 6),
            "ticks": loop.ticks,
            "lag_total": round(loop.lag_total, 6),
        }
        for loop in reading.loops
    ]
    document = {
        "worker": {
            "pid": facts.pid,
            "mode": facts.mode,
            "loops": facts.loops,
            "interpreter": f"{facts.interpreter} {facts.python_version}",
            "gil_enabled": reading.gil_enabled,
            "uptime": round(reading.uptime, 3),
            "started_at": round(facts.started_wall, 3),
            "tick": facts.tick,
            "max_requests": {
                "spent": reading.max_requests_spent,
                "limit": facts.max_requests if facts.max_requests > 0 else None,
            },
            "status_address": reading.address,
        },
        "totals": {
            "connections": sum(loop.connections for loop in reading.loops),
            "requests": sum(loop.requests for loop in reading.loops),
            "rejected": sum(loop.rejected for loop in reading.loops),
            "accept_paused_loops": sum(1 for loop in reading.loops if loop.accept_paused),
        },
        "loops": loops,
    }
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def _label(value: object) -> str:
    """A label value escaped as the exposition format requires (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(round(value, 6))


#: Per-loop metrics: (name, type, help, reading attribute).
LOOP_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("pounce_requests_total", "counter",
     "Requests served to the end of their response, per event loop.", "requests"),
    ("pounce_requests_rejected_total", "counter",
     "Requests refused before reaching the app (malformed or over a limit: 4xx and close).", "rejected"),
    ("pounce_connections_open", "gauge",
     "Connections accepted and not yet closed (keep-alive idle ones included).", "connections"),
    ("pounce_connections_limit", "gauge",
     "This loop's share of worker_connections; at it the loop stops accepting.", "connection_limit"),
    ("pounce_connections_peak", "gauge",
     "Most connections this loop held at once since the worker booted.", "peak_connections"),
    ("pounce_accept_paused", "gauge",
     "1 while the loop does not accept (full, stepping aside, stopping), else 0.", "accept_paused"),
    ("pounce_loop_lag_seconds", "gauge",
     "How late the loop's last tick fired, or how late the pending one already is.", "lag"),
    ("pounce_loop_last_tick_age_seconds", "gauge",
     "Seconds since the loop last ran its tick; grows while the loop is blocked.", "last_tick_age"),
    ("pounce_loop_ticks_total", "counter",
     "Ticks the loop ran (one per POUNCE_SHUTDOWN_TICK seconds when healthy).", "ticks"),
    ("pounce_loop_tick_delay_seconds_total", "counter",
     "Sum of tick lateness; rate() of it over rate() of ticks is the mean lag.", "lag_total"),
)


def to_prometheus(reading: WorkerReading) -> str:
    """The Prometheus text exposition format (0.0.4), one family per block."""
    facts = reading.facts
    worker = _label(facts.pid)
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("pounce_worker_info", "gauge", "Always 1; the labels describe the worker process.")
    gil = "enabled" if reading.gil_enabled else "disabled"
    lines.append(
        f'pounce_worker_info{{worker="{worker}",mode="{_label(facts.mode)}",'
        f'implementation="{_label(facts.interpreter)}",python_version="{_label(facts.python_version)}",'
        f'gil="{gil}"}} 1'
    )
    worker_values: list[tuple[str, str, str, float | None]] = [
        ("pounce_worker_loops", "gauge", "Event loops (threads) this worker runs.", facts.loops),
        ("pounce_worker_gil_enabled", "gauge", "1 when the interpreter runs with a GIL.", reading.gil_enabled),
        ("pounce_worker_uptime_seconds", "gauge", "Seconds since the worker booted.", reading.uptime),
        ("pounce_worker_start_time_seconds", "gauge", "Unix time the worker booted.", facts.started_wall),
        ("pounce_worker_max_requests_spent", "gauge",
         "Requests counted toward max_requests (the worker restarts when it reaches the limit).",
         reading.max_requests_spent),
        ("pounce_worker_max_requests_limit", "gauge",
         "max_requests for this worker, jitter included (absent when unlimited).",
         facts.max_requests if facts.max_requests > 0 else None),
    ]
    for name, kind, help_text, value in worker_values:
        if value is None:
            continue
        family(name, kind, help_text)
        lines.append(f'{name}{{worker="{worker}"}} {_number(value)}')
    for name, kind, help_text, attribute in LOOP_METRICS:
        family(name, kind, help_text)
        for loop in reading.loops:
            lines.append(f'{name}{{worker="{worker}",thread="{loop.thread}"}} {_number(getattr(loop, attribute))}')
    return "\n".join(lines) + "\n"


def route(method: bytes, target: bytes, read: Callable[[], WorkerReading]) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for one request to the status view."""
    if method not in (b"GET", b"HEAD"):
        return 405, b"text/plain; charset=utf-8", b"Only GET and HEAD are served here.\n"
    path = target.split(b"?", 1)[0]
    if path in (b"/", b"/status"):
        return 200, JSON_TYPE, to_json(read())
    if path == b"/metrics":
        return 200, PROMETHEUS_TYPE, to_prometheus(read()).encode("utf-8")
    return 404, b"text/plain; charset=utf-8", b"Not found. Try /status (JSON) or /metrics (Prometheus).\n"


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
