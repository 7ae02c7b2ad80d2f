"""Coroutines that wait for the same wake-up: an app's ``receive()`` calls on one request or socket.

An app usually has one ``receive()`` waiting at a time, and that case must cost
nothing more than a future: it takes the holder's ``waiter`` slot, which the
connection wakes directly on its hot path. Some apps wait in two at once (a
disconnect listener beside Starlette's ``is_disconnected()`` poll, a reader task
beside a ``wait_for`` with a timeout); the others then wait on futures of their
own in ``waiters``, so that one caller's cancellation never leaves another
waiting on a future nobody will wake (as one shared slot did). Every waiter is
woken together, as uvicorn's ``asyncio.Event`` does.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Waitable(Protocol):
    """What holds the waiters: a RequestCycle, a WebSocketSession."""

    waiter: asyncio.Future[None] | None
    waiters: list[asyncio.Future[None]] | None


async def wait(holder: Waitable, loop: asyncio.AbstractEventLoop) -> None:
    """Until ``wake(holder)``: the first caller in the slot, any other beside it."""
    future: asyncio.Future[None] = loop.create_future()
    if holder.waiter is None:
        holder.waiter = future
        try:
            await future
        finally:
            if holder.waiter is future:
                holder.waiter = None
        return
    others = holder.waiters
    if others is None:
        others = holder.waiters = []
    others.append(future)
    try:
        await future
    finally:
        others.remove(future)


def wake(holder: Waitable) -> None:
    future = holder.waiter
    if future is not None and not future.done():
        future.set_result(None)
    if holder.waiters:
        for future in holder.waiters:
            if not future.done():
                future.set_result(None)
