"""The ASGI lifespan protocol, run once per event loop.

Why per loop and not per process: what apps create at startup (database pools,
HTTP clients, locks) is bound to the event loop that created it. A pool created
on loop 0 and used from loop 3 fails or, worse, races. So every loop thread runs
startup before it accepts a connection and shutdown after its last one, each
with its own ``state`` dict that is shallow-copied into every request scope.

Modes follow Gunicorn's ``asgi_lifespan`` setting: ``auto`` treats an app that
raises before answering as one without lifespan support (as uvicorn does);
``on`` treats that as a failure; ``off`` never calls the app with a lifespan scope.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..log import LoopLog
from . import LIFESPAN_SPEC_VERSION, ASGIApp, Message, asgi_info


class LifespanFailure(Exception):
    """Startup failed: the worker must exit with Gunicorn's boot-error code."""


class Lifespan:
    def __init__(self, app: ASGIApp, mode: str, log: LoopLog, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.log = log
        self.state = state
        self.supported = mode != "off"
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._answers: asyncio.Queue[Message | BaseException | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": asgi_info(LIFESPAN_SPEC_VERSION), "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except BaseException as exc:
            await self._answers.put(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            await self._answers.put(None)

    async def _send(self, message: Message) -> None:
        expected = {
            "lifespan.startup.complete",
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        }
        if message.get("type") not in expected:
            raise RuntimeError(
                f"ASGI lifespan: unexpected message type {message.get('type')!r}; "
                f"expected one of {sorted(expected)}"
            )
        await self._answers.put(message)

    async def startup(self) -> None:
        """Run startup; raise ``LifespanFailure`` when the worker must not serve."""
        if not self.supported:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._answers.get()
        if isinstance(answer, dict) and answer["type"] == "lifespan.startup.complete":
            return
        if isinstance(answer, dict) and answer["type"] == "lifespan.startup.failed":
            raise LifespanFailure(answer.get("message") or "lifespan.startup.failed")
        # The app raised or returned without answering.
        self.supported = False
        if self.mode == "on":
            if isinstance(answer, BaseException):
                self.log.error("ASGI lifespan startup raised", exc_info=answer)
            raise LifespanFailure(
                "the application does not support the ASGI lifespan protocol (asgi_lifespan='on')"
            )
        if isinstance(answer, BaseException):
            self.log.info(
                "ASGI 'lifespan' protocol appears unsupported (%s: %s)",
                type(answer).__name__,
                answer,
            )

    async def shutdown(self) -> None:
        """Run shutdown; failures are logged, never raised: the worker is exiting anyway."""
        if not self.supported or self._task is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        answer = await self._answers.get()
        if isinstance(answer, dict) and answer["type"] == "lifespan.shutdown.failed":
            self.log.error("ASGI lifespan shutdown failed: %s", answer.get("message", ""))
        elif isinstance(answer, BaseException):
            self.log.error("ASGI lifespan shutdown raised", exc_info=answer)
        elif answer is None:
            self.log.error("ASGI lifespan task returned without answering lifespan.shutdown")

    async def close(self, grace: float, wait: float) -> None:
        """End the lifespan task before its loop closes, so nothing is left pending.

        An app that answered (startup failed, shutdown complete) normally returns by
        itself and gets ``grace`` seconds to do so. What still runs after that (a
        startup or shutdown that never answered, or the wait for shutdown that a fast
        stop skips) is cancelled, which runs the app's ``finally`` blocks, and gets
        ``wait`` seconds to end. An app that ignores the cancellation is abandoned with
        one error line instead of asyncio's "Task was destroyed but it is pending!"
        when the closed loop's task is collected.
        """
        task = self._task
        if task is None or task.done():
            return
        if grace > 0:
            await asyncio.wait({task}, timeout=grace)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=wait)
        if not task.done():
            self.log.error("ASGI lifespan task ignored cancellation for %gs; abandoning it", wait)
            # asyncio's own switch for "this pending task is known; do not warn when collected"
            # (run_until_complete sets it the same way).
            task._log_destroy_pending = False  # type: ignore[attr-defined]
