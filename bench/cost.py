"""The server's own cost per request, without sockets: what bench/run.py cannot isolate.

wrk numbers mix the server with the kernel, the client and the machine's noise.
This drives requests straight into 64 keep-alive HTTPConnection objects of one
loop, one request each per loop iteration (a fake transport counts the bytes
written), so what is measured is pounce_worker's Python path and the loop's
(and the app's), the same way every time:

    python bench/cost.py                      # µs per request, plain response
    python bench/cost.py --path /json         # another bench/apps.py route
    python bench/cost.py --floor              # the same through bench/floor.py
    python bench/cost.py --by-function        # bytecodes per request, per function (3.12+)
    python bench/cost.py --callgrind          # CPU instructions per request (valgrind)

``--callgrind`` runs this script under valgrind twice (a short and a long run)
and divides the difference, so start-up cost cancels out: the number the
README's "how the per-request cost came down" list uses. It is exact and
repeatable on a shared machine, where timings are not.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gunicorn.config import Config  # noqa: E402
from gunicorn.glogging import Logger  # noqa: E402

from bench.apps import app as bench_app  # noqa: E402

#: Keep-alive connections driven at once, as bench/run.py's wrk runs.
CONNECTIONS = 64
HEAD = b"GET %s HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


class CountingTransport:
    """Just enough of an asyncio transport: writes are counted, never sent."""

    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class QuietLogger(Logger):
    """Gunicorn's logger, minus its setup and its output."""

    def __init__(self) -> None:  # no handlers, no files
        self.cfg = Config()

    def _drop(self, *args: Any, **kwargs: Any) -> None:
        pass

    debug = info = warning = error = exception = critical = _drop


def pounce_connections(app: Any) -> Any:
    """A factory of HTTPConnections on one LoopServer for the running loop, as a worker's loop has."""
    from pounce_worker.asgi.hooks import Hooks
    from pounce_worker.budget import RequestBudget
    from pounce_worker.config import ServerConfig
    from pounce_worker.http1.connection import HTTPConnection
    from pounce_worker.log import LoopLog
    from pounce_worker.loop.server import LoopServer

    cfg = Config()
    config = ServerConfig.from_gunicorn(cfg, env={"POUNCE_WORKER_MODE": "processes"})

    class Worker:
        def budget_exhausted(self) -> None:
            pass

    server = LoopServer(0, config, app, [], None, Worker(), Hooks.from_gunicorn(cfg),
                        LoopLog(QuietLogger(), os.getpid(), 0), RequestBudget(0), "asyncio")
    server.loop = asyncio.get_running_loop()
    return lambda: HTTPConnection(server)


def floor_connections(app: Any) -> Any:
    from bench.floor import Floor

    loop = asyncio.get_running_loop()
    loop.set_task_factory(getattr(asyncio, "eager_task_factory", None))  # as fair as it gets
    return lambda: Floor(app, loop)


async def drive(server: str, path: bytes, requests: int, counting: Any = None) -> tuple[float, int]:
    """``requests`` requests over 64 keep-alive connections, one request each per loop iteration,
    as wrk's 64 connections arrive under load; (seconds per request, bytes written)."""
    make = (floor_connections if server == "floor" else pounce_connections)(bench_app)
    pairs = []
    for _ in range(CONNECTIONS):
        connection = make()
        transport = CountingTransport()
        connection.connection_made(transport)
        pairs.append((connection, transport))
    request = HEAD % path

    async def round_trip() -> None:
        before = [transport.written for _, transport in pairs]
        for connection, _ in pairs:
            connection.data_received(request)
        # Responses leave at once, at the end of the iteration, or from the app's task
        # (no eager tasks before 3.12): let the loop run until every connection answered.
        for _ in range(1000):
            if all(transport.written > old for (_, transport), old in zip(pairs, before, strict=True)):
                return
            await asyncio.sleep(0)
        raise RuntimeError(f"no response to {request!r}")

    for _ in range(10):  # warm the caches (and the specialising interpreter)
        await round_trip()
    rounds = max(1, requests // CONNECTIONS)
    if counting is not None:
        counting.start()
    start = time.perf_counter()
    for _ in range(rounds):
        await round_trip()
    elapsed = time.perf_counter() - start
    if counting is not None:
        counting.stop()
    written = sum(transport.written for _, transport in pairs)
    return elapsed / (rounds * CONNECTIONS), written // ((rounds + 10) * CONNECTIONS)


class BytecodeCount:
    """Bytecodes executed per function, with sys.monitoring (CPython 3.12+)."""

    TOOL = 4

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        monitoring = sys.monitoring  # type: ignore[attr-defined]
        monitoring.use_tool_id(self.TOOL, "pounce-cost")
        counts = self.counts

        def on_instruction(code: Any, _offset: int) -> None:
            counts[(Path(code.co_filename).name, code.co_qualname)] += 1

        monitoring.register_callback(self.TOOL, monitoring.events.INSTRUCTION, on_instruction)

    def start(self) -> None:
        sys.monitoring.set_events(self.TOOL, sys.monitoring.events.INSTRUCTION)  # type: ignore[attr-defined]

    def stop(self) -> None:
        sys.monitoring.set_events(self.TOOL, 0)  # type: ignore[attr-defined]


def callgrind(args: argparse.Namespace) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    totals = []
    for requests in (args.requests // 10, args.requests):  # whole rounds of CONNECTIONS requests
        command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
                   "--requests", str(requests), "--path", args.path, *(["--floor"] if args.floor else [])]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        line = [row for row in done.stderr.splitlines() if "Collected" in row]
        if done.returncode or not line:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        totals.append(int(line[-1].split()[-1]))
    per_request = (totals[1] - totals[0]) / (args.requests - args.requests // 10)
    print(f"{'floor.py' if args.floor else 'pounce_worker'} {args.path}: {per_request:,.0f} instructions/request")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--path", default="/plain", help="bench/apps.py route (default /plain)")
    parser.add_argument("--requests", type=int, default=20000, help="requests to send (default 20000)")
    parser.add_argument("--floor", action="store_true", help="measure bench/floor.py instead")
    parser.add_argument("--by-function", action="store_true", help="bytecodes per request, per function (3.12+)")
    parser.add_argument("--callgrind", action="store_true", help="CPU instructions per request, under valgrind")
    args = parser.parse_args(argv)
    if args.callgrind:
        return callgrind(args)
    counting = None
    if args.by_function:
        if not hasattr(sys, "monitoring"):
            print("--by-function needs sys.monitoring (CPython 3.12+)", file=sys.stderr)
            return 2
        counting = BytecodeCount()
    server = "floor" if args.floor else "pounce"
    seconds, written = asyncio.run(drive(server, args.path.encode(), args.requests, counting))
    name = "floor.py" if args.floor else "pounce_worker"
    print(f"{name} {args.path} on {sys.implementation.name} {sys.version.split()[0]}: "
          f"{seconds * 1e6:.1f} µs/request, {written} bytes/response")
    if counting is not None:
        total = sum(counting.counts.values())
        print(f"{total / args.requests:,.0f} bytecodes/request; the functions that ran the most:")
        for (filename, function), count in counting.counts.most_common(20):
            print(f"{count / args.requests:8.1f}  {filename}:{function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
