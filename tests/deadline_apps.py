"""The ASGI app tests/http1/test_deadlines.py serves: what it saw goes to a file the test reads.

Each route stands for one connection state whose deadline the tests drive:

* ``/unread``: answers 401 at once without reading the request body (the body is
  left unread after the response);
* ``/upload``: reads the whole body, then answers with its length; when
  ``receive()`` says ``http.disconnect`` instead, it writes that down;
* ``/late-upload``: waits 2 s before its first ``receive()`` (for Expect: 100-continue,
  whose body clock must only start with the 100);
* ``/firehose``: streams 256 KiB chunks until ``send()`` fails, then writes down how.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tests.apps import _read_body

Scope = dict[str, Any]


def _note(line: str) -> None:
    with open(os.environ["POUNCE_TEST_DEADLINE_FILE"], "a") as fh:
        fh.write(line + "\n")


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/unread":
        await _answer(send, 401, b"no\n")
    elif path in ("/upload", "/late-upload"):
        if path == "/late-upload":
            await asyncio.sleep(2.0)
        body, disconnected = await _read_body(receive)
        if disconnected:
            _note(f"{path} disconnected after {len(body)} bytes")
            return
        await _answer(send, 200, b"%d" % len(body))
    elif path == "/firehose":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 262144
        try:
            while True:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError as exc:  # ClientDisconnected is an OSError (ASGI 2.4)
            _note(f"/firehose ended by {type(exc).__name__}")
    else:
        await _answer(send, 404, b"")


async def grace_app(scope: Scope, receive: Any, send: Any) -> None:
    """For ``asgi_disconnect_grace_period``: ``/deaf`` ignores its client leaving, ``/background``
    works on after a complete response; both write down how they ended."""
    if scope["type"] == "lifespan":
        return await app(scope, receive, send)
    path = scope["path"]
    if path == "/deaf":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
        _note("/deaf started")
        while (await receive())["type"] != "http.disconnect":
            pass
        _note("/deaf heard http.disconnect")
        try:
            await asyncio.sleep(30)  # keeps working on, as an app that ignores it would
            _note("/deaf finished its work")
        except asyncio.CancelledError:
            _note("/deaf cancelled")
            raise
    elif path == "/background":
        await _answer(send, 200, b"done\n")
        _note("/background answered")
        await asyncio.sleep(2.0)
        _note("/background finished its work")
    else:
        await _answer(send, 404, b"")
