"""The app behind tests/asgi/test_compression.py, tests/asgi/test_server_timing.py and tests/asgi/test_pathsend.py.

One ASGI app, routes chosen by path, parameters in the query string, so one
gunicorn master serves a whole test module. Text bodies are made of a repeated
sentence, so they compress well and a round trip can be compared byte for byte.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import parse_qs

from tests.apps import _lifespan

SENTENCE = b"The quick brown fox jumps over the lazy dog. "

#: Streaming tests hold the second chunk until the client, having read the first,
#: calls /release?token=T. Shared by the loop threads of a process, hence the lock.
_gates_lock = threading.Lock()
_gates: dict[str, threading.Event] = {}


def text(size: int) -> bytes:
    return (SENTENCE * (size // len(SENTENCE) + 1))[:size]


def _gate(token: str) -> threading.Event:
    with _gates_lock:
        return _gates.setdefault(token, threading.Event())


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    size = int(query.get("size", "2000"))
    ctype = query.get("type", "text/plain; charset=utf-8").encode()
    headers = [(b"content-type", ctype)]
    for name, value in (("vary", "vary"), ("cache-control", "cache_control"), ("etag", "etag"),
                        ("server-timing", "timing"), ("accept-ranges", "accept_ranges")):
        if value in query:
            headers.append((name.encode(), query[value].encode()))
    if path == "/body":
        # One body message; with Content-Length unless ?nolength.
        body = text(size)
        if "nolength" not in query:
            headers.append((b"content-length", b"%d" % len(body)))
        await _respond(send, 200, headers, body)
    elif path == "/sleep":
        # Waits ?ms before starting the response (Server-Timing's app metric must cover it).
        await asyncio.sleep(int(query["ms"]) / 1000)
        await _respond(send, 200, [*headers, (b"content-length", b"2")], b"ok")
    elif path == "/status":
        status = int(query["code"])
        body = b"" if status in (204, 304) else text(size)
        if status == 206:
            headers.append((b"content-range", b"bytes 0-%d/%d" % (len(body) - 1, len(body) * 2)))
        if body:
            headers.append((b"content-length", b"%d" % len(body)))
        await _respond(send, status, headers, body)
    elif path == "/encoded":
        import gzip

        body = gzip.compress(text(size))
        headers += [(b"content-encoding", b"gzip"), (b"content-length", b"%d" % len(body))]
        await _respond(send, 200, headers, body)
    elif path == "/stream":
        # ?chunks=N pieces of ?size bytes; with ?token the second waits for /release?token.
        chunks = int(query.get("chunks", "3"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index in range(chunks):
            if index == 1 and "token" in query:
                gate = _gate(query["token"])
                for _ in range(1000):  # at most ~10 s
                    if gate.is_set():
                        break
                    await asyncio.sleep(0.01)
            piece = text(size)[index % 7:] + b"%d" % index
            await send({"type": "http.response.body", "body": piece, "more_body": index < chunks - 1})
    elif path == "/start-only":
        # http.response.start, then the app returns (?raise: raises) without a body message.
        await send({"type": "http.response.start", "status": int(query.get("code", "200")), "headers": headers})
        if "raise" in query:
            raise RuntimeError("the app fails after http.response.start")
    elif path == "/release":
        _gate(query["token"]).set()
        await _respond(send, 200, [(b"content-type", b"text/plain"), (b"content-length", b"2")], b"ok")
    elif path == "/file":
        # pathsend: ?path=/abs/file, ?length=N to declare a Content-Length, ?check to fail without the extension.
        if "http.response.pathsend" not in scope.get("extensions", {}):
            await _respond(send, 500, [(b"content-length", b"12")], b"no pathsend")
            return
        headers = [(b"content-type", query.get("type", "application/octet-stream").encode())]
        if "length" in query:
            headers.append((b"content-length", query["length"].encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": query["path"]})
    elif path == "/filestream":
        # The same file streamed through http.response.body, 64 KiB at a time (the pathsend baseline).
        file_path = query["path"]
        import os

        length = os.path.getsize(file_path)
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with open(file_path, "rb") as f:
            while True:
                block = f.read(65536)
                await send({"type": "http.response.body", "body": block, "more_body": bool(block)})
                if not block:
                    break
    else:
        await _respond(send, 404, [(b"content-type", b"text/plain"), (b"content-length", b"9")], b"not found")
