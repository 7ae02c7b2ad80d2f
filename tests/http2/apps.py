"""ASGI apps the HTTP/2 suites serve, the same module for every server under test.

Each app is plain ASGI (no framework), so Gunicorn's ``-k asgi``, Hypercorn, Granian and
pounce_worker all run exactly the same code and any difference is the server's.
"""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]

#: Size of the ``/big`` response: well past the 65,535-byte default windows, so a
#: client that never opens its window leaves the server with data it cannot send.
BIG = 1 << 20


async def _body(receive: Any) -> tuple[bytes, list[int], bool]:
    """The whole request body, the size of each chunk the app received, and whether it saw a disconnect."""
    chunks: list[int] = []
    data = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return data, chunks, True
        data += message.get("body", b"")
        chunks.append(len(message.get("body", b"")))
        if not message.get("more_body", False):
            return data, chunks, False


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Routes by path:

    - ``/echo``: the request body back, with ``x-chunks`` (sizes the app received);
    - ``/big``: ``BIG`` bytes (flow-control and zero-window tests);
    - ``/trailers``: a body then ``x-checksum`` as a trailer, when the server offers trailers;
    - ``/status/N``: status N, empty body;
    - ``/watch?FILE``: waits for the body; writes to FILE whether a disconnect ended the wait;
    - ``/scope...``: JSON of what the app saw (scope keys and values, body chunks, disconnect);
    - anything else: ``hello`` with the path in ``x-path``.
    """
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/echo":
        data, chunks, _ = await _body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(data)).encode()),
            (b"x-chunks", str(len(chunks)).encode()),
        ]})
        await send({"type": "http.response.body", "body": data})
        return
    if path == "/big":
        await _body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/octet-stream"), (b"content-length", str(BIG).encode())]})
        piece = b"x" * (64 * 1024)
        for offset in range(0, BIG, len(piece)):
            await send({"type": "http.response.body", "body": piece, "more_body": offset + len(piece) < BIG})
        return
    if path == "/trailers":
        await _body(receive)
        offered = "http.response.trailers" in scope.get("extensions", {})
        await send({"type": "http.response.start", "status": 200, "trailers": offered, "headers": [
            (b"content-type", b"text/plain"), (b"trailer", b"x-checksum")]})
        await send({"type": "http.response.body", "body": b"with trailers"})
        if offered:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")]})
        return
    if path == "/watch":
        # Waits for a body that never comes; the query string names a file (in a test's temp
        # dir) where it writes what ended the wait: how a test sees the app get http.disconnect.
        # FILE.started says the app runs (the test cuts the stream only then).
        probe = scope["query_string"].decode()
        with open(probe + ".started", "w"):
            pass
        _, _, disconnected = await _body(receive)
        with open(probe, "w") as f:
            f.write("disconnect" if disconnected else "body")
        if not disconnected:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/status/"):
        await _body(receive)
        await send({"type": "http.response.start", "status": int(path.rsplit("/", 1)[1]), "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/scope"):
        data, chunks, disconnected = await _body(receive)
        seen = {
            "type": scope["type"],
            "http_version": scope.get("http_version"),
            "method": scope.get("method"),
            "scheme": scope.get("scheme"),
            "path": scope.get("path"),
            "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
            "query_string": scope.get("query_string", b"").decode("latin-1"),
            "root_path": scope.get("root_path"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope.get("headers", [])],
            "has_client": bool(scope.get("client")),
            "has_server": bool(scope.get("server")),
            "keys": sorted(scope),
            "body": data.decode("latin-1"),
            "body_total": len(data),
            "disconnected": disconnected,
        }
        payload = json.dumps(seen).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        return
    await _body(receive)
    body = b"hello"
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
        (b"x-path", path.encode("latin-1"))]})
    await send({"type": "http.response.body", "body": body})
