"""The ASGI app every server of ``bench/ws.py`` serves: ``bench.ws_app:app``.

``websocket`` on any path
    Accepts, then echoes every message as it came: text as text, bytes as bytes,
    until the client leaves. This is the issue 14 app (and the README's example).
``GET /`` (HTTP)
    ``ok``: how ``bench/ws.py`` knows a server is up.

Lifespan is answered. Pure ASGI 3, no framework. ``UvicornWsprotoWorker`` is
UvicornWorker with uvicorn's wsproto implementation (``--ws wsproto`` has no
Gunicorn flag, the worker class is how it is chosen).
"""

from __future__ import annotations

from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    elif kind == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # pragma: no cover - only bench/ws.py's uvicorn-wsproto and uvicorn-asyncio rows need it
    pass
else:
    class UvicornWsprotoWorker(UvicornWorker):  # type: ignore[misc]
        CONFIG_KWARGS = {"loop": "auto", "http": "auto", "ws": "wsproto"}

    class UvicornAsyncioWorker(UvicornWorker):  # type: ignore[misc]
        """UvicornWorker on asyncio's own loop: the like-for-like row for pounce_worker (asyncio)."""

        CONFIG_KWARGS = {"loop": "asyncio", "http": "auto", "ws": "auto"}
