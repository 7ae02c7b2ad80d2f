"""HTTP/2's cost per request without sockets: what bench/h2.py's h2load runs cannot isolate.

Drives 32 H2Connection objects of one loop with pre-built client bytes (HEADERS
frames for 10 streams per connection per round, as ``h2load -c 32 -m 10``
sends them, byte for byte: nghttp2 indexes every field but ``:path``, which it
sends as a literal without indexing in every request), a fake transport counting what is written, so what is measured is
pounce_worker's HTTP/2 path, h2's, the loop's and the app's, the same way every time:

    python bench/h2cost.py                 # µs per request, GET /plain
    python bench/h2cost.py --profile       # cProfile, top functions by own time
    python bench/h2cost.py --requests 20000
    python bench/h2cost.py --plain-h2      # the same without the fast path (http2/fastpath.py)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/h2.py would shadow the h2 package: import from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
from gunicorn.config import Config  # noqa: E402

from bench.apps import app as bench_app  # noqa: E402
from bench.cost import CountingTransport, QuietLogger  # noqa: E402

CONNECTIONS = 32
STREAMS = 10
#: What h2load (nghttp2 1.52) sends, in its order; ``:path`` goes first, never indexed (``path_field``).
PATH = b"/plain"
HEADERS = [(b":scheme", b"http"), (b":authority", b"127.0.0.1:8000"), (b":method", b"GET"),
           (b"user-agent", b"h2load nghttp2/1.52.0")]


def path_field(path: bytes) -> bytes:
    """``:path`` as nghttp2 encodes it: a literal without indexing, name index 4, Huffman-coded value."""
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(path)
    assert len(coded) < 127
    return bytes((0x04, 0x80 | len(coded))) + coded


def client_rounds(rounds: int) -> tuple[bytes, list[bytes]]:
    """The client's preface+SETTINGS(+ACK of ours), then each round's HEADERS of STREAMS streams."""
    from hpack import Encoder
    from hyperframe.frame import HeadersFrame, SettingsFrame

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.increment_flow_control_window(2**30 - 65535)
    # Our SETTINGS arrive before the first request: the client ACKs them (as h2load does).
    first = client.data_to_send() + SettingsFrame(0, flags=["ACK"]).serialize()
    encoder = Encoder()
    path = path_field(PATH)
    out = []
    stream_id = 1
    for _ in range(rounds):
        frames = []
        for _ in range(STREAMS):
            block = path + encoder.encode(HEADERS)
            frames.append(HeadersFrame(stream_id, data=block, flags=["END_STREAM", "END_HEADERS"]).serialize())
            stream_id += 2
        out.append(b"".join(frames))
    return first, out


def make_server() -> Any:
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

    server = LoopServer(0, config, bench_app, [], None, Worker(), Hooks.from_gunicorn(cfg),
                        LoopLog(QuietLogger(), os.getpid(), 0), RequestBudget(0), "asyncio")
    server.loop = asyncio.get_running_loop()
    return server


async def drive(requests: int, profile: cProfile.Profile | None) -> tuple[float, int]:
    from pounce_worker.http2.connection import H2Connection
    from pounce_worker.http2.machine import quiet_hpack

    quiet_hpack()  # as ThreadWorker.run does where HTTP/2 is on

    server = make_server()
    rounds = max(1, requests // (CONNECTIONS * STREAMS)) + 5
    first, per_round = client_rounds(rounds)
    pairs = []
    for _ in range(CONNECTIONS):
        transport = CountingTransport()
        connection = H2Connection(server, transport, ("127.0.0.1", 50000), ("127.0.0.1", 8000), "http", False)  # type: ignore[arg-type]
        connection.start(first)
        pairs.append((connection, transport))
    await asyncio.sleep(0)

    async def round_trip(data: bytes) -> None:
        before = [t.written for _, t in pairs]
        for connection, _ in pairs:
            connection.data_received(data)
        for _ in range(1000):
            if all(t.written > old and not c.streams for (c, t), old in zip(pairs, before, strict=True)):
                return
            await asyncio.sleep(0)
        raise RuntimeError("no response")

    for data in per_round[:5]:
        await round_trip(data)
    if profile is not None:
        profile.enable()
    start = time.process_time()
    for data in per_round[5:]:
        await round_trip(data)
    elapsed = time.process_time() - start
    if profile is not None:
        profile.disable()
    n = (rounds - 5) * CONNECTIONS * STREAMS
    return elapsed / n, sum(t.written for _, t in pairs) // (rounds * CONNECTIONS * STREAMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--plain-h2", action="store_true",
                        help="h2's own state machine (machine.ServerMachine), without the fast path")
    args = parser.parse_args()
    if args.plain_h2:
        from pounce_worker.http2 import connection, machine

        connection.FastMachine = machine.ServerMachine  # type: ignore[misc]
    import pounce_worker

    print(f"pounce_worker from {Path(pounce_worker.__file__ or '').parent}")
    profile = cProfile.Profile() if args.profile else None
    per, written = asyncio.run(drive(args.requests, profile))
    print(f"{per * 1e6:.1f} µs/request, {written} bytes written/request")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
