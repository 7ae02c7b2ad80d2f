"""The operator status view's readings: one worker's loops, as JSON and as Prometheus text.

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

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import mode as _mode

JSON_TYPE = b"application/json"
PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

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
    #: HTTP/2 streams open (each HTTP/2 connection holds one connection slot however many it carries).
    streams: int = 0


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
        streams=int(getattr(server, "streams", 0)),
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
            "streams": loop.streams,
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
            "streams": sum(loop.streams for loop in reading.loops),
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
    ("pounce_http2_streams_open", "gauge",
     "HTTP/2 streams open on this loop's connections (one connection slot each connection).", "streams"),
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


