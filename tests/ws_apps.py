"""Raw ASGI WebSocket apps for tests/websocket/test_websocket.py and the compat suite, routed on path.

No framework: each route does one thing with the bare ``websocket`` scope, so
what a client sees is the server's doing. Routes that report what the app saw
(the disconnect code, the scope) write JSON to ``$WS_REPORT_DIR/<name>.json``,
``name`` taken from the query string (``?report=NAME``), when the app returns;
the tests read it from there (a side channel that works under any server).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.apps import _lifespan


def _query(scope: dict[str, Any]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


def _report(scope: dict[str, Any], record: dict[str, Any]) -> None:
    name = _query(scope).get("report")
    directory = os.environ.get("WS_REPORT_DIR") or os.environ.get("COMPAT_RECORD_DIR")
    if name and directory:
        path = Path(directory) / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)  # readers never see a half-written file


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept (the first offered subprotocol when ``?subprotocol=first``), echo until the client leaves."""
    query = _query(scope)
    message = await receive()
    assert message["type"] == "websocket.connect", message
    subprotocol = query.get("subprotocol")
    if subprotocol == "first":
        subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    count = 0
    disconnect: dict[str, Any] = {}
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            disconnect = message
            break
        count += 1
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
    _report(scope, {
        "code": disconnect.get("code"),
        "reason": disconnect.get("reason", ""),
        "messages": count,
        "subprotocols": scope["subprotocols"],
        "spec_version": scope["asgi"].get("spec_version"),
        "scheme": scope["scheme"],
        "path": scope["path"],
        "extensions": sorted(scope.get("extensions") or {}),
        "pid": os.getpid(),
    })


async def accept_headers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept with extra response headers, send one message, close normally."""
    await receive()
    await send({
        "type": "websocket.accept",
        "headers": [(b"x-accepted-by", b"ws_apps"), (b"set-cookie", b"session=abc")],
    })
    await send({"type": "websocket.send", "text": "hello"})
    await send({"type": "websocket.close", "code": 1000})


async def server_close(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, then close with ``?code=`` and ``?reason=``; report what receive() gives next."""
    query = _query(scope)
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "bye soon"})
    await send({"type": "websocket.close", "code": int(query.get("code", "1000")), "reason": query.get("reason", "")})
    after = await receive()
    _report(scope, {"after_close": after})


async def deny(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Deny the handshake with an HTTP response (the websocket.http.response extension)."""
    await receive()
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close"})
        return
    await send({
        "type": "websocket.http.response.start",
        "status": 401,
        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer"), (b"content-length", b"15")],
    })
    await send({"type": "websocket.http.response.body", "body": b"not ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"authorized\n"})


async def deny_chunked(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A denial without Content-Length: the server frames it (chunked)."""
    await receive()
    await send({"type": "websocket.http.response.start", "status": 404, "headers": [(b"x-why", b"nothing here")]})
    await send({"type": "websocket.http.response.body", "body": b"no such socket"})


async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """websocket.close before accepting: the client gets 403."""
    await receive()
    await send({"type": "websocket.close", "code": 1000})


async def fail_before_accept(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    raise RuntimeError("boom before accept")


async def push(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept and send ``?n=`` text messages without reading, then wait for the client to leave."""
    n = int(_query(scope).get("n", "3"))
    await receive()
    await send({"type": "websocket.accept"})
    for i in range(n):
        await send({"type": "websocket.send", "text": f"push {i}"})
    message = await receive()
    while message["type"] != "websocket.disconnect":
        message = await receive()
    _report(scope, {"code": message["code"]})


async def stall(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, then read nothing until the file ``?go=PATH`` exists; then count what arrived.

    The backpressure test fills the socket while this app does not read, then
    lets it go: every message must still arrive, once.
    """
    go = Path(_query(scope)["go"])
    await receive()
    await send({"type": "websocket.accept"})
    while not go.exists():
        await asyncio.sleep(0.05)
    count = total = 0
    expected = int(_query(scope).get("n", "0"))
    while count < expected:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            break
        count += 1
        total += len(message.get("bytes") or b"")
    await send({"type": "websocket.send", "text": json.dumps({"count": count, "bytes": total})})
    await receive()


async def ignore_shutdown(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept (after ``?delay=`` seconds) and wait for the disconnect; report its code (1012 on SIGTERM)."""
    await receive()
    await asyncio.sleep(float(_query(scope).get("delay", "0")))
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": f"pid {os.getpid()}"})
    message = await receive()
    while message["type"] != "websocket.disconnect":
        message = await receive()
    _report(scope, {"code": message["code"], "reason": message.get("reason", "")})


async def return_after_accept(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, send one message and return without closing."""
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "done"})


async def fail_after_accept(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    raise RuntimeError("boom after accept")


def _starlette_app() -> Any:
    """A Starlette app with WebSocket routes, built on first use (Starlette is a test dependency)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def chat(websocket: WebSocket) -> None:
        if websocket.query_params.get("token") != "secret":
            await websocket.send_denial_response(PlainTextResponse("who are you?", status_code=401))
            return
        await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"echo": data, "client": websocket.headers.get("x-client")})
        except WebSocketDisconnect as exc:
            _report(websocket.scope, {"code": exc.code, "reason": exc.reason})

    return Starlette(routes=[WebSocketRoute("/starlette/chat", chat)])


_STARLETTE: list[Any] = []


async def starlette(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if not _STARLETTE:
        _STARLETTE.append(_starlette_app())
    await _STARLETTE[0](scope, receive, send)


ROUTES = {
    "/echo": echo,
    "/headers": accept_headers,
    "/close": server_close,
    "/deny": deny,
    "/deny-chunked": deny_chunked,
    "/refuse": refuse,
    "/fail-before-accept": fail_before_accept,
    "/push": push,
    "/stall": stall,
    "/hold": ignore_shutdown,
    "/return": return_after_accept,
    "/fail-after-accept": fail_after_accept,
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["type"] == "http":
        # Plain HTTP: what an upgrade request looks like when it is not treated as one.
        body = json.dumps({"type": "http", "path": scope["path"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root):]
    if path.startswith("/starlette/"):
        await starlette(scope, receive, send)
        return
    handler = ROUTES.get(path, echo)
    await handler(scope, receive, send)
