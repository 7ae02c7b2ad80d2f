"""pounce_worker's own cost per WebSocket message, without sockets: what bench/ws.py cannot isolate.

Opens ``--sessions`` WebSocket sessions on one LoopServer through the real
handshake path (HTTPConnection, then ``upgrade``), over fake transports that
count what is written, then feeds each one masked client frame per loop
iteration and runs the loop until every session has written its echo
(``bench.ws_app:app``): the Python path of a message and the loop's, the same
way every time; CPU time of this process (process_time), not wall time. Kernel
and syscalls are left out, so the figure is below what bench/ws.py reads from /proc.

    python bench/ws_cost.py                        # µs per echoed message, 64 B text
    python bench/ws_cost.py --size 65536 --binary --deflate
    python bench/ws_cost.py --profile              # cProfile, the top functions by own time
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import os
import pstats
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cost import QuietLogger  # noqa: E402
from bench.ws import frame, payload  # noqa: E402
from bench.ws_app import app as ws_app  # noqa: E402


class FakeTransport:
    """Enough of an asyncio transport for HTTPConnection and WebSocketSession; writes are counted."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0
        self.closing = False
        self.reading = True
        self.protocol: Any = None
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1
        self.last = data

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


def make_server() -> Any:
    from gunicorn.config import Config

    from pounce_worker.asgi.hooks import Hooks
    from pounce_worker.budget import RequestBudget
    from pounce_worker.config import ServerConfig
    from pounce_worker.log import LoopLog
    from pounce_worker.loop.server import LoopServer

    cfg = Config()
    config = ServerConfig.from_gunicorn(cfg, env={"POUNCE_WORKER_MODE": "processes"})

    class Worker:
        def budget_exhausted(self) -> None:
            pass

    server = LoopServer(0, config, ws_app, [], None, Worker(), Hooks.from_gunicorn(cfg),
                        LoopLog(QuietLogger(), os.getpid(), 0), RequestBudget(0), "asyncio")
    server.loop = asyncio.get_running_loop()
    return server


async def open_session(server: Any, deflate: bool) -> tuple[Any, FakeTransport]:
    from pounce_worker.http1.connection import HTTPConnection

    connection = HTTPConnection(server)
    transport = FakeTransport()
    transport.protocol = connection
    connection.connection_made(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if deflate:
        head += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits\r\n"
    connection.data_received((head + "\r\n").encode())
    for _ in range(100):
        if transport.written:
            break
        await asyncio.sleep(0)
    assert transport.protocol is not connection and b" 101 " in transport.last, transport.last[:200]
    return transport.protocol, transport


async def drive(size: int, binary: bool, deflate: bool, sessions: int, messages: int,
                profile: cProfile.Profile | None) -> float:
    server = make_server()
    pairs = [await open_session(server, deflate) for _ in range(sessions)]
    data = payload(size)
    if deflate:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        body = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        out = frame(2 if binary else 1, body[:-4], rsv1=True)
    else:
        out = frame(2 if binary else 1, data)

    async def round_trip() -> None:
        before = [t.writes for _, t in pairs]
        for session, _ in pairs:
            session.data_received(out)
        for _ in range(1000):
            if all(t.writes > old for (_, t), old in zip(pairs, before, strict=True)):
                return
            await asyncio.sleep(0)
        raise RuntimeError("no echo")

    for _ in range(20):
        await round_trip()
    rounds = max(1, messages // sessions)
    if profile is not None:
        profile.enable()
    start = time.process_time()
    for _ in range(rounds):
        await round_trip()
    elapsed = time.process_time() - start
    if profile is not None:
        profile.disable()
    return elapsed / (rounds * sessions)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--binary", action="store_true")
    ap.add_argument("--deflate", action="store_true")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--messages", type=int, default=40000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    profile = cProfile.Profile() if args.profile else None
    seconds = asyncio.run(drive(args.size, args.binary, args.deflate, args.sessions, args.messages, profile))
    print(f"pounce_worker ws {args.size} B {'binary' if args.binary else 'text'}"
          f"{' deflate' if args.deflate else ''} on {sys.version.split()[0]}: {seconds * 1e6:.1f} µs/message"
          f"{' (under cProfile)' if profile else ''}")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
