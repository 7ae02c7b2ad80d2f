"""ASGI apps the end-to-end tests serve; each one small and with one purpose."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body, True
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, False


async def _respond(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(scope, receive, send, on_startup=None, on_shutdown=None):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_startup:
                await on_startup(scope)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown:
                await on_shutdown(scope)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _startup(scope):
    scope["state"]["loop_id"] = id(asyncio.get_running_loop())
    scope["state"]["thread"] = threading.current_thread().name


async def _shutdown(scope):
    path = os.environ.get("POUNCE_TEST_SHUTDOWN_FILE")
    if path:
        with open(path, "a") as fh:
            fh.write(f"shutdown {os.getpid()} {threading.current_thread().name}\n")


async def echo(scope, receive, send):
    """Answers with JSON describing the request and where it ran.

    Paths: ``/sleep/<s>`` sleeps first; ``/stream/<n>`` streams n chunks;
    ``/status/<code>`` answers that status.
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send, _startup, _shutdown)
    path = scope["path"]
    if path.startswith("/sleep/"):
        await asyncio.sleep(float(path.rsplit("/", 1)[1]))
    if path.startswith("/stream/"):
        count = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(count):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body, _ = await _read_body(receive)
    state = scope.get("state", {})
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope["root_path"],
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "asgi": scope["asgi"],
        "body_len": len(body),
        "body": body[:64].decode("latin-1"),
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "loop_id": id(asyncio.get_running_loop()),
        "state_loop_id": state.get("loop_id"),
        "state_thread": state.get("thread"),
    }
    data = json.dumps(payload).encode()
    await _respond(send, 200, data, [(b"content-length", str(len(data)).encode())])


async def blocking(scope, receive, send):
    """``/block`` blocks its loop with a synchronous sleep (WORKER TIMEOUT material)."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["path"] == "/block":
        time.sleep(60)
    await _respond(send, 200, b"ok")


async def startup_fails(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await _respond(send, 200, b"should not serve")


async def no_lifespan(scope, receive, send):
    """An app that does not speak lifespan at all (raises on unknown scope types)."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']}")
    await _respond(send, 200, b"no lifespan here")


async def crash(scope, receive, send):
    """``/before`` raises before responding, ``/after`` mid-response, ``/silent`` returns nothing."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    path = scope["path"]
    if path == "/before":
        raise RuntimeError("boom before start")
    if path == "/after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")
    if path == "/silent":
        return
    await _respond(send, 200, b"fine")


class Asgi2App:
    """An ASGI 2 double-callable app."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "lifespan":
            return await _lifespan(self.scope, receive, send)
        await _respond(send, 200, b"asgi2 " + self.scope["path"].encode())


asgi2 = Asgi2App


async def disconnect_watch(scope, receive, send):
    """Streams until the client leaves, then records that it saw http.disconnect."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    marker = os.environ["POUNCE_TEST_DISCONNECT_FILE"]
    if scope["path"] == "/upload":
        body, disconnected = await _read_body(receive)
        with open(marker, "a") as fh:
            fh.write(f"upload disconnected={disconnected} got={len(body)}\n")
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
    while (message := await receive())["type"] != "http.disconnect":
        pass
    with open(marker, "a") as fh:
        fh.write(f"stream {message['type']}\n")
