#!/usr/bin/env python3
"""HTTP/2 benchmark: h2load over h2c against every Python peer that speaks it (issue 13 point 7).

    python bench/h2.py              # 3 x 10 s per server, about 3 minutes
    python bench/h2.py --quick      # 1 x 3 s per server, under a minute
    python bench/h2.py --list       # which servers are installed, then exit
    python bench/h2.py --peers gunicorn-asgi,granian --connections 32 --streams 10

Every server serves ``bench.apps:app`` (``GET /plain``: 13 bytes) from one worker process
pinned to one CPU (``taskset``); h2load runs pinned to the other, ``-c 32 -m 10`` (32
connections x 10 concurrent streams) over h2c with prior knowledge, as issue 13 measured
it. Rows:

=================  ===============================================================================
gunicorn-asgi      ``gunicorn -k asgi --http-protocols h2,h1 --http2-cleartext prior-knowledge``
                   (Gunicorn 27's own HTTP/2, h2 underneath): the reference of the ratios
hypercorn          ``hypercorn --workers 1`` (h2c prior knowledge is always on)
granian            ``granian --interface asgi --http 2 --workers 1`` (Rust, hyper)
pounce             ``gunicorn -k pounce_worker.ThreadWorker`` with the same Gunicorn settings,
                   process mode, one loop (asyncio); only once ``pounce_worker.http2`` exists
pounce-uvloop      the same with ``--asgi-loop uvloop``
=================  ===============================================================================

Figures per server: requests/s (h2load's own, over its measured window), failed requests
(h2load's ``failed + errored + timeout``, and non-2xx), and **server CPU per request**:
utime+stime of the server's worker processes from /proc/PID/stat, sampled before and
after each h2load run, divided by the requests that succeeded. Ratios are against
``gunicorn-asgi``. Runs are interleaved (rep 1 of every server, then rep 2...), medians
reported.

Servers are started in their own session and stopped by their PID (SIGTERM, then SIGKILL to
that process group). Results: ``bench/results/h2-<tag>.json`` and ``.txt``; server logs in
``bench/results/logs/h2-<tag>/`` (not committed). See bench/README.rst.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if __name__ == "__main__":
    # python bench/h2.py: bench/ is sys.path[0], and this file would shadow the h2 package for
    # anything that imports it; take bench/ off and import its modules as the bench package.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from bench.peers import PORT, Launch, gunicorn_cmd  # noqa: E402
from bench.procs import HOST, cpu_seconds  # noqa: E402
from bench.solo import Peer, SoloServer, choose, in_turn, options, spread, stop_all, write_results  # noqa: E402

APP = "bench.apps:app"
PATH = "/plain"
#: The same Gunicorn settings for -k asgi and pounce_worker (Gunicorn 27's names, defaults
#: but for the two that turn HTTP/2 on).
GUNICORN_H2 = ("--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge")
REFERENCE = "gunicorn-asgi"
DISTS = ("gunicorn", "h2", "hpack", "hypercorn", "granian", "uvloop")


def h2_gunicorn(py: str, worker: str, *extra: str) -> list[str]:
    return gunicorn_cmd(py, worker, *GUNICORN_H2, *extra, log_level="warning", chdir=None)


def pounce(loop: str) -> Callable[[str], Launch]:
    return lambda py: Launch(h2_gunicorn(py, "pounce_worker.ThreadWorker", "--asgi-loop", loop),
                             env={"POUNCE_WORKER_MODE": "processes"})


PEERS = (
    Peer("gunicorn-asgi", "gunicorn -k asgi (h2)", ("gunicorn", "h2"), lambda py: Launch(h2_gunicorn(py, "asgi"))),
    Peer("hypercorn", "hypercorn (asyncio, h2)", ("hypercorn", "h2"),
         lambda py: Launch([py, "-m", "hypercorn", "--workers", "1", "--bind", f"{HOST}:{PORT}", APP])),
    Peer("granian", "granian (asgi, --http 2)", ("granian",),
         lambda py: Launch([py, "-m", "granian", "--interface", "asgi", "--http", "2", "--workers", "1",
                            "--host", HOST, "--port", PORT, "--log-level", "warning", APP])),
    Peer("pounce", "pounce_worker (asyncio)", ("gunicorn", "pounce_worker.http2", "h2"), pounce("asyncio")),
    Peer("pounce-uvloop", "pounce_worker (uvloop)", ("gunicorn", "pounce_worker.http2", "h2", "uvloop"),
         pounce("uvloop")),
)
PEER_KEYS = tuple(p.key for p in PEERS)


class H2Server(SoloServer):
    asked = " over h2c"

    def __init__(self, peer: Peer, py: str, log_dir: Path, cpu: int | None, h2load: str) -> None:
        self.h2load = h2load
        super().__init__(peer, py, log_dir, cpu)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    def answers(self) -> bool:
        """One h2c request through h2load succeeds (an HTTP/1.1 probe would get a 400 from a Gunicorn
        prior-knowledge port)."""
        out = subprocess.run([self.h2load, "-n", "1", "-c", "1", self.url], capture_output=True, text=True,
                             timeout=20).stdout
        return "1 succeeded" in out and "status codes: 1 2xx" in out

    def worker_cpu(self) -> float:
        """Worker CPU seconds (a server without children is its own worker)."""
        return cpu_seconds(self.workers() or [self.pid])


# -- one measurement -----------------------------------------------------------------------------


def parse_h2load(out: str) -> dict[str, Any]:
    """h2load's summary: req/s, requests done/succeeded/failed, 2xx, protocol."""
    got: dict[str, Any] = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    if m:
        got["seconds"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        got["req_s"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    if m:
        total, _started, done, ok, failed, errored, timeout = map(int, m.groups())
        got.update(total=total, done=done, succeeded=ok, failed=failed + errored + timeout)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        got["non_2xx"] = sum(map(int, m.groups()[1:]))
        got["ok_2xx"] = int(m.group(1))
    m = re.search(r"Application protocol: (\S+)", out)
    got["protocol"] = m.group(1) if m else None
    return got


def measure(server: H2Server, h2load: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [h2load, "-c", str(args.connections), "-m", str(args.streams), "-t", "1",
           "-D", f"{args.duration:g}", "--warm-up-time", f"{args.warmup:g}", server.url]
    if not args.no_pin:
        cmd = ["taskset", "-c", str(args.client_cpu), *cmd]
    before = server.worker_cpu()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 60)
    after = server.worker_cpu()
    got = parse_h2load(out.stdout)
    if "req_s" not in got or "succeeded" not in got:
        raise RuntimeError(f"h2load: {out.stdout[-400:]} {out.stderr[-400:]}")
    # The CPU sample spans warm-up and measured window alike; h2load's req/s only the window.
    # Requests in the warm-up are not in h2load's counts, so CPU per request uses the window's
    # share of the CPU: (after - before) x window / (window + warm-up).
    window_share = args.duration / (args.duration + args.warmup)
    got["srv_cpu"] = (after - before) * window_share
    got["srv_pct"] = got["srv_cpu"] / args.duration * 100
    ok = got.get("ok_2xx", got["succeeded"])
    got["us_per_req"] = got["srv_cpu"] / ok * 1e6 if ok else None
    got["failed_pct"] = 100.0 * (got["failed"] + got.get("non_2xx", 0)) / got["total"] if got["total"] else 100.0
    return got


# -- the run -------------------------------------------------------------------------------------


def table(results: dict[str, Any], peers: list[Peer]) -> str:
    lines = [f"  {'server':<28} {'req/s (min-max)':>26} {'failed %':>9} {'srv us/req (min-max)':>24} "
             f"{'req/s /asgi':>11} {'us/req /asgi':>12} {'srv%':>5}"]
    ref = results.get(REFERENCE, {})
    for peer in peers:
        r = results.get(peer.key)
        if r is None:
            continue
        if r.get("error") and not r.get("runs"):
            lines.append(f"  {peer.label:<28} failed: {r['error']}")
            continue
        runs = r["runs"]
        us = [x["us_per_req"] for x in runs if x["us_per_req"]]
        rps_ratio = f"{r['req_s_median'] / ref['req_s_median']:.2f}" if ref.get("req_s_median") else "-"
        us_ratio = (f"{r['us_median'] / ref['us_median']:.2f}"
                    if ref.get("us_median") and r.get("us_median") else "-")
        lines.append(
            f"  {peer.label:<28} {spread([x['req_s'] for x in runs], ',.0f'):>26} "
            f"{statistics.median(x['failed_pct'] for x in runs):>9.1f} {spread(us, '.1f'):>24} "
            f"{rps_ratio:>11} {us_ratio:>12} {statistics.median(x['srv_pct'] for x in runs):>5.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options(ap, "1 x 3 s per server after 1 s warm-up", PEER_KEYS, load=(
        ("--connections", {"type": int, "default": 32}),
        ("--streams", {"type": int, "default": 10, "help": "concurrent streams per connection (h2load -m)"})))
    args = ap.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.reps = args.reps or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else 1.0
    h2load = shutil.which("h2load")
    if h2load is None:
        print("h2load is not installed: apt-get install nghttp2-client")
        return 2
    if not args.no_pin and shutil.which("taskset") is None:
        print("taskset is not installed (util-linux); use --no-pin")
        return 2

    wanted = [k.strip() for k in args.peers.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in PEER_KEYS]
    if unknown:
        print(f"unknown peers: {unknown}; known: {', '.join(PEER_KEYS)}")
        return 2
    chosen = choose(args.python, PEERS, wanted, DISTS)
    if chosen is None:
        return 2
    interp, peers, skipped = chosen
    if args.list:
        for peer in PEERS:
            print(f"{peer.key:<16} {peer.label:<28} {skipped.get(peer.key, 'ok' if peer in peers else 'not asked')}")
        return 0
    for key, why in skipped.items():
        print(f"skipping {key}: {why}")

    started = _dt.datetime.now(_dt.timezone.utc)
    tag = args.tag or started.strftime("%Y%m%d-%H%M%S")
    log_dir = args.out_dir / "logs" / f"h2-{tag}"
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: dict[str, H2Server] = {}
    results: dict[str, Any] = {p.key: {"runs": []} for p in peers}
    try:
        for peer in peers:
            server = H2Server(peer, args.python, log_dir, None if args.no_pin else args.server_cpu, h2load)
            servers[peer.key] = server
            try:
                server.wait_ready()
            except RuntimeError as exc:
                results[peer.key]["error"] = str(exc)
                print(f"{peer.key}: {exc}")
                server.stop()
                del servers[peer.key]
        live = list(servers)
        for rep in range(args.reps):
            for key in in_turn(live, rep):
                try:
                    run = measure(servers[key], h2load, args)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results[key]["error"] = str(exc)
                    print(f"{key}: {exc}")
                    continue
                results[key]["runs"].append(run)
                print(f"{key:<16} rep {rep + 1}: {run['req_s']:>9,.0f} req/s, {run['failed_pct']:5.1f} % failed, "
                      f"{run['us_per_req'] or 0:>7.1f} us/req srv {run['srv_pct']:>3.0f}% ({run['protocol']})",
                      flush=True)
        for key in live:
            runs = results[key]["runs"]
            us = [x["us_per_req"] for x in runs if x["us_per_req"]]
            results[key]["us_median"] = statistics.median(us) if us else None
            results[key]["req_s_median"] = statistics.median(x["req_s"] for x in runs) if runs else None
    except KeyboardInterrupt:
        print("interrupted: writing partial results")
    finally:
        problems = stop_all(servers)
    text = table(results, peers)
    pin = "no pinning" if args.no_pin else f"server on CPU {args.server_cpu}, h2load on CPU {args.client_cpu}"
    header = (f"bench/h2.py {tag}: {started:%Y-%m-%d %H:%M} UTC, {cpu_model()}, h2load -c {args.connections} "
              f"-m {args.streams} over h2c (prior knowledge), GET {PATH}, "
              f"{args.reps} x {args.duration:g} s per server after {args.warmup:g} s warm-up, {pin}")
    vers = interp.version_record()
    h2v = subprocess.run([h2load, "--version"], capture_output=True, text=True).stdout.split()
    if h2v:
        vers["h2load"] = h2v[-1]
    write_results("h2", args, tag, started, header, vers, text, servers, skipped, problems, results,
                  not_run=True, gap="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
