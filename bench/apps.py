"""The ASGI app every server in the benchmark serves: ``bench.apps:app``.

One app, four routes, so each server boots once and serves every scenario:

``GET /plain``
    13 bytes, ``Hello, world!``, with ``content-length``.
``GET /json``
    A dict serialised with ``json.dumps`` on every request, 2048 bytes long.
``GET /stream``
    1 MiB sent as 16 ``http.response.body`` messages of 64 KiB each, without
    ``content-length`` (so the server frames it with chunked encoding).
``POST /echo``
    Reads the whole request body (wrk sends 64 KiB) and sends it back.
``GET /pathsend`` and ``GET /filestream``
    The file named by the ``BENCH_FILE`` environment variable, sent with the
    ``http.response.pathsend`` extension or read and sent in 64 KiB body
    messages (``bench/pathsend.py`` compares the two; 404 when unset).
``GET /page``
    A 16 KiB HTML page with ``content-length``: what response compression is for
    (``bench/run.py --features``; not in the peer comparison).

Pure ASGI 3, no framework, so the numbers measure the servers. Lifespan is
answered (every server here speaks it), and nothing is shared between requests
except immutable bytes, so the app is safe in any number of loop threads.
"""

from __future__ import annotations

import json
import os
from typing import Any

PLAIN_BODY = b"Hello, world!"
JSON_SIZE = 2048
STREAM_CHUNK = 64 * 1024
STREAM_CHUNKS = 16
STREAM_SIZE = STREAM_CHUNK * STREAM_CHUNKS
ECHO_SIZE = 64 * 1024


def _json_payload(size: int = JSON_SIZE) -> dict[str, Any]:
    """A dict of 20 user records, padded so ``json.dumps`` of it is exactly ``size`` bytes."""
    users = [
        {"id": i, "name": f"user-{i:03d}", "email": f"user-{i:03d}@example.com", "active": i % 3 != 0}
        for i in range(20)
    ]
    payload: dict[str, Any] = {"count": len(users), "users": users, "pad": ""}
    missing = size - len(json.dumps(payload))
    if missing < 0:
        raise ValueError(f"the JSON payload is already {size - missing} bytes, more than {size}")
    payload["pad"] = "x" * missing
    return payload


JSON_PAYLOAD = _json_payload()
STREAM_PIECE = bytes(range(256)) * (STREAM_CHUNK // 256)
PAGE_SIZE = 16 * 1024


def _page(size: int = PAGE_SIZE) -> bytes:
    """An HTML page of table rows, as compressible as a real one (about 8:1 with gzip)."""
    rows = "".join(
        f'<tr><td class="id">{i}</td><td class="name">user-{i:04d}</td>'
        f'<td><a href="/users/{i}">profile</a></td><td>{(i * 7919) % 100003}</td></tr>\n'
        for i in range(400)
    )
    html = f"<!doctype html>\n<html><head><title>Users</title></head><body><table>\n{rows}"
    return (html.encode() * (size // len(html) + 1))[:size]


PAGE_BODY = _page()
_PAGE_HEADERS = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(PAGE_SIZE).encode())]

_PLAIN_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(PLAIN_BODY)).encode())]
_STREAM_HEADERS = [(b"content-type", b"application/octet-stream")]
_NOT_FOUND = b"not found"


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Any) -> bytes:
    parts = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


async def _send_file(send: Any, file_path: str, pathsend: bool) -> None:
    size = os.path.getsize(file_path)
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if pathsend:
        await send({"type": "http.response.pathsend", "path": file_path})
        return
    with open(file_path, "rb") as f:
        while block := f.read(STREAM_CHUNK):
            await send({"type": "http.response.body", "body": block, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind != "http":
        return
    path = scope["path"]
    if path == "/plain":
        await send({"type": "http.response.start", "status": 200, "headers": _PLAIN_HEADERS})
        await send({"type": "http.response.body", "body": PLAIN_BODY})
    elif path == "/json":
        data = json.dumps(JSON_PAYLOAD).encode()
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        })
        await send({"type": "http.response.body", "body": data})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        for _ in range(STREAM_CHUNKS - 1):
            await send({"type": "http.response.body", "body": STREAM_PIECE, "more_body": True})
        await send({"type": "http.response.body", "body": STREAM_PIECE})
    elif path == "/page":
        await send({"type": "http.response.start", "status": 200, "headers": _PAGE_HEADERS})
        await send({"type": "http.response.body", "body": PAGE_BODY})
    elif path in ("/pathsend", "/filestream") and os.environ.get("BENCH_FILE"):
        await _send_file(send, os.environ["BENCH_FILE"], path == "/pathsend")
    elif path == "/echo":
        body = await _read_body(receive)
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})
    else:
        await send({
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(_NOT_FOUND)).encode())],
        })
        await send({"type": "http.response.body", "body": _NOT_FOUND})
