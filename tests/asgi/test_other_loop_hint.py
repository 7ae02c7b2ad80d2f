"""The log line of an app failure caused by an asyncio object of another loop (thread mode).

Under uvicorn one process has one loop, so a module-level ``asyncio.Lock``/``Event``/``Queue``
or a client made by "the" lifespan works; in thread mode each loop thread runs the app and
asyncio raises from the second loop. The traceback alone says "bound to a different event
loop"; the log line now says why that happens here and what to do.
"""

from __future__ import annotations

import asyncio
import threading

from pounce_worker.log import other_loop_hint


def _error_from_a_second_loop() -> RuntimeError:
    """The real error: an Event first waited on in one loop, then in another thread's loop."""
    event = asyncio.Event()

    async def wait() -> None:
        try:
            await asyncio.wait_for(event.wait(), 0.01)
        except asyncio.TimeoutError:
            pass

    asyncio.run(wait())
    caught: list[BaseException] = []

    def other() -> None:
        try:
            asyncio.run(wait())
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(caught) == 1 and isinstance(caught[0], RuntimeError), caught
    return caught[0]


def test_hint_for_an_object_of_another_loop_with_several_loops() -> None:
    error = _error_from_a_second_loop()
    assert "different event loop" in str(error)
    hint = other_loop_hint(error, 4)
    assert "another of this process's 4 event loops" in hint and "POUNCE_WORKER_MODE=processes" in hint
    assert other_loop_hint(error, 1) == ""  # one loop per process: not the cause


def test_hint_follows_the_cause_and_ignores_other_errors() -> None:
    error = _error_from_a_second_loop()
    try:
        try:
            raise error
        except RuntimeError as exc:
            raise ValueError("the framework's own wrapper") from exc
    except ValueError as wrapped:
        assert other_loop_hint(wrapped, 2) != ""
    future_error = RuntimeError("Task <Task pending> got Future <Future pending> attached to a different loop")
    assert other_loop_hint(future_error, 2) != ""
    assert other_loop_hint(RuntimeError("boom"), 2) == ""
    assert other_loop_hint(None, 2) == ""
