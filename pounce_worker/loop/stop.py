"""How a loop stops: gracefully (TERM, HUP, max_requests) or fast (QUIT, INT).

Graceful: the accept gate closes, connections accepted just before the stop
become connections (a client may already have sent its request: cancelling
would close the socket on unread data), in-flight requests finish within
``graceful_timeout`` while idle connections close, and request tasks that
outlive their connections get time to end by themselves before they are
cancelled. Fast: every connection is aborted, and request tasks get a moment
to see the disconnect. Either way the app's own leftover tasks are cancelled
and awaited before the loop closes, as ``asyncio.run()`` does.

A mixin of ``LoopServer``, whose state it reads and writes; apart only so that
each file has one job.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..http1.connection import HTTPConnection
    from ..log import LoopLog
    from ..websocket.session import WebSocketSession

#: Seconds a fast stop (QUIT, INT) gives request tasks to see the disconnect before cancelling them.
FAST_SETTLE = 0.1
#: Seconds the app's own tasks left at the end of a stop get to finish once cancelled.
LEFTOVER_GRACE = 1.0


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

    def _begin_stop(self, graceful: bool) -> None:
        if not graceful:
            self.fast_stop = True
        if self._stop_requested is not None and not self._stop_requested.done():
            self._stop_requested.set_result(None)
        elif self.fast_stop:
            for connection in list(self.connections):
                connection.transport.abort()

    async def _drain(self, deadline: float) -> None:
        """Stop accepting, let in-flight requests finish, close idle connections."""
        self.stopping = True
        self._stop_accepting()
        if self._backoff is not None:
            self._backoff.cancel()
        if self.setups and not self.fast_stop:
            # Accepted before the stop: a client may already have sent its request
            # (cancelling would close the socket on unread data: a reset). Let them
            # become connections, which shutdown() gives a moment for a first request.
            await asyncio.wait(list(self.setups), timeout=max(0.0, deadline - self.loop.time()))
        reserve = 0.0
        if self.fast_stop:
            for connection in list(self.connections):
                connection.transport.abort()
        else:
            for connection in list(self.connections):
                connection.shutdown()
            # Leave lifespan shutdown a moment of graceful_timeout.
            reserve = min(1.0, self.config.graceful_timeout * 0.2)
            if self.connections:
                self._drained = self.loop.create_future()
                try:
                    await asyncio.wait_for(
                        asyncio.shield(self._drained), max(0.0, deadline - reserve - self.loop.time())
                    )
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
            # is pending!". So they get until half the reserve to end by themselves, as
            # under uvicorn, which waits for its tasks; a fast stop gives them FAST_SETTLE,
            # time to see the disconnect of the abort above.
            settle = deadline - reserve / 2 - self.loop.time()
            await asyncio.wait(pending, timeout=max(0.0, min(settle, FAST_SETTLE) if self.fast_stop else settle))
            pending = [task for task in pending if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _cancel_leftovers(self) -> None:
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
        await asyncio.wait(leftovers, timeout=LEFTOVER_GRACE)
        for task in leftovers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.loop.call_exception_handler({
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                })
