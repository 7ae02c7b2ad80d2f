"""A loop's accept gate: its own reader on the shared listening sockets.

asyncio's ``Server.close()`` closes the listening socket, and one listener is
shared by every loop of the worker (and every worker of the master), so each
loop watches the listeners with its own ``add_reader`` and opens and closes
only that. The gate closes at the loop's ``worker_connections`` share (the
connection waits in the kernel's backlog: backpressure, never a drop), when
the worker stops or its ``max_requests`` budget is spent, and for a moment
when a responsive sibling loop holds clearly fewer connections (fairness
between the loops of a process, which the kernel's wake-ups do not give).

A mixin of ``LoopServer``, whose state it reads and writes; apart only so that
each file has one job.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

from ..http1.connection import LINGER

if TYPE_CHECKING:
    from ..budget import RequestBudget
    from ..config import ServerConfig
    from ..http1.connection import HTTPConnection
    from ..log import LoopLog
    from .server import LoopServer

#: Connections accepted per readiness event before yielding to other work.
ACCEPT_BATCH = 16
#: Seconds a loop steps aside so a less loaded sibling accepts a new connection.
FAIRNESS_PAUSE = 0.005
#: accept() errors that mean "out of a resource": back off instead of spinning.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Serialises the loops' "this gate is closed for good": the last one closes reuse_port listeners.
GATE_LOCK = threading.Lock()
#: Most connections taken from a reuse_port listener's queue before it closes (Gunicorn's
#: backlog is 2048 by default; connections still arriving meanwhile must not keep the loop busy).
BACKLOG_TAKE_LIMIT = 4096
#: Seconds a TLS handshake may take when neither POUNCE_HEADER_TIMEOUT nor keepalive bounds it.
TLS_HANDSHAKE_FALLBACK = 60.0


def tls_timeouts(config: ServerConfig) -> dict[str, float]:
    """``connect_accepted_socket``'s TLS bounds, from our own deadlines instead of asyncio's.

    asyncio (and uvloop) default to 60 s for a handshake and 30 s for the close_notify
    exchange, and the connection holds its ``worker_connections`` slot all along: a
    client that connects and says nothing held it 60 s whatever POUNCE_HEADER_TIMEOUT
    said, and every TLS close up to 30 s. The handshake gets the header timeout (a
    client is as slow sending its ClientHello as its request head), and the shutdown
    the lingering close's LINGER, as a cleartext close gets for the client's FIN.
    """
    return {
        "ssl_handshake_timeout": config.header_timeout or config.keepalive or TLS_HANDSHAKE_FALLBACK,
        "ssl_shutdown_timeout": LINGER,
    }


class AcceptGate:
    """Accepting new connections on this loop, within its share of ``worker_connections``."""

    if TYPE_CHECKING:  # LoopServer's state this mixin uses, for type checkers only
        loop: asyncio.AbstractEventLoop
        log: LoopLog
        config: ServerConfig
        budget: RequestBudget
        listeners: list[socket.socket]
        siblings: tuple[LoopServer, ...]
        ssl_context: ssl.SSLContext | None
        connection_class: type[HTTPConnection]
        setups: set[asyncio.Task[Any]]
        accepting: bool
        gate_done: bool
        fast_stop: bool
        stopping: bool
        active: int
        peak: int
        limit: int
        last_tick: float
        _backoff: asyncio.TimerHandle | None
        _stop_requested: asyncio.Future[Any] | None

    def _start_accepting(self) -> None:
        if self.accepting or self.stopping:
            return
        for sock in self.listeners:
            self.loop.add_reader(sock.fileno(), self._accept, sock)
        self.accepting = True

    def _stop_accepting(self) -> None:
        if not self.accepting:
            return
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())
        self.accepting = False

    def _accept(self, listener: socket.socket) -> None:
        if self.stopping or self.budget.exhausted or (
            self._stop_requested is not None and self._stop_requested.done()
        ):
            # A stop is queued behind this readiness event: leave the connection
            # in the backlog for a sibling or the next worker.
            self._stop_accepting()
            return
        for _ in range(ACCEPT_BATCH):
            if self.active >= self.limit:
                self._stop_accepting()
                return
            if self._sibling_should_take_it():
                # Step aside briefly: the listener is readable for every loop, and a
                # less loaded sibling (woken by the same event) accepts instead.
                self._stop_accepting()
                self._backoff = self.loop.call_later(FAIRNESS_PAUSE, self._resume_after_backoff)
                return
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # a sibling loop (or process) won the race: normal
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self.log.error("accept() failed (%s); pausing accepts for 1s", exc)
                    self._stop_accepting()
                    self._backoff = self.loop.call_later(1.0, self._resume_after_backoff)
                    return
                raise
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        """An accepted socket takes a slot and becomes a connection (``_serve``)."""
        sock.setblocking(False)
        self.active += 1
        if self.active > self.peak:
            self.peak = self.active
        setup = self.loop.create_task(self._serve(sock))
        self.setups.add(setup)
        setup.add_done_callback(self.setups.discard)

    def _gate_closed_for_good(self) -> None:
        """This loop will never accept again (it stops, or stopped before it began).

        With ``reuse_port`` the listening sockets are this worker's own (Gunicorn binds
        them in each worker), and the kernel keeps routing a share of new connections to
        an open one whether anyone accepts or not: during a drain they would wait in its
        backlog, unanswered, and be reset at exit. So the last loop to get here takes what
        already waits there (served like any connection accepted before the stop) and
        closes the sockets, and the kernel sends new connections to the other workers.
        Without ``reuse_port`` the sockets are shared with the arbiter and every worker:
        they stay open, and what waits in them is another worker's to take.
        """
        if not self.config.reuse_port or self.gate_done:
            return
        with GATE_LOCK:
            self.gate_done = True
            if not all(sibling.gate_done for sibling in self.siblings):
                return
        for listener in self.listeners:
            if not self.fast_stop:
                self._take_backlog(listener)
            listener.close()

    def _take_backlog(self, listener: socket.socket) -> None:
        # No more than this loop's free slots: worker_connections holds at a stop too.
        for _ in range(min(BACKLOG_TAKE_LIMIT, self.limit - self.active)):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self.log.warning("accept() before closing the listener failed: %s", exc)
                return
            self._admit(sock)

    def _sibling_should_take_it(self) -> bool:
        """Whether a responsive sibling loop holds clearly fewer connections than this one.

        Reads other loops' ``active``, ``accepting``, ``_backoff`` and ``last_tick``
        without a lock: plain attribute reads, and a stale value only makes the
        heuristic less fair. A sibling that has not ticked recently (blocked), is
        full, is stopping or does not watch the listeners (still in its lifespan
        startup) is ignored, so a connection never waits on a loop that cannot take
        it; the least loaded one never steps aside, so some loop always accepts.
        """
        if len(self.siblings) < 2:
            return False
        now = time.monotonic()
        fresh = self.config.tick * 2 + 0.1
        least = min(
            (s.active for s in self.siblings
             if s is not self and not s.stopping and s.active < s.limit and now - s.last_tick < fresh
             and (s.accepting or s._backoff is not None)),
            default=None,
        )
        return least is not None and self.active > least + 1

    def _resume_after_backoff(self) -> None:
        self._backoff = None
        if self.active < self.limit:
            self._start_accepting()

    async def _serve(self, sock: socket.socket) -> None:
        made: HTTPConnection | None = None

        def factory() -> HTTPConnection:
            nonlocal made
            made = self.connection_class(self)  # type: ignore[arg-type]  # self is the LoopServer
            return made

        try:
            if self.ssl_context is None:
                await self.loop.connect_accepted_socket(factory, sock)
            else:
                await self.loop.connect_accepted_socket(
                    factory, sock, ssl=self.ssl_context, **tls_timeouts(self.config)
                )
        except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self.log.debug("Connection setup failed: %s", exc)
            # The protocol exists before a TLS handshake; only connection_made (after
            # it) hands the slot to the connection, whose close releases it.
            if made is None or made.transport is None:
                sock.close()
                self._release_slot()
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _release_slot(self) -> None:
        self.active -= 1
        if not self.accepting and not self.stopping and self._backoff is None and self.active < self.limit:
            self._start_accepting()
