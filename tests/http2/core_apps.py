"""ASGI apps for the HTTP/2 core tests (tests/http2/test_h2_core.py): one route per feature.

What the app saw is answered as JSON, so a test judges the scope and the body
as the app received them, not only what came back on the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any


async def _body(receive: Any) -> tuple[bytes, int]:
    chunks = []
    messages = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        messages += 1
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


async def _json(send: Any, data: Any, status: int = 200) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def _mark(name: str, text: str) -> None:
    """Leave a file for the test to find (what the app saw after the response could not tell it)."""
    directory = os.environ.get("H2CORE_MARKS")
    if directory:
        Path(directory, name).write_text(text)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    if path == "/scope":
        body, messages = await _body(receive)
        await _json(send, {
            "http_version": scope["http_version"], "method": scope["method"], "path": scope["path"],
            "raw_path": scope["raw_path"].decode(), "query_string": scope["query_string"].decode(),
            "scheme": scope["scheme"], "root_path": scope["root_path"],
            "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
            "extensions": sorted(scope.get("extensions") or {}),
            "client": scope["client"] is not None, "server": scope["server"] is not None,
            "body": len(body), "sha": hashlib.sha256(body).hexdigest(), "messages": messages,
        })
    elif path == "/slow-read":
        # Reads the body in small steps, giving the loop a turn between them: the client's
        # window must be reopened as the app consumes, not all at once.
        total = 0
        digest = hashlib.sha256()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            digest.update(message.get("body", b""))
            await asyncio.sleep(0)
            if not message.get("more_body"):
                break
        await _json(send, {"body": total, "sha": digest.hexdigest()})
    elif path == "/stream":
        count, size = int(query.get("n", "4")), int(query.get("size", "1000"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(count):
            await send({"type": "http.response.body", "body": bytes([97 + i % 26]) * size, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"with trailers", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": False})
    elif path == "/hints":
        await send({"type": "http.response.informational", "status": 103,
                    "headers": [(b"link", b"</style.css>; rel=preload; as=style")]})
        await _json(send, {"hinted": True})
    elif path == "/fail-before":
        raise RuntimeError("the app fails before its response")
    elif path == "/fail-after":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("the app fails mid-response")
    elif path == "/wait-disconnect":
        # Never answers: waits for the client to leave, and says when it started and when it heard it.
        _mark(f"started-{query.get('id', '0')}", "started")
        message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        _mark(f"disconnect-{query.get('id', '0')}", "heard")
    elif path == "/hold":
        # Answers only once the test lets it (a file appears): a request in flight across a stop.
        release = Path(query["file"])
        while not release.exists():
            await asyncio.sleep(0.02)
        await _json(send, {"released": True})
    elif path == "/headers":
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"Connection", b"keep-alive"), (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"X-Mixed-Case", b"yes"),
        ]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/text":
        body = b"compressible text, " * 500
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/file":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.pathsend", "path": query["path"]})
    else:
        await _json(send, {"path": path})
