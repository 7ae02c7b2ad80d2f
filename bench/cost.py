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
    python bench/cost.py --callgrind --baseline 7682190   # the same for the working tree and that commit

``--callgrind`` runs this script under valgrind twice (a short and a long run)
and divides the difference, so start-up cost cancels out: the number the
README's "how the per-request cost came down" list uses. It is exact and
repeatable on a shared machine, where timings are not.

``--baseline REF`` measures the working tree and pounce_worker as of REF (a
``git archive`` export, bench/refs.py) in separate child processes, each
importing its own copy, and prints both and their ratio: the check that a
change to the core costs no more per request than the commit before it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gunicorn.config import Config  # noqa: E402
from gunicorn.glogging import Logger  # noqa: E402

from bench import refs  # noqa: E402
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


#: Where each class lives, newest layout first: --baseline imports commits from before the
#: package moved into folders (7682190 and older: pounce_worker/protocol.py, server.py, hooks.py).
LAYOUTS: dict[str, tuple[str, ...]] = {
    "Hooks": ("pounce_worker.asgi.hooks", "pounce_worker.hooks"),
    "RequestBudget": ("pounce_worker.budget",),
    "ServerConfig": ("pounce_worker.config",),
    "HTTPConnection": ("pounce_worker.http1.connection", "pounce_worker.protocol"),
    "LoopLog": ("pounce_worker.log",),
    "LoopServer": ("pounce_worker.loop.server", "pounce_worker.server"),
}


def pounce_class(name: str) -> Any:
    """``name`` from the first module of LAYOUTS whose file exists in the pounce_worker being measured.

    Tried by file, not by catching ImportError: the editable install's finder would
    answer a new-layout name with the working tree's module (see refs.Origin).
    """
    import pounce_worker

    package = Path(pounce_worker.__file__ or "").parent
    for module in LAYOUTS[name]:
        path = package.joinpath(*module.split(".")[1:])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return getattr(importlib.import_module(module), name)
    raise ImportError(f"{name} is in none of {', '.join(LAYOUTS[name])} under {package}: "
                      "update bench/cost.py's LAYOUTS")


def pounce_connections(app: Any) -> Any:
    """A factory of HTTPConnections on one LoopServer for the running loop, as a worker's loop has."""
    Hooks = pounce_class("Hooks")
    RequestBudget = pounce_class("RequestBudget")
    ServerConfig = pounce_class("ServerConfig")
    HTTPConnection = pounce_class("HTTPConnection")
    LoopLog = pounce_class("LoopLog")
    LoopServer = pounce_class("LoopServer")

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


#: What a child run prints, read back by --baseline and --callgrind.
ORIGIN = "pounce_worker from "
MICROSECONDS = re.compile(r"([\d.]+) µs/request")
BYTECODES = re.compile(r"^([\d,]+) bytecodes/request", re.MULTILINE)
#: --baseline without --callgrind: timed child runs per tree, taken in turns (tree, baseline, tree...)
#: so a burst of other work on the machine does not land on one side only. One with --by-function:
#: bytecode counts do not vary, and sys.monitoring makes each run a hundred times slower.
TURNS = 3


class CostError(RuntimeError):
    """A child run that failed or measured the wrong code; the message says which and why."""


@contextlib.contextmanager
def trees(args: argparse.Namespace) -> Iterator[list[tuple[str, Path | None]]]:
    """(label, directory pounce_worker is imported from) of each tree measured: one, or --baseline's two."""
    if not args.baseline:
        yield [("", args.code_dir)]
        return
    try:
        commit = refs.commit_of(args.baseline)
    except refs.RefError as exc:
        raise CostError(f"--baseline {args.baseline}: {exc}") from exc
    with refs.exported(commit) as baseline:
        yield [("working tree" if args.code_dir is None else str(args.code_dir), args.code_dir or ROOT),
               (f"@{commit} (baseline)", baseline)]


def child(args: argparse.Namespace, code_dir: Path | None, requests: int, by_function: bool = False) -> list[str]:
    """This script measuring one tree in a fresh interpreter: nothing imported from the other one."""
    return [sys.executable, __file__, "--requests", str(requests), "--path", args.path,
            *(["--floor"] if args.floor else []), *(["--by-function"] if by_function else []),
            *(["--code-dir", str(code_dir)] if code_dir is not None else [])]


def origin_of(output: str, code_dir: Path | None) -> str | None:
    """Where the child imported pounce_worker from; CostError if not from ``code_dir``."""
    origin = next((line[len(ORIGIN):] for line in output.splitlines() if line.startswith(ORIGIN)), None)
    if code_dir is not None and not refs.is_under(origin, code_dir):
        raise CostError(f"asked for pounce_worker from {code_dir}, the child imported it from {origin}")
    return origin


