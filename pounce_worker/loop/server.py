"""One event-loop thread: its accept gate, its connections, its lifespan.

Every ``LoopServer`` is created by the worker's main thread and then touched
only from its own loop thread; the main thread talks to it through the
thread-safe methods at the bottom (``request_stop``) and reads two plain
attributes (``last_tick``, ``active``) for the heartbeat and the status log.
The status view (status.py) reads the counters the same way, lock-free.

The accept gate: each loop registers the *shared* listening sockets with its
own selector and accepts at most a small batch per wake-up, re-checking its
connection limit before each ``accept()``. At the limit it unregisters, so new
connections wait in the kernel backlog for a sibling loop (or a later accept)
instead of being accepted and parked here: this is backpressure, never refusal.
asyncio's ``create_server`` is not used because its ``Server.close()`` would
close a listening socket that the other loops still serve, and because it
accepts up to ``backlog`` connections per wake-up regardless of any limit.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import ssl
import sys
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..asgi import ASGIApp
from ..asgi.hooks import Hooks
from ..asgi.lifespan import Lifespan, LifespanFailure
from ..config import ServerConfig
from ..http1.connection import HTTPConnection
from ..http1.frame import ResponseHeaderCache
from ..http1.parse import FieldCache
from ..log import LoopLog
from .gate import AcceptGate
from .stop import GracefulStop, StopPlan

if TYPE_CHECKING:
    from ..asgi.cycle import RequestCycle
    from ..asgi.exchange import Exchange
    from ..budget import RequestBudget
    from ..websocket.session import WebSocketSession

#: asyncio.Task where it can start eagerly (3.12+: ``eager_start=True``, passed at the call: a
#: functools.partial with keywords would build a dict per request), or None.
EAGER: Any = None
if hasattr(asyncio, "eager_task_factory"):
    EAGER = asyncio.Task
#: Seconds a cancelled lifespan task gets to end (its ``finally`` blocks) before it is abandoned.
LIFESPAN_CANCEL_WAIT = 1.0


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A fresh loop of the kind ``resolve_loop_kind`` chose for this worker."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopServer(AcceptGate, GracefulStop):
    #: Slots, not a __dict__: a loop's server is read on every request's path, and CPython keeps
    #: an instance's attributes inline only up to 30 of them (this class has more).
    __slots__ = (
        "_backoff", "_drained", "_early_stop", "_holding", "_pending_heads", "_stop_lock", "_stop_requested",
        "_stop_time",
        "_tick_due", "accepting", "active", "app", "bare_requests", "budget", "clock_requests", "config",
        "connection_class", "connections", "counted", "date_header", "deadline_base", "default_lines",
        "eager_exchange", "fast_stop", "finished", "gate_done", "header_blocks", "hooks", "index", "known_fields",
        "known_hosts", "lag", "lag_total", "last_tick", "limit", "listeners", "log", "loop", "loop_kind",
        "peak", "rejected", "requests", "setups", "siblings", "ssl_context", "started", "startup_began",
        "startup_error", "state", "stopping", "tasks", "thread", "ticks", "worker",
    )

    def __init__(
        self,
        index: int,
        config: ServerConfig,
        app: ASGIApp,
        listeners: list[socket.socket],
        ssl_context: ssl.SSLContext | None,
        worker: Any,
        hooks: Hooks,
        log: LoopLog,
        budget: RequestBudget,
        loop_kind: str,
    ) -> None:
        self.index = index
        self.startup_began = 0.0
        self._drained: asyncio.Future[None] | None = None
        self.config = config
        self.app = app
        self.listeners = listeners
        self.ssl_context = ssl_context
        self.worker = worker
        self.hooks = hooks
        self.log = log
        self.budget = budget
        # Whether requests count toward max_requests at all (saves a call per request).
        self.counted = budget.limit != sys.maxsize
        self.loop_kind = loop_kind
        self.limit = config.connections_for(index)
        # Every loop of this worker (set once by the worker, then read-only).
        self.siblings: tuple[LoopServer, ...] = ()
        self.state: dict[str, Any] = {}
        # HTTP connections, and WebSocket sessions (websocket.py) that took one over.
        self.connections: set[HTTPConnection | WebSocketSession] = set()
        # What each accepted connection is: uwsgi.py's subclass speaks uwsgi (protocol = "uwsgi").
        self.connection_class: type[HTTPConnection] = HTTPConnection
        if config.protocol == "uwsgi":
            from ..http1.uwsgi import UwsgiConnection

            self.connection_class = UwsgiConnection
        # Response header blocks already checked and rendered (this loop only, bounded).
        self.header_blocks = ResponseHeaderCache()
        # Request fields already parsed (fastpath.parse_head; this loop only, bounded).
        self.known_fields = FieldCache()
        # Host values already found valid (validate.check_parsed; this loop only).
        self.known_hosts: set[bytes] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        # The request whose app runs in an eager first step right now (spawn_request).
        self.eager_exchange: Exchange | None = None
        # Responses whose head waits for the next loop iteration (flush_head_soon).
        self._pending_heads: list[Exchange] = []
        # Connections holding complete responses until the iteration ends (HTTPConnection.hold).
        self._holding: list[HTTPConnection] = []
        # Accepted sockets whose transport is still being set up (TLS handshake...).
        self.setups: set[asyncio.Task[None]] = set()
        # Accepted sockets, counted from accept() until the connection closes.
        self.active = 0
        self.peak = 0
        self.accepting = False
        # Set once this loop will never accept again (gate.py: _gate_closed_for_good).
        self.gate_done = False
        self.stopping = False
        self.fast_stop = False
        self.requests = 0
        self.rejected = 0
        # HTTP/2 streams open on this loop's connections (http2/connection.py), for the status view.
        self.streams = 0
        self.last_tick = time.monotonic()
        # What connection deadlines count from: see HTTPConnection._arm_header_timer.
        self.deadline_base = self.last_tick + config.tick
        # Whether requests need their start time read (RequestCycle.start_time).
        self.clock_requests = bool(log.access_wanted or hooks.post_request is not None or config.server_timing)
        # Whether nothing wraps a request's app call (no hooks, access log, compression or
        # Server-Timing): RequestCycle.run then keeps to the call and its checks.
        self.bare_requests = (
            hooks.pre_request is None and hooks.post_request is None and not log.access_wanted
            and config.compression is None and not config.server_timing
        )
        # Tick lateness for the status view (status.py reads these without a lock).
        self.ticks = 0
        self.lag = 0.0
        self.lag_total = 0.0
        self._tick_due = 0.0
        self.date_header = b""
        # "server: …\r\ndate: …\r\n", the default response header lines, remade each tick.
        self.default_lines = b""
        self._set_date()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.thread: threading.Thread | None = None
        self.started = threading.Event()
        # Set when the loop has drained and shut down: its ticks stop on purpose.
        self.finished = False
        self.startup_error: BaseException | None = None
        self._stop_requested: asyncio.Future[None] | None = None
        # A stop asked for before this loop existed (None: none; True: graceful; False: fast).
        # Written by the main thread (request_stop) and read by the loop thread (run) while it
        # publishes ``loop``; the lock makes "record the stop" and "is the loop there?" one
        # step on each side, so a stop racing the loop's creation is delivered exactly once.
        self._stop_lock = threading.Lock()
        self._early_stop: bool | None = None
        #: When the main thread asked this loop to stop (time.monotonic; 0 until then): the stop's
        #: plan counts from there, not from when a busy loop got round to it (the arbiter does).
        self._stop_time = 0.0
        self._backoff: asyncio.TimerHandle | None = None

    # -- thread body -----------------------------------------------------------

    def run(self) -> None:
        """Thread target: own a loop from creation to close.

        Any failure before serving (the loop cannot be created, lifespan
        startup fails) is left in ``startup_error`` for the main thread, which
        then exits with Gunicorn's boot-error code instead of waiting forever.
        """
        loop = None
        try:
            loop = new_event_loop(self.loop_kind)
            # The stop future exists before the loop is published, so a stop the main
            # thread sends at once (call_soon_threadsafe) always finds it.
            self._stop_requested = loop.create_future()
            with self._stop_lock:
                self.loop = loop
                early = self._early_stop
            loop.set_exception_handler(self._loop_exception)
            asyncio.set_event_loop(loop)
            if early is not None:
                # TERM/INT/QUIT came while the loop was being created (uvloop's import
                # takes a while): request_stop found no loop and left it here.
                self._begin_stop(early)
            loop.run_until_complete(self._main())
        except BaseException as exc:
            if not self.started.is_set():
                self.startup_error = exc
            self.log.exception("Event loop stopped by an error")
        finally:
            self.started.set()
            if loop is not None:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    asyncio.set_event_loop(None)
                    loop.close()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Errors the loop catches itself (in callbacks) go to Gunicorn's error log, tagged."""
        exc = context.get("exception")
        message = context.get("message", "Unhandled error in event loop")
        if exc is not None:
            self.log.error("%s", message, exc_info=exc)
        else:
            self.log.error("%s", message)

    async def _main(self) -> None:
        assert self._stop_requested is not None
        self._tick()
        lifespan = Lifespan(self.app, self.config.lifespan, self.log, self.state)
        if not await self._startup(lifespan):
            self._gate_closed_for_good()
            self.finished = True
            self.started.set()
            return
        self._start_accepting()
        self.started.set()
        await self._stop_requested
        late = time.monotonic() - self._stop_time if self._stop_time else 0.0
        plan = StopPlan.starting(self.loop.time() - late, self.config.graceful_timeout)
        await self._drain(plan)
        if self.fast_stop:
            # QUIT/INT skip lifespan shutdown (as Gunicorn's -k asgi); the app's lifespan
            # task, still waiting for that message, is cancelled instead of left pending.
            await lifespan.close(0.0, LIFESPAN_CANCEL_WAIT)
        else:
            try:
                await asyncio.wait_for(lifespan.shutdown(), self._left(plan.lifespan))
            except asyncio.TimeoutError:
                self.log.error(
                    "ASGI lifespan shutdown did not complete within graceful_timeout=%gs; cancelling it",
                    self.config.graceful_timeout,
                )
                await lifespan.close(0.0, self._left(plan.lifespan_task))
            else:
                left = self._left(plan.lifespan_task)
                await lifespan.close(left / 2, left / 2)
        await self._cancel_leftovers(plan.leftovers)
        self.finished = True

    #: When this loop's lifespan startup began (time.monotonic(); 0: not yet). Written once by
    #: the loop thread, read by the main thread (ThreadWorker._wait_started): a plain float.

    async def _startup(self, lifespan: Lifespan) -> bool:
        """Lifespan startup, bounded by POUNCE_LIFESPAN_STARTUP_TIMEOUT and cut short by a stop.

        True when the loop may serve. False when it must not: startup failed or did
        not complete in time (``startup_error`` is set and the worker exits with the
        boot-error code), or a stop signal came first (the worker exits normally).
        A stop during startup, graceful or not, cancels it: nothing is served yet, so
        there is nothing to finish, and Gunicorn's workers also exit on TERM during boot.
        """
        assert self._stop_requested is not None
        if self._stop_requested.done():
            self.log.info("Stop requested before ASGI lifespan startup; not starting")
            return False
        limit = self.config.lifespan_startup_timeout
        self.startup_began = time.monotonic()
        startup = self.loop.create_task(lifespan.startup())
        await asyncio.wait(
            {startup, self._stop_requested}, timeout=limit or None, return_when=asyncio.FIRST_COMPLETED
        )
        if startup.done():
            try:
                startup.result()
            except LifespanFailure as exc:
                self.log.error("ASGI lifespan startup failed: %s", exc)
                self.startup_error = exc
                await lifespan.close(LIFESPAN_CANCEL_WAIT, LIFESPAN_CANCEL_WAIT)
                return False
            return True
        startup.cancel()
        await asyncio.wait({startup})  # our own coroutine, waiting on a queue: ends at once
        if self._stop_requested.done():
            self.log.info("Stop requested during ASGI lifespan startup; cancelling it")
        else:
            self.log.error("ASGI lifespan startup did not complete within POUNCE_LIFESPAN_STARTUP_TIMEOUT=%gs", limit)
            self.startup_error = LifespanFailure(f"startup did not complete within {limit:g}s")
        await lifespan.close(0.0, LIFESPAN_CANCEL_WAIT)
        return False

    def _tick(self) -> None:
        """Heartbeat for the main thread, the Date header, and connection deadlines.

        Also the loop's lag probe: how much later than scheduled this tick ran
        is how long ready callbacks waited behind other work (or a blocking call).
        """
        now = time.monotonic()
        if self._tick_due:
            # call_later may fire up to the clock resolution early: never negative.
            self.lag = max(0.0, now - self._tick_due)
            self.lag_total += self.lag
        self.ticks += 1
        self._tick_due = now + self.config.tick
        self.last_tick = now
        self.deadline_base = now + self.config.tick
        if not self.loop.is_closed():
            self.loop.call_later(self.config.tick, self._tick)
        self._set_date()
        self.sweep()

    def _set_date(self) -> None:
        date = email.utils.formatdate(usegmt=True).encode("ascii")
        if date != self.date_header:
            self.date_header = date
            self.default_lines = b"server: %s\r\ndate: %s\r\n" % (self.config.server_header, date)

    def sweep(self) -> None:
        """Fire connection deadlines (keep-alive idle, header timeout) that have passed.

        One pass per tick instead of a TimerHandle armed and cancelled per
        request. Deadlines are armed from ``deadline_base`` (the last tick plus
        one tick) rather than a clock read per request, so they fire at most
        two ticks late, and early only by as much as the loop lags.
        """
        now = time.monotonic()
        for connection in [c for c in self.connections if c.deadline and c.deadline <= now]:
            try:
                connection.on_deadline()
            except Exception:
                self.log.exception("Error closing a connection past its deadline")
                connection.transport.abort()

    # -- callbacks from connections --------------------------------------------

    def connection_opened(self, connection: HTTPConnection) -> None:
        self.connections.add(connection)
        if self.stopping:
            connection.shutdown()

    def connection_upgraded(self, connection: HTTPConnection, session: WebSocketSession) -> None:
        """A WebSocket session took over the connection: it keeps the slot, and a stop closes it with 1012."""
        self.connections.discard(connection)
        self.connections.add(session)
        if self.stopping:
            session.shutdown()

    def connection_closed(self, connection: HTTPConnection | WebSocketSession) -> None:
        self.connections.discard(connection)
        self._release_slot()
        if self.stopping and not self.connections and self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)

    def request_done(self) -> None:
        self.requests += 1
        if self.counted and self.budget.spend():
            self.worker.budget_exhausted()

    def request_rejected(self) -> None:
        self.rejected += 1

    def spawn_request(self, cycle: RequestCycle) -> None:
        """Run a request's app call, eagerly where asyncio can (3.12+).

        An eager task runs the app at once, until its first real suspension;
        most requests complete without one, saving a task scheduling round
        trip. Only our request tasks are eager: the app's own create_task()
        keeps the loop's usual semantics.

        While ``eager_exchange`` names the exchange whose app is running, its
        response head is held back instead of being scheduled with call_soon:
        the body usually follows in the same step and both leave in one write.
        If the app suspends first, the head is flushed here, as it waits.
        """
        coro = cycle.run()
        if EAGER is not None:
            exchange = cycle.exchange
            outer, self.eager_exchange = self.eager_exchange, exchange
            try:
                task = EAGER(coro, loop=self.loop, eager_start=True)
            finally:
                self.eager_exchange = outer
            if task.done():
                return
            exchange.flush()
        else:
            task = self.loop.create_task(coro)
        cycle.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def flush_head_soon(self, exchange: Exchange) -> None:
        """Write ``exchange``'s response head at the next loop iteration unless its body takes it first.

        One callback per loop iteration for all responses started in it, not
        one per response: under load many start in the same iteration.
        """
        pending = self._pending_heads
        pending.append(exchange)
        if len(pending) == 1:
            self.loop.call_soon(self._flush_heads)

    def hold(self, connection: HTTPConnection) -> None:
        """Release ``connection``'s held responses with all the others, in one callback."""
        holding = self._holding
        holding.append(connection)
        if len(holding) == 1:
            self.loop.call_soon(self._release_held)

    def _release_held(self) -> None:
        holding, self._holding = self._holding, []
        for connection in holding:
            connection.release()

    def _flush_heads(self) -> None:
        pending, self._pending_heads = self._pending_heads, []
        for exchange in pending:
            exchange.flush()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine of ours (a WebSocket session's app call) as a tracked task.

        Tracked so that a stop can cancel what is left after the drain.
        """
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- thread-safe entry points (called from the worker's main thread) ----------

    def request_stop(self, graceful: bool) -> None:
        with self._stop_lock:
            # Kept for run() in case the loop does not exist yet; fast wins over graceful.
            self._early_stop = graceful and self._early_stop is not False
            if not self._stop_time:
                self._stop_time = time.monotonic()
            loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._begin_stop, graceful)
        except RuntimeError:
            pass  # the loop closed between the check and the call

    def snapshot(self) -> dict[str, Any]:
        """Numbers for the status log; plain reads, fine to race with the loop."""
        return {
            "loop": self.index,
            "connections": self.active,
            "limit": self.limit,
            "accepting": self.accepting,
            "requests": self.requests,
            "lag": round(time.monotonic() - self.last_tick, 3),
        }
