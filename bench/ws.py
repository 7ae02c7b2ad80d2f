#!/usr/bin/env python3
"""WebSocket echo benchmark: server CPU per message, pounce_worker against its peers (issue 14).

    python bench/ws.py              # full matrix, about 10 minutes
    python bench/ws.py --quick      # smoke run, about 3 minutes
    python bench/ws.py --list       # which servers are installed, then exit
    python bench/ws.py --peers pounce-asyncio,uvicorn --cells 64-text,64k-bin-deflate

Every server serves ``bench.ws_app:app`` (accept, echo each message as it came)
from one worker process, pinned to one CPU; the clients run pinned to the other.
The clients are ``--client-procs`` processes holding ``--connections``
connections, each with one message in flight (16 clients sending one message
at a time, as in the issue). By default they are bench/ws_load.c, compiled
here with ``cc`` (the upgrade is done in Python, the processes inherit the
sockets): a few microseconds per message, so the server always has a message
waiting and its CPU per message is its own work. ``--client python`` runs
bench/ws_client.py instead, which costs about as much per message as the
servers do: server and clients then take turns, and a server's figure
depends on how often it is woken (bench/ws_load.py says more). Cells: 64 B and 64 KiB messages, text and
binary, without and with permessage-deflate (the client offers
``client_no_context_takeover``, so each of its messages is compressed once,
ahead of time; the server keeps its own context).

The figure is **server CPU per echoed message**: utime+stime from
/proc/PID/stat of the server's worker processes (the master's descendants; the
master itself is reported apart), sampled at the start and end of each measured
window, divided by the messages echoed in it. Wall time is not used for it, so
other work on the machine hardly moves it; msg/s is reported too. The table
gives each server's ratio to UvicornWorker (uvicorn's default WebSocket
implementation, websockets' sans-I/O protocol, on uvloop + httptools).

Servers are started in their own session (process group = their PID), stopped
with SIGTERM to that PID, then SIGKILL to that group after 15 s; nothing else is
signalled. Results: ``bench/results/ws-<tag>.json`` and ``.txt``; server logs
in ``bench/results/logs/ws-<tag>/`` (not committed). See bench/README.rst.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:  # python bench/ws.py: bench/ is sys.path[0]; import its modules as the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import PORT, Launch, gunicorn_cmd
from bench.procs import CLK_TCK, HOST, busy_ticks, cpu_seconds, voluntary_switches
from bench.solo import Peer, SoloServer, choose, in_turn, options, spread, stop_all, write_results
from bench.ws_client import CELLS, Cell, check
from bench.ws_load import CompiledLoad, Load, PythonLoad, build

APP = "bench.ws_app:app"
REFERENCE = "uvicorn"
#: srv% under which a compiled-client run is flagged: the server was not the limit.
SATURATED = 90
DISTS = ("gunicorn", "wsproto", "websockets", "uvicorn", "uvicorn-worker", "uvloop", "httptools", "granian")


# -- servers -------------------------------------------------------------------------------------


def gunicorn(worker: str, *extra: str) -> Callable[[str], Launch]:
    return lambda py: Launch(gunicorn_cmd(py, worker, *extra, threads=None, chdir=None, app=APP))


PEERS = (
    Peer("pounce-asyncio", "pounce_worker (asyncio, wsproto)", ("gunicorn", "pounce_worker", "wsproto"),
         gunicorn("pounce_worker.ThreadWorker", "--asgi-loop", "asyncio")),
    Peer("pounce-uvloop", "pounce_worker (uvloop, wsproto)", ("gunicorn", "pounce_worker", "wsproto", "uvloop"),
         gunicorn("pounce_worker.ThreadWorker", "--asgi-loop", "uvloop")),
    Peer("pounce-uvloop-puremask", "pounce_worker (uvloop, pure-Python unmask)",
         ("gunicorn", "pounce_worker", "wsproto", "uvloop"),
         gunicorn("pounce_worker.ThreadWorker", "--asgi-loop", "uvloop", "-c", "python:bench.ws_puremask")),
    Peer("uvicorn", "UvicornWorker (websockets-sansio, uvloop)",
         ("gunicorn", "uvicorn", "uvicorn_worker", "websockets", "uvloop", "httptools"),
         gunicorn("uvicorn_worker.UvicornWorker")),
    Peer("uvicorn-asyncio", "UvicornWorker (websockets-sansio, asyncio)",
         ("gunicorn", "uvicorn", "uvicorn_worker", "websockets", "httptools"),
         gunicorn("bench.ws_app.UvicornAsyncioWorker")),
    Peer("uvicorn-wsproto", "UvicornWorker --ws wsproto (uvloop)",
         ("gunicorn", "uvicorn", "uvicorn_worker", "wsproto", "uvloop", "httptools"),
         gunicorn("bench.ws_app.UvicornWsprotoWorker")),
    Peer("gunicorn-asgi", "gunicorn -k asgi (uvloop)", ("gunicorn", "gunicorn.asgi.websocket", "uvloop"),
         gunicorn("asgi", "--asgi-loop", "uvloop")),
    Peer("granian", "granian (asgi)", ("granian",),
         lambda py: Launch([py, "-m", "granian", "--interface", "asgi", "--http", "1", "--workers", "1",
                            "--host", HOST, "--port", PORT, "--log-level", "info", APP])),
)
PEER_KEYS = tuple(p.key for p in PEERS)


class WsServer(SoloServer):
    def answers(self) -> bool:
        """``GET /`` answers 200 (bench.ws_app) and the workers are up."""
        try:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                conn.request("GET", "/")
                return conn.getresponse().status == 200 and bool(self.workers())
            finally:
                conn.close()
        except OSError:
            return False

    def worker_cpu(self) -> tuple[float, float]:
        """(workers, master) CPU seconds; a server without children counts as its own worker."""
        workers = self.workers()
        master = cpu_seconds([self.pid])
        if not workers:
            return master, 0.0
        return cpu_seconds(workers), master

    def sleeps(self) -> int:
        """Times the server's threads blocked (voluntary context switches): a server that answers faster
        than the next message arrives sleeps and is woken once per message or so, and each wake-up costs
        kernel time that grows with the machine's load (the hog it preempts). Its workers', or its own
        without children."""
        return voluntary_switches(self.workers() or [self.pid])


# -- the run -------------------------------------------------------------------------------------


def measure(server: WsServer, cell: Cell, args: argparse.Namespace) -> dict[str, Any]:
    if args.client_binary is not None:
        load: Load = CompiledLoad(args.client_binary, server.port, cell, args.connections, args.client_procs)
    else:
        load = PythonLoad(server.port, cell, args.connections, args.client_procs)
    try:
        time.sleep(args.warmup)

        def snap() -> tuple[float, int, float, float, float, float, int]:
            workers, master = server.worker_cpu()
            return (time.monotonic(), load.count(), workers, master,
                    cpu_seconds(load.pids), busy_ticks() / CLK_TCK, server.sleeps())

        a = snap()
        time.sleep(args.duration)
        b = snap()
        failed = load.failed()
        deflate = load.deflate()
    finally:
        load.stop()
    dt, msgs = b[0] - a[0], b[1] - a[1]
    srv, master, cli, busy = b[2] - a[2], b[3] - a[3], b[4] - a[4], b[5] - a[5]
    return {
        "seconds": dt, "messages": msgs, "msg_s": msgs / dt if dt else 0.0,
        "us_per_msg": srv / msgs * 1e6 if msgs else None,
        "sleeps_per_msg": (b[6] - a[6]) / msgs if msgs else None,
        "srv_pct": srv / dt * 100, "master_pct": master / dt * 100, "cli_pct": cli / dt * 100,
        "oth_pct": max(0.0, (busy - srv - master - cli) / dt * 100),
        "deflate": deflate,
        "failed": failed,
    }


def _median(values: list[float | None], fmt: str) -> str:
    known = [v for v in values if v is not None]
    return format(statistics.median(known), fmt) if known else "-"


def table(results: dict[str, Any], peers: list[Peer], cells: list[Cell]) -> str:
    lines = []
    for cell in cells:
        lines.append(f"\n{cell.key}: {cell.size} B {'binary' if cell.binary else 'text'} messages"
                     f"{', permessage-deflate offered' if cell.deflate else ''}")
        lines.append(f"  {'server':<44} {'msg/s (min-max)':>24} {'srv us/msg (min-max)':>24} "
                     f"{'/uvicorn':>8} {'srv%':>5} {'cli%':>5} {'oth%':>5} {'slp/msg':>7}")
        ref = results.get(REFERENCE, {}).get(cell.key, {})
        ref_us = ref.get("us_median")
        for peer in peers:
            r = results.get(peer.key, {}).get(cell.key)
            if r is None:
                continue
            if r.get("error"):
                lines.append(f"  {peer.label:<44} failed: {r['error']}")
                continue
            runs = r["runs"]
            us = [x["us_per_msg"] for x in runs if x["us_per_msg"]]
            ratio = f"{r['us_median'] / ref_us:.2f}" if ref_us and r.get("us_median") else "-"
            note = "" if not cell.deflate or r["deflate"] else "  (deflate declined: plain frames)"
            # With the compiled client the server should be the limit; under it, other work on the
            # machine took the server's CPU and its figure is a loaded core's, not a quiet one's.
            busy = sum(1 for x in runs if x.get("client") == "compiled" and x["srv_pct"] < SATURATED)
            if busy:
                note += f"  (server under {SATURATED} % in {busy} of {len(runs)} runs: the machine was busy)"
            lines.append(
                f"  {peer.label:<44} {spread([x['msg_s'] for x in runs], ',.0f'):>24} {spread(us, '.1f'):>24} "
                f"{ratio:>8} {statistics.median(x['srv_pct'] for x in runs):>5.0f} "
                f"{statistics.median(x['cli_pct'] for x in runs):>5.0f} "
                f"{statistics.median(x['oth_pct'] for x in runs):>5.0f} "
                f"{_median([x.get('sleeps_per_msg') for x in runs], '.2f'):>7}"
                f"{note}"
            )
    lines.append("\nsrv us/msg: server worker CPU (utime+stime) per echoed message, median of the runs; "
                 "/uvicorn: that over UvicornWorker's (lower is cheaper). srv%/cli%/oth%: CPU of the server's "
                 "workers, of the clients and of everything else, in % of one core. slp/msg: times the "
                 "server's threads blocked (voluntary context switches) per message, median: a server that "
                 "sleeps more per message pays more kernel time per wake-up on a loaded machine.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options(ap, "1 x 2 s per cell after 0.5 s warm-up", PEER_KEYS,
            after_peers=[("--cells", {"default": ",".join(CELLS), "help": "of: " + ", ".join(CELLS)})],
            load=[("--connections", {"type": int, "default": 16}), ("--client-procs", {"type": int, "default": 2}),
                  ("--client", {"choices": ("compiled", "python"), "default": "compiled",
                                "help": "compiled: bench/ws_load.c, cheap enough that the server is the limit "
                                        "(built with cc; python if it cannot be); python: bench/ws_client.py"})])
    args = ap.parse_args(argv)
    args.client_binary = None
    if args.client == "compiled":
        args.client_binary, why = build()
        if args.client_binary is None:
            print(f"the compiled client cannot be built ({why}): using the Python client")
            args.client = "python"
    args.duration = args.duration or (2.0 if args.quick else 3.0)
    args.reps = args.reps or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    tag = args.tag or ("quick" if args.quick else "full")

    wanted = [k.strip() for k in args.peers.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in PEER_KEYS]
    if unknown:
        ap.error(f"unknown peers {unknown}; keys: {', '.join(PEER_KEYS)}")
    cells = [CELLS[k.strip()] for k in args.cells.split(",") if k.strip()]
    chosen = choose(args.python, PEERS, wanted, DISTS)
    if chosen is None:
        return 2
    interp, peers, skipped = chosen
    for key, why in skipped.items():
        print(f"skipped {key}: {why}")
    if args.list:
        for peer in peers:
            print(f"installed {peer.key}: {peer.label}")
        return 0
    if not peers:
        print("no server to run")
        return 1
    if not args.no_pin:
        os.sched_setaffinity(0, {args.client_cpu})  # the clients (forked) and this script's sampling
    log_dir = args.out_dir / "logs" / f"ws-{tag}"
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: dict[str, WsServer] = {}
    results: dict[str, dict[str, Any]] = {p.key: {} for p in peers}
    started = _dt.datetime.now(_dt.timezone.utc)
    try:
        for peer in peers:
            servers[peer.key] = WsServer(peer, args.python, log_dir, None if args.no_pin else args.server_cpu)
        for key, server in list(servers.items()):
            try:
                server.wait_ready()
            except RuntimeError as exc:
                print(f"{key}: {exc}")
                for cell in cells:
                    results[key][cell.key] = {"error": str(exc)}
                server.stop()
                del servers[key]
        for cell in cells:
            live = []
            for key, server in servers.items():
                problem = check(server.port, cell)
                if problem:
                    results[key][cell.key] = {"error": f"check failed: {problem}"}
                    print(f"{cell.key} {key}: check failed: {problem}")
                else:
                    results[key][cell.key] = {"runs": []}
                    live.append(key)
            for rep in range(args.reps):
                for key in in_turn(live, rep):
                    cell_result = results[key][cell.key]
                    if cell_result.get("error"):
                        continue
                    try:
                        run = measure(servers[key], cell, args)
                    except RuntimeError as exc:
                        cell_result["error"] = str(exc)
                        print(f"{cell.key} {key}: {exc}")
                        continue
                    if run["failed"]:
                        # A client process that exited mid-window (a close, a protocol error) leaves
                        # its connections quiet: the run's figure would be a different load's.
                        cell_result["error"] = "a client process failed during a run (its stderr says why)"
                        print(f"{cell.key} {key}: {cell_result['error']}")
                        continue
                    run["client"] = args.client
                    cell_result["runs"].append(run)
                    print(f"{cell.key:<18} {key:<16} rep {rep + 1}: {run['msg_s']:>9,.0f} msg/s "
                          f"{run['us_per_msg'] or 0:>7.1f} us/msg srv {run['srv_pct']:>3.0f}% "
                          f"cli {run['cli_pct']:>3.0f}% oth {run['oth_pct']:>3.0f}% "
                          f"slp/msg {run['sleeps_per_msg'] or 0:.2f}"
                          f"{'' if run['deflate'] or not cell.deflate else ' (no deflate)'}", flush=True)
            for key in live:
                r = results[key][cell.key]
                runs = r.get("runs") or []
                us = [x["us_per_msg"] for x in runs if x["us_per_msg"]]
                r["us_median"] = statistics.median(us) if us else None
                r["msg_s_median"] = statistics.median(x["msg_s"] for x in runs) if runs else None
                r["deflate"] = all(x["deflate"] for x in runs) if runs else False
    except KeyboardInterrupt:
        print("interrupted: writing partial results")
    finally:
        problems = stop_all(servers)
    text = table(results, peers, cells)
    pin = "no pinning" if args.no_pin else f"server on CPU {args.server_cpu}, clients on CPU {args.client_cpu}"
    header = (f"bench/ws.py {tag}: {started:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
              f"{args.connections} connections in {args.client_procs} {args.client} client processes, "
              f"{args.reps} x {args.duration:g} s per cell after {args.warmup:g} s warm-up, "
              f"{pin}")
    write_results("ws", args, tag, started, header, interp.version_record(), text, servers, skipped, problems,
                  results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