def instructions(valgrind: str, args: argparse.Namespace, code_dir: Path | None) -> tuple[float, str | None]:
    """CPU instructions per request of one tree (a short and a long run: start-up cancels out), and its origin."""
    totals, origin = [], None
    for requests in (args.requests // 10, args.requests):  # whole rounds of CONNECTIONS requests
        command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *child(args, code_dir, requests)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        line = [row for row in done.stderr.splitlines() if "Collected" in row]
        if done.returncode or not line:
            raise CostError(done.stderr[-2000:])
        totals.append(int(line[-1].split()[-1]))
        origin = origin_of(done.stdout, code_dir)
    return (totals[1] - totals[0]) / (args.requests - args.requests // 10), origin


def callgrind(args: argparse.Namespace) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    name = "floor.py" if args.floor else "pounce_worker"
    counts = []
    with trees(args) as measured:
        for label, code_dir in measured:
            per_request, origin = instructions(valgrind, args, code_dir)
            counts.append(per_request)
            print(f"{name}{' ' + label if label else ''} {args.path}: {per_request:,.0f} instructions/request")
            if origin:
                print(f"  {ORIGIN}{origin}")
    if len(counts) == 2:
        print(f"working tree / baseline: {counts[0] / counts[1]:.3f} "
              f"({counts[0] - counts[1]:+,.0f} instructions/request; above 1: the working tree costs more)")
    return 0


def timed(args: argparse.Namespace) -> int:
    """--baseline without --callgrind: µs per request (and --by-function's bytecodes) of both trees."""
    turns = 1 if args.by_function else TURNS
    with trees(args) as measured:
        times: dict[str, list[float]] = {label: [] for label, _ in measured}
        last: dict[str, str] = {}
        for _ in range(turns):
            for label, code_dir in measured:
                done = subprocess.run(child(args, code_dir, args.requests, args.by_function),
                                      capture_output=True, text=True)
                found = MICROSECONDS.search(done.stdout)
                if done.returncode or found is None:
                    raise CostError(f"{label}: {(done.stderr or done.stdout)[-2000:]}")
                origin_of(done.stdout, code_dir)
                times[label].append(float(found.group(1)))
                last[label] = done.stdout
    for label, output in last.items():
        print(f"== {label}{f' (last of {turns} runs)' if turns > 1 else ''} ==\n{output.rstrip()}")
    (tree, tree_us), (base, base_us) = ((label, statistics.median(runs)) for label, runs in times.items())
    how = f"medians of {turns} runs taken in turns" if turns > 1 else "one run each"
    print(f"\n{tree}: {tree_us:.1f} µs/request, {base}: {base_us:.1f} ({how}); "
          f"working tree / baseline: {tree_us / base_us:.3f}")
    codes = [BYTECODES.search(last[label]) for label in (tree, base)]
    if codes[0] and codes[1]:
        tree_codes, base_codes = (int(c.group(1).replace(",", "")) for c in codes if c)
        print(f"bytecodes/request: {tree_codes:,} against {base_codes:,}, {tree_codes / base_codes:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--path", default="/plain", help="bench/apps.py route (default /plain)")
    parser.add_argument("--requests", type=int, default=20000, help="requests to send (default 20000)")
    parser.add_argument("--floor", action="store_true", help="measure bench/floor.py instead")
    parser.add_argument("--by-function", action="store_true", help="bytecodes per request, per function (3.12+)")
    parser.add_argument("--callgrind", action="store_true", help="CPU instructions per request, under valgrind")
    parser.add_argument("--baseline", metavar="REF",
                        help="measure the working tree and pounce_worker as of this git commit, print both "
                             "and their ratio")
    parser.add_argument("--code-dir", type=Path,
                        help="import pounce_worker from DIR/pounce_worker instead of the working tree")
    args = parser.parse_args(argv)
    if args.baseline and args.floor:
        parser.error("--baseline compares pounce_worker at two commits; floor.py has no baseline")
    try:
        if args.callgrind:
            return callgrind(args)
        if args.baseline:
            return timed(args)
    except (CostError, refs.RefError) as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.code_dir is not None:
        if not (args.code_dir / "pounce_worker" / "__init__.py").is_file():
            parser.error(f"--code-dir: no pounce_worker/__init__.py in {args.code_dir}")
        assert "pounce_worker" not in sys.modules, "imported before --code-dir could choose which one"
        sys.path.insert(0, str(args.code_dir.resolve()))
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
    if not args.floor:
        origin = refs.loaded_here()
        print(f"{ORIGIN}{origin.file}")
        if (wrong := origin.wrong(args.code_dir or ROOT)) is not None:
            print(wrong, file=sys.stderr)
            return 1
    if counting is not None:
        total = sum(counting.counts.values())
        print(f"{total / args.requests:,.0f} bytecodes/request; the functions that ran the most:")
        for (filename, function), count in counting.counts.most_common(20):
            print(f"{count / args.requests:8.1f}  {filename}:{function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
