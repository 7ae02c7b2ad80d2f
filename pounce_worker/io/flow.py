"""Write flow control: writers wait while the transport's buffer is above its high-water mark.

asyncio tells a protocol ``pause_writing`` when the transport's write buffer
passes its high-water mark and ``resume_writing`` when it drains below the low
one; a writer that ignores it grows the buffer without bound (an app streaming
to a client that does not read). Every connection kind (HTTP/1.1, WebSocket)
keeps one ``WriteFlow``: its protocol callbacks call ``pause``/``resume``, its
``connection_lost`` calls ``close``, and whoever writes awaits ``wait`` first.

A waiter loops until the transport takes more or is gone, so a pause that
comes back before it runs is waited out too. A deadline (POUNCE_SEND_TIMEOUT
for HTTP) calls ``on_stall`` once the client has taken nothing of the buffer
for that long: a client that stops reading must not hold its connection slot
forever, but one that reads a large response slowly is not cut off (nginx's
``send_timeout`` is likewise "between two successive write operations").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class WriteFlow:
    """One connection's writers waiting for its transport to drain; owned by its loop."""

    __slots__ = ("closed", "paused", "waiters")

    def __init__(self) -> None:
        self.paused = False
        self.closed = False
        self.waiters: list[asyncio.Future[None]] = []

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake()

    def close(self) -> None:
        """The transport is gone: every waiter returns, and no write waits again."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(
        self, loop: asyncio.AbstractEventLoop, timeout: float = 0.0, on_stall: Callable[[], None] | None = None,
        pending: Callable[[], int] | None = None,
    ) -> None:
        """Until the transport takes more, or is gone; ``on_stall`` once ``timeout`` seconds (0: never)
        pass in which ``pending()`` (the transport's buffered bytes) did not go down."""
        if not self.paused or self.closed:
            return
        timer: Any = None
        if timeout and on_stall is not None:
            # Checked every quarter of ``timeout`` (and at the deadline itself): the client's last
            # progress is known to that precision, so a stall is declared between 1 and 1.25
            # timeouts after it, and exactly at ``timeout`` for a client that took nothing.
            step = timeout / 4
            mark = pending() if pending is not None else 0
            since = loop.time()

            def check() -> None:
                nonlocal timer, mark, since
                left = pending() if pending is not None else mark
                now = loop.time()
                if left < mark:  # the client took some: the clock restarts
                    mark, since = left, now
                remaining = since + timeout - now
                if remaining <= 0:
                    on_stall()
                else:
                    timer = loop.call_later(min(step, remaining), check)

            timer = loop.call_later(step, check)
        try:
            while self.paused and not self.closed:
                waiter = loop.create_future()
                self.waiters.append(waiter)
                await waiter
        finally:
            if timer is not None:
                timer.cancel()
