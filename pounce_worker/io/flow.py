"""Write flow control: writers wait while the transport's buffer is above its high-water mark.

asyncio tells a protocol ``pause_writing`` when the transport's write buffer
passes its high-water mark and ``resume_writing`` when it drains below the low
one; a writer that ignores it grows the buffer without bound (an app streaming
to a client that does not read). Every connection kind (HTTP/1.1, WebSocket)
keeps one ``WriteFlow``: its protocol callbacks call ``pause``/``resume``, its
``connection_lost`` calls ``close``, and whoever writes awaits ``wait`` first.

A waiter loops until the transport takes more or is gone, so a pause that
comes back before it runs is waited out too. A deadline (POUNCE_SEND_TIMEOUT
for HTTP) calls ``on_stall`` once the wait has lasted that long: a client
that stops reading must not hold its connection slot forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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
        self, loop: asyncio.AbstractEventLoop, timeout: float = 0.0, on_stall: Callable[[], None] | None = None
    ) -> None:
        """Until the transport takes more, or is gone; ``on_stall`` after ``timeout`` seconds (0: never)."""
        if not self.paused or self.closed:
            return
        timer = loop.call_later(timeout, on_stall) if timeout and on_stall is not None else None
        try:
            while self.paused and not self.closed:
                waiter = loop.create_future()
                self.waiters.append(waiter)
                await waiter
        finally:
            if timer is not None:
                timer.cancel()
