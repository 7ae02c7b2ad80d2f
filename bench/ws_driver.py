"""WebSocket sessions without sockets: a LoopServer, the real handshake path, a fake transport.

Shared by bench/ws_cost.py (CPU per message of our own code) and
tests/websocket/test_frames.py (the fast path against wsproto alone), so both drive
the session exactly as a socket would: ``HTTPConnection.data_received`` with the
upgrade request, then ``session.data_received`` with the client's frames.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
from typing import Any

from bench.cost import QuietLogger


class FakeTransport:
    """Enough of an asyncio transport for HTTPConnection and WebSocketSession.

    Writes are counted; with ``keep`` they are also kept in ``out`` (the tests compare them).
    """

    def __init__(self, keep: bool = False) -> None:
        self.written = 0
        self.writes = 0
        self.last = b""
        self.out: bytearray | None = bytearray() if keep else None
        self.closing = False
        self.reading = True
        self.protocol: Any = None

    def write(self, data: bytes | bytearray) -> None:
        self.written += len(data)
        self.writes += 1
        self.last = bytes(data)
        if self.out is not None:
            self.out += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def make_server(app: Any, **config: Any) -> Any:
    """A LoopServer on the running loop, Gunicorn's default settings with ``config`` replaced
    (ServerConfig field names, e.g. ``ws_max_size``)."""
    from gunicorn.config import Config

    from pounce_worker.asgi.hooks import Hooks
    from pounce_worker.budget import RequestBudget
    from pounce_worker.config import ServerConfig
    from pounce_worker.log import LoopLog
    from pounce_worker.loop.server import LoopServer

    cfg = Config()
    settings = ServerConfig.from_gunicorn(cfg, env={"POUNCE_WORKER_MODE": "processes"})
    if config:
        settings = dataclasses.replace(settings, **config)

    class Worker:
        def budget_exhausted(self) -> None:
            pass

    server = LoopServer(0, settings, app, [], None, Worker(), Hooks.from_gunicorn(cfg),
                        LoopLog(QuietLogger(), os.getpid(), 0), RequestBudget(0), "asyncio")
    server.loop = asyncio.get_running_loop()
    server.date_header = b"Thu, 01 Jan 2026 00:00:00 GMT"  # fixed: the tests compare bytes
    return server


async def open_session(server: Any, extensions: str | None = None, fast: bool = True,
                       keep: bool = False, key: str | None = None) -> tuple[Any, FakeTransport]:
    """One session through the real upgrade (``extensions``: the client's Sec-WebSocket-Extensions),
    returned once the app accepted; ``fast`` False: wsproto alone, as before the fast path."""
    from pounce_worker.http1.connection import HTTPConnection
    from pounce_worker.websocket.session import WebSocketSession

    connection = HTTPConnection(server)
    transport = FakeTransport(keep)
    transport.protocol = connection
    connection.connection_made(transport)  # type: ignore[arg-type]
    key = key or base64.b64encode(os.urandom(16)).decode()
    head = (f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if extensions:
        head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    old = WebSocketSession.FAST_PATH
    WebSocketSession.FAST_PATH = fast
    try:
        connection.data_received((head + "\r\n").encode())
    finally:
        WebSocketSession.FAST_PATH = old
    session = transport.protocol
    assert isinstance(session, WebSocketSession) and session.fast is fast
    for _ in range(100):
        if session.handshake_done:
            break
        await asyncio.sleep(0)
    assert b" 101 " in transport.last, transport.last[:200]
    return session, transport
