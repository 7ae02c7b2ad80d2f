"""A mixed keep-alive load with clients that leave: what a real site sees behind a proxy.

``connections`` keep-alive connections share ``requests`` requests. Each request is
drawn (seeded) from a mix: plain GETs, database reads, POSTs whose body the view
reads, streamed responses, slow views; and some clients leave at the worst moment:
before the response (mid-request), halfway through a request body, while a
response streams, or by reset instead of a close. A connection idle for
``idle_drop`` seconds is closed by the client, as browsers and proxies do.

Used by tests/test_django_load.py; also runnable by hand against any server::

    python -m tests.load_client http://127.0.0.1:8000 /django-prefix 3000 32
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import socket
import struct
import sys
import time

import h11

#: (weight, kind). The kinds are defined in Client.one().
MIX = (
    (30, "plain"),
    (10, "db"),
    (10, "adb"),
    (10, "post"),
    (8, "stream"),
    (6, "sleep"),
    (6, "drop_before_response"),
    (5, "drop_mid_body"),
    (6, "drop_mid_stream"),
    (3, "reset_mid_stream"),
    (3, "reset_before_response"),
    (3, "idle"),
    (2, "warm"),
)


@dataclasses.dataclass
class Result:
    counts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    completed: int = 0


class Client:
    def __init__(self, host: str, port: int, prefix: str, result: Result, rng: random.Random,
                 idle_drop: float) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self.result = result
        self.rng = rng
        self.idle_drop = idle_drop
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.h11: h11.Connection | None = None
        self.last_used = 0.0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.h11 = h11.Connection(h11.CLIENT)
        self.last_used = time.monotonic()

    def close(self, reset: bool = False) -> None:
        if self.writer is not None:
            if reset:
                sock = self.writer.get_extra_info("socket")
                if sock is not None:
                    # SO_LINGER 0: the close sends RST, as a crashed client or a proxy abort does.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.close()
        self.reader = self.writer = self.h11 = None

    async def ensure(self) -> None:
        if self.writer is not None and time.monotonic() - self.last_used > self.idle_drop:
            self.close()  # the client's own idle timeout
        if self.writer is None:
            await self.connect()

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        assert self.h11 is not None
        headers = [("host", f"{self.host}:{self.port}")]
        if method == "POST":
            headers += [("content-type", "application/octet-stream"), ("content-length", str(len(body)))]
        data = self.h11.send(h11.Request(method=method, target=self.prefix + path, headers=headers))
        data += self.h11.send(h11.Data(data=body)) if body else b""
        data += self.h11.send(h11.EndOfMessage())
        return data

    async def read_response(self, stop_after_body: int | None = None) -> int | None:
        """Read one response; returns its status, or None after ``stop_after_body`` body bytes."""
        assert self.reader is not None and self.h11 is not None
        status = 0
        seen = 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), 30)
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                seen += len(event.data)
                if stop_after_body is not None and seen >= stop_after_body:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                self.result.statuses[status] += 1
                self.result.completed += 1
                if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
                    self.close()
                else:
                    self.h11.start_next_cycle()
                self.last_used = time.monotonic()
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before a complete response")

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def one(self, kind: str) -> None:
        self.result.counts[kind] += 1
        await self.ensure()
        rng = self.rng
        if kind in ("plain", "db", "adb", "sleep", "warm"):
            await self.send(self.request("GET", f"/{kind}/"))
            await self.read_response()
        elif kind == "post":
            size = rng.choice((10, 1000, 100_000))
            await self.send(self.request("POST", "/echo/", b"p" * size))
            await self.read_response()
        elif kind == "stream":
            await self.send(self.request("GET", "/stream/?n=10"))
            await self.read_response()
        elif kind in ("drop_before_response", "reset_before_response"):
            await self.send(self.request("GET", rng.choice(("/sleep/?s=0.1", "/db/", "/stream/?n=40"))))
            await asyncio.sleep(rng.uniform(0, 0.02))
            self.close(reset=kind.startswith("reset"))
        elif kind == "drop_mid_body":
            assert self.h11 is not None
            data = self.request("POST", "/echo/", b"b" * 200_000)
            await self.send(data[: rng.randint(200, 100_000)])
            await asyncio.sleep(rng.uniform(0, 0.02))
            self.close()
        elif kind in ("drop_mid_stream", "reset_mid_stream"):
            await self.send(self.request("GET", "/stream/?n=200&size=8192"))
            await self.read_response(stop_after_body=rng.randint(1, 200_000))
            self.close(reset=kind.startswith("reset"))
        elif kind == "idle":
            # A keep-alive connection left unused until the client's idle timeout closes it.
            await self.send(self.request("GET", "/plain/"))
            await self.read_response()
            await asyncio.sleep(self.idle_drop + 0.05)
            await self.ensure()
        else:
            raise ValueError(kind)


async def run_load(url: str, prefix: str = "", requests: int = 3000, connections: int = 32,
                   seed: int = 1, idle_drop: float = 1.0, mix: tuple[tuple[int, str], ...] = MIX) -> Result:
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    result = Result()
    remaining = [requests]
    weights = [w for w, _ in mix]
    kinds = [k for _, k in mix]

    async def connection_worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        client = Client(host, int(port), prefix, result, rng, idle_drop)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                kind = rng.choices(kinds, weights)[0]
                try:
                    await client.one(kind)
                except (OSError, ConnectionError, asyncio.TimeoutError, h11.ProtocolError) as exc:
                    result.errors[f"{kind}: {type(exc).__name__}"] += 1
                    client.close()
        finally:
            client.close()

    await asyncio.gather(*(connection_worker(i) for i in range(connections)))
    return result


def main(argv: list[str]) -> None:
    url = argv[1]
    prefix = argv[2] if len(argv) > 2 else ""
    requests = int(argv[3]) if len(argv) > 3 else 3000
    connections = int(argv[4]) if len(argv) > 4 else 32
    started = time.monotonic()
    result = asyncio.run(run_load(url, prefix, requests, connections))
    print(f"{time.monotonic() - started:.1f}s completed={result.completed}")
    print("kinds:", dict(result.counts))
    print("statuses:", dict(result.statuses))
    print("client errors:", dict(result.errors))


if __name__ == "__main__":
    main(sys.argv)
