"""Apps whose lifespan misbehaves, for tests/asgi/test_lifespan.py: startup that never answers or
blocks its loop, shutdown that never answers, raises or ignores cancellation.

Each app says what it does through Gunicorn's error logger (``gunicorn.error``, which the
worker has set up to write the test server's error log), so a test can wait for the line
(``wait_for_log``) instead of guessing how long something takes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

_log = logging.getLogger("gunicorn.error")


def say(what: str) -> None:
    _log.info("lifespan app: %s in %s", what, threading.current_thread().name)


async def _served(scope, receive, send):
    if scope["path"] == "/forever":
        say("request waits")
        await _forever("request", stubborn=True)
    say("served a request")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"served"})


async def _forever(what: str, stubborn: bool = False) -> None:
    """Wait for something that never happens; say so when cancelled (and, if stubborn, keep waiting)."""
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not stubborn:
                say(f"{what} cancelled")
                raise
            say(f"{what} ignored cancellation")


async def startup_hangs(scope, receive, send):
    """Startup never answers: POUNCE_TEST_STARTUP=await waits forever, =block sleeps in the loop thread.

    ``block`` sleeps POUNCE_TEST_BLOCK_SECONDS (default 60) with ``time.sleep``: a synchronous
    call that stops the loop, as a blocking database driver or a model load would.
    """
    if scope["type"] != "lifespan":
        return await _served(scope, receive, send)
    message = await receive()
    assert message["type"] == "lifespan.startup"
    say("startup began")
    if os.environ.get("POUNCE_TEST_STARTUP", "await") == "block":
        time.sleep(float(os.environ.get("POUNCE_TEST_BLOCK_SECONDS", "60")))
        say("startup unblocked")
    else:
        await _forever("startup")
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})


async def shutdown_hangs(scope, receive, send):
    """Startup completes; shutdown per POUNCE_TEST_SHUTDOWN: hang (await forever), stubborn
    (await forever and ignore cancellation), raise (raise RuntimeError)."""
    if scope["type"] != "lifespan":
        return await _served(scope, receive, send)
    message = await receive()
    assert message["type"] == "lifespan.startup"
    await send({"type": "lifespan.startup.complete"})
    try:
        message = await receive()
    except asyncio.CancelledError:
        say("waiting for shutdown cancelled")  # a fast stop (QUIT/INT) skips shutdown
        raise
    assert message["type"] == "lifespan.shutdown"
    say("shutdown began")
    how = os.environ.get("POUNCE_TEST_SHUTDOWN", "hang")
    if how == "raise":
        raise RuntimeError("shutdown exploded")
    await _forever("shutdown", stubborn=how == "stubborn")
