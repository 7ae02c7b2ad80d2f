"""How a loop stops: gracefully (TERM, HUP, max_requests) or fast (QUIT, INT).

Graceful: the accept gate closes, connections accepted just before the stop
become connections (a client may already have sent its request: cancelling
would close the socket on unread data) unless their TLS handshake takes more
than a moment, in-flight requests finish within ``graceful_timeout`` while idle
connections close, and request tasks that outlive their connections get time
to end by themselves before they are cancelled; each step ends within its slice
of ``StopPlan``, so lifespan shutdown ends before the arbiter's SIGKILL. Fast:
every connection is aborted, and request tasks get a moment to see the
disconnect. Either way the app's own leftover tasks are cancelled and awaited
before the loop closes, as ``asyncio.run()`` does.

A mixin of ``LoopServer``, whose state it reads and writes; apart only so that
each file has one job.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..http1.connection import FIRST_REQUEST_GRACE

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..http1.connection import HTTPConnection
    from ..log import LoopLog
    from ..websocket.session import WebSocketSession

#: Seconds a fast stop (QUIT, INT) gives request tasks to see the disconnect before cancelling them.
FAST_SETTLE = 0.1
#: Seconds the app's own tasks left at the end of a stop get to finish once cancelled.
LEFTOVER_GRACE = 1.0
#: Seconds a fast stop gives the request tasks it cancelled to end.
FAST_CANCEL_WAIT = 1.0
#: Most of graceful_timeout's end a graceful stop keeps for what follows the drain (see StopPlan).
STOP_RESERVE = 2.0


@dataclass(frozen=True, slots=True)
class StopPlan:
    """When each step of a graceful stop must end, counted back from the arbiter's SIGKILL.

    The arbiter SIGKILLs what is left of a worker ``graceful_timeout`` after its TERM (D).
    A step that started with "whatever remains, at least a second" could run past D, and
    lifespan shutdown, the step users care about, was the one killed. So every step has
    its slice of a reserve R = min(2 s, 25 % of graceful_timeout) before D: connections
    drain until D-R; request tasks that outlive them end by themselves until D-0.95R and,
    cancelled, until D-0.9R; lifespan shutdown runs until D-0.4R (so at least 0.5R, and
    nearly all of graceful_timeout when nothing was in flight), its task ends until
    D-0.3R, the app's leftover tasks until D-0.2R. The rest (0.4 s by default) is for the
    thread and the process to exit (measured: tens of ms) and for the TERM's delivery
    (D is counted from the loop's receipt, the arbiter's from its sending).
    """

    deadline: float
    reserve: float

    @classmethod
    def starting(cls, now: float, graceful_timeout: float) -> StopPlan:
        return cls(now + graceful_timeout, min(STOP_RESERVE, 0.25 * graceful_timeout))

    def _at(self, fraction: float) -> float:
        return self.deadline - fraction * self.reserve

    @property
    def drain(self) -> float:
        return self._at(1.0)

    @property
    def tasks(self) -> float:
        return self._at(0.95)

    @property
    def tasks_cancelled(self) -> float:
        return self._at(0.9)

    @property
    def lifespan(self) -> float:
        return self._at(0.4)

    @property
    def lifespan_task(self) -> float:
        return self._at(0.3)

    @property
    def leftovers(self) -> float:
        return self._at(0.2)


class GracefulStop:
    """Draining a loop's connections and tasks when the worker stops."""

    if TYPE_CHECKING:  # LoopServer's state and methods this mixin uses, for type checkers only
        loop: asyncio.AbstractEventLoop
        log: LoopLog
        config: ServerConfig
        connections: set[HTTPConnection | WebSocketSession]
        setups: set[asyncio.Task[Any]]
        tasks: set[asyncio.Task[Any]]
        stopping: bool
        fast_stop: bool
        _backoff: asyncio.TimerHandle | None
        _stop_requested: asyncio.Future[Any] | None
        _drained: asyncio.Future[None] | None

        def _stop_accepting(self) -> None: ...

        def _gate_closed_for_good(self) -> None: ...

    def _begin_stop(self, graceful: bool) -> None:
        if not graceful:
            self.fast_stop = True
        if self._stop_requested is not None and not self._stop_requested.done():
            self._stop_requested.set_result(None)
        elif self.fast_stop:
            for connection in list(self.connections):
                connection.transport.abort()

    async def _drain(self, plan: StopPlan) -> None:
        """Stop accepting, let in-flight requests finish, close idle connections."""
        self.stopping = True
        self._stop_accepting()
        if self._backoff is not None:
            self._backoff.cancel()
        self._gate_closed_for_good()
        if self.setups and not self.fast_stop:
            # Accepted before the stop: a client may already have sent its request
            # (cancelling would close the socket on unread data: a reset). Let them
            # become connections, which shutdown() gives a moment for a first request.
            # A moment only: a TLS client that never sends its ClientHello would hold
            # the stop to its handshake timeout. The rest are cancelled (their socket
            # closed, their slot freed).
            moment = min(plan.drain, self.loop.time() + FIRST_REQUEST_GRACE)
            await asyncio.wait(list(self.setups), timeout=self._left(moment))
            for setup in list(self.setups):
                setup.cancel()
            if self.setups:
                await asyncio.wait(list(self.setups), timeout=self._left(plan.drain))
        if self.fast_stop:
            for connection in list(self.connections):
                connection.transport.abort()
        else:
            for connection in list(self.connections):
                connection.shutdown()
            if self.connections:
                self._drained = self.loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(self._drained), self._left(plan.drain))
                except asyncio.TimeoutError:
                    self.log.warning(
                        "graceful_timeout=%ss expired with %d connections open; closing them",
                        self.config.graceful_timeout,
                        len(self.connections),
                    )
                for connection in list(self.connections):
                    connection.transport.abort()
        current = asyncio.current_task()
        pending = [task for task in self.tasks if task is not current]
        if pending:
            # A request's app call outlives its connection: after the response (Django closes
            # the response and sends request_finished in a thread) and after a disconnect
            # (Django cancels its own view task and waits for it). Cancelled halfway, an app
            # that awaits its own tasks with asyncio.wait (Django 5.2's ASGIHandler) leaves
            # them orphaned: "Task exception was never retrieved", "Task was destroyed but it
            # is pending!". So they get until the plan's step to end by themselves, as under
            # uvicorn, which waits for its tasks; a fast stop gives them FAST_SETTLE, time to
            # see the disconnect of the abort above.
            settle = min(FAST_SETTLE, self._left(plan.tasks)) if self.fast_stop else self._left(plan.tasks)
            await asyncio.wait(pending, timeout=settle)
            pending = [task for task in pending if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            wait = FAST_CANCEL_WAIT if self.fast_stop else self._left(plan.tasks_cancelled)
            await asyncio.wait(pending, timeout=wait)

    def _left(self, until: float) -> float:
        """Seconds from now to ``until`` (a loop time), never negative."""
        return max(0.0, until - self.loop.time())

    async def _cancel_leftovers(self, until: float) -> None:
        """Cancel the tasks still pending on this loop (the app's own) and let them finish.

        asyncio.run() does this before closing its loop (so uvicorn does): a task left
        pending when the loop closes never runs its cleanup, and is reported as "Task
        was destroyed but it is pending!" when collected. Exceptions other than the
        cancellation are reported as asyncio.run() reports them.
        """
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks(self.loop) if task is not current]
        if not leftovers:
            return
        for task in leftovers:
            task.cancel()
        await asyncio.wait(leftovers, timeout=min(LEFTOVER_GRACE, self._left(until)))
        for task in leftovers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.loop.call_exception_handler({
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                })
