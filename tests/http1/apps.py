"""Small ASGI apps and expected bytes for the in-process HTTP/1.1 tests.

Each app records what it saw in a list the test reads, so a test can say what the
app observed (a message, an exception, how many writes had been made when its
``send`` returned) as well as what went out on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

Scope = dict[str, Any]

GET = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"


def get(path: bytes = b"/", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: example.org\r\n" + extra + b"\r\n"


def post(body: bytes, length: int | None = None, extra: bytes = b"", path: bytes = b"/") -> bytes:
    """A POST head with Content-Length (``length``, default the body's) followed by ``body``."""
    size = len(body) if length is None else length
    return (b"POST " + path + b" HTTP/1.1\r\nHost: example.org\r\nContent-Length: %d\r\n" % size
            + extra + b"\r\n" + body)


#: The Connection: close line h11 writes when the request asked for the close (and the fast
#: path writes as h11 does); the server's own, added when it decides the close, is lower-case.
H11_CLOSE = b"Connection: close\r\n"
SERVER_CLOSE = b"connection: close\r\n"


def ok(body: bytes = b"hello", extra: bytes = b"", close: bytes = b"") -> bytes:
    """The bytes of a 200 with Content-Length, as both paths frame it (Date replaced by DATE).

    ``extra`` header lines come before Content-Length; ``close`` (H11_CLOSE or
    SERVER_CLOSE) after the app's headers.
    """
    return (b"HTTP/1.1 200 OK\r\nserver: pounce\r\ndate: DATE\r\n" + extra
            + b"content-length: %d\r\n" % len(body) + close + b"\r\n" + body)


def refusal(status: bytes, message: bytes, extra: bytes = b"") -> bytes:
    """One of our own error responses (reject()): plain text, Connection: close."""
    body = message + b"\n"
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            + extra + b"content-length: %d\r\n\r\n" % len(body) + body)


BODY_408 = (b"Request body not received in time (POUNCE_BODY_TIMEOUT=30s, "
            b"POUNCE_BODY_MIN_RATE=500 bytes/s)")
HEAD_408 = b"Request head not complete within POUNCE_HEADER_TIMEOUT=15.0s"


def start(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def body(data: bytes = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    await send(start(200, [(b"content-length", b"5")]))
    await send(body(b"hello"))


async def read_all(receive: Any) -> bytes:
    """The whole request body; raises if the client leaves first."""
    data = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("disconnected while reading the body")
        data += message["body"]
        if not message.get("more_body"):
            return data


class Echo:
    """Reads the whole body, then answers it back with Content-Length; records each message received."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        data = b""
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] == "http.disconnect":
                return
            data += message["body"]
            if not message.get("more_body"):
                break
        await send(start(200, [(b"content-length", b"%d" % len(data))]))
        await send(body(data))


class Gated:
    """Answers each request once the test opens its gate; records request paths as they start.

    ``before`` gates the start of the response, so a test can hold a request in
    the app and see what the connection does meanwhile.
    """

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: list[asyncio.Event] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.started.append(scope["path"])
        await gate.wait()
        payload = scope["path"].encode()
        await send(start(200, [(b"content-length", b"%d" % len(payload))]))
        await send(body(payload))
