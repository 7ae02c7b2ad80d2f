#!/usr/bin/env python3
"""Benchmark pounce_worker against other ASGI servers, in one run, on one machine.

    python bench/run.py            # full matrix, about 10 minutes
    python bench/run.py --quick    # smoke run, about 2 minutes
    python bench/run.py --list     # which servers are installed, then exit

Every server serves ``bench.apps:app`` from one worker process, pinned to one
CPU with ``taskset``; ``wrk`` runs pinned to another CPU and drives it over
127.0.0.1. Each (server, scenario) cell gets a warm-up run and then N measured
runs; the RSS of the server's whole process tree (master and workers) is
sampled from /proc while they run. A second section runs pounce_worker with
1, 2 and 4 event loops as threads of one process and as processes, to put a
number on what threads save in memory. See bench/README.rst.

Servers are started in their own session, so each is a process group whose id
is the PID we got back; they are stopped by that PID (SIGTERM, then SIGKILL to
the group if they linger) and nothing else is ever signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # python bench/run.py: bench/ is sys.path[0]; import its modules as the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import refs
from bench.machine import Interpreter, cpu_model
from bench.peers import (
    BASELINE_TWINS,
    DISTS,
    FLOORS,
    MODULES,
    PEER_KEYS,
    PEERS,
    feature_launch,
    not_installed,
    pounce_launch,
    with_baseline,
)
from bench.procs import cleanup_all
from bench.report import baseline_comparison, chart, features_table, mode_savings, mode_table, peer_tables
from bench.scenarios import FEATURE_SCENARIOS, FEATURES, SCENARIOS
from bench.section import Bench, Entry
from bench.server import BUSY_PCT
from bench.wrk import LoadSettings

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


# -- the benchmark --------------------------------------------------------------------------------


# -- main -----------------------------------------------------------------------------------------


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).splitlines()[0].strip() if (out.stdout + out.stderr) else "?"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (~2 min): 1 s warm-up, 1 x 2 s per cell, modes with asyncio only")
    ap.add_argument("--duration", type=int, help="seconds per measured wrk run (default 4; quick 2)")
    ap.add_argument("--warmup", type=int, help="seconds of warm-up per cell, 0 for none (default 2; quick 1)")
    ap.add_argument("--reps", type=int, help="measured runs per cell (default 3; quick 1)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--wrk-timeout", type=int, default=2, help="wrk --timeout in seconds (default 2)")
    ap.add_argument("--peers", default=",".join(PEER_KEYS),
                    help=f"comma-separated servers to run (default all: {','.join(PEER_KEYS)}; "
                         "floor-asyncio and floor-uvloop, bench/floor.py, only when named)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})")
    ap.add_argument("--mode-loops", default="1,2,4",
                    help="loop counts for threads vs processes; empty to skip that section (default 1,2,4)")
    ap.add_argument("--mode-loop-kinds", help="asyncio,uvloop (default both; quick: asyncio)")
    ap.add_argument("--mode-scenario", default="plain", choices=list(SCENARIOS),
                    help="scenario for threads vs processes (default plain)")
    ap.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to (default 0)")
    ap.add_argument("--client-cpu", type=int, default=1, help="CPU wrk (and this script) are pinned to (default 1)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin anything to CPUs")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter that runs the servers (default: this one); the servers must be installed in it")
    ap.add_argument("--boot-timeout", type=float, default=30.0, help="seconds a server may take to boot")
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each cell, wait up to this many seconds for other work on the machine "
                         "to use < 25%% of a core (default 0: do not wait)")
    ap.add_argument("--sample-interval", type=float, default=0.25, help="seconds between memory samples")
    ap.add_argument("--tag", help="name of the result files (default: quick or full)")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where results go (default bench/results)")
    ap.add_argument("--no-chart", action="store_true", help="skip the PNG")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run pounce_worker from the working tree instead of a copy taken at the start")
    ap.add_argument("--ref", help="run pounce_worker as of this git commit (e.g. HEAD), not the working tree")
    ap.add_argument("--baseline", metavar="REF",
                    help="also run pounce_worker as of this git commit, in the same reps as the other servers: "
                         "a pounce-baseline-<loop> row after each pounce row, and tree/base ratios per scenario")
    ap.add_argument("--list", action="store_true", help="show which servers are available and exit")
    ap.add_argument("--features", action="store_true",
                    help="instead of the peers and modes: pounce_worker with its opt-in features off, with "
                         f"compression and with Server-Timing ({', '.join(FEATURES)})")
    ap.add_argument("--feature-scenarios", default=",".join(FEATURE_SCENARIOS),
                    help=f"scenarios for --features (default {','.join(FEATURE_SCENARIOS)})")
    ap.add_argument("--feature-loop", default="asyncio", choices=("asyncio", "uvloop"),
                    help="event loop for --features (default asyncio)")
    args = ap.parse_args(argv)
    quick = args.quick
    args.duration = args.duration if args.duration is not None else (2 if quick else 4)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.reps = args.reps if args.reps is not None else (1 if quick else 3)
    args.mode_loop_kinds = args.mode_loop_kinds or ("asyncio" if quick else "asyncio,uvloop")
    args.tag = args.tag or ("quick" if quick else "full")
    if args.ref and args.no_snapshot:
        ap.error("--ref and --no-snapshot exclude each other")
    if args.duration < 1 or args.reps < 1 or args.warmup < 0:
        ap.error("--duration and --reps must be >= 1, --warmup >= 0 (wrk takes whole seconds)")
    if args.features:
        if args.baseline:
            ap.error("--baseline compares the servers section; it does not apply to --features")
        args.peers, args.scenarios, args.mode_loops = "", "", ""
    if args.baseline and not set(args.peers.split(",")) & set(BASELINE_TWINS):
        ap.error(f"--baseline needs a pounce_worker row to compare: add {' or '.join(BASELINE_TWINS)} to --peers")
    floors = tuple(p.key for p in FLOORS)
    for option, values, known in (("--peers", args.peers, PEER_KEYS + floors),
                                  ("--scenarios", args.scenarios, SCENARIOS),
                                  ("--feature-scenarios", args.feature_scenarios, FEATURE_SCENARIOS)):
        unknown = [v for v in values.split(",") if v and v not in known]
        if unknown:
            ap.error(f"{option}: unknown {unknown}; choose from {', '.join(known)}")
    return args


def setup_pinning(args: argparse.Namespace) -> tuple[int | None, int | None, str | None]:
    """(server CPU, client CPU, warning). Pins this process to the client CPU as well."""
    if args.no_pin:
        return None, None, None
    if shutil.which("taskset") is None:
        return None, None, "taskset not found (util-linux): running unpinned"
    allowed = os.sched_getaffinity(0)
    if args.server_cpu == args.client_cpu or not {args.server_cpu, args.client_cpu} <= allowed:
        return None, None, (f"cannot pin server to CPU {args.server_cpu} and wrk to CPU {args.client_cpu} "
                            f"(allowed CPUs: {sorted(allowed)}): running unpinned")
    os.sched_setaffinity(0, {args.client_cpu})
    return args.server_cpu, args.client_cpu, None


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """SIGTERM/SIGHUP end the run like Ctrl-C, so the finally blocks stop the servers."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    try:
        interp = Interpreter.probe(args.python, MODULES, DISTS)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"cannot run {args.python}: {exc}", file=sys.stderr)
        return 2
    selected = [p for p in PEERS + FLOORS if p.key in args.peers.split(",")]
    baseline_commit = None
    if args.baseline:
        try:
            baseline_commit = refs.commit_of(args.baseline)
        except refs.RefError as exc:
            print(f"--baseline {args.baseline}: {exc}", file=sys.stderr)
            return 2
        selected = with_baseline(selected, baseline_commit)
    skipped: dict[str, str] = {}
    for peer in selected:
        missing = interp.missing(peer.needs)
        if missing:
            skipped[peer.key] = not_installed(interp, missing)
        elif (why := peer.unfit(interp)) is not None:
            skipped[peer.key] = why
    missing_required = [p.key for p in selected if p.required and p.key in skipped]
    if args.list:
        print(f"servers run with {interp.python}{'' if interp.gil else ' (free-threaded)'} ({args.python})")
        for peer in PEERS:
            state = skipped.get(peer.key) or "available"
            print(f"  {peer.key:<19} {'CANNOT RUN: ' if peer.required and peer.key in skipped else ''}{state}")
        print(f"wrk: {wrk or 'NOT FOUND (apt-get install wrk)'}")
        return 1 if missing_required else 0
    if wrk is None:
        print("wrk not found. Install it: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS), "
              "or build it from https://github.com/wg/wrk and put it on PATH.", file=sys.stderr)
        return 2
    scenarios = [SCENARIOS[n] for n in args.scenarios.split(",") if n]
    mode_loops = [int(n) for n in args.mode_loops.split(",") if n.strip()]
    mode_kinds = [k for k in args.mode_loop_kinds.split(",") if k]
    if "uvloop" in mode_kinds and (not interp.modules.get("uvloop") or not interp.gil):
        print("threads vs processes: uvloop rows skipped (uvloop missing or a free-threaded build)")
        mode_kinds = [k for k in mode_kinds if k != "uvloop"]
    if mode_loops and interp.missing(("gunicorn", "pounce_worker")):
        print("threads vs processes: skipped, pounce_worker or gunicorn is not installed")
        mode_loops = []
    server_cpu, client_cpu, warning = setup_pinning(args)
    load = LoadSettings(args.duration, args.warmup, args.reps, args.connections, args.wrk_threads,
                        args.wrk_timeout, client_cpu, args.sample_interval)
    out_dir: Path = args.out_dir
    log_dir = out_dir / "logs" / args.tag
    if log_dir.exists():
        shutil.rmtree(log_dir)
    log_dir.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="pounce-bench-"))
    files = refs.code_files(ROOT)
    if args.no_snapshot:
        app_dir, digest = ROOT, refs.code_digest(ROOT, files)
    else:
        app_dir = tmp / "code"
        try:
            files, digest = refs.snapshot(app_dir, args.ref)
        except (OSError, refs.RefError) as exc:
            print(f"cannot take pounce_worker from {args.ref or 'the working tree'}: {exc}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)
            return 2
    baseline_dir = tmp / "baseline"  # under tmp: removed with it, whatever happens
    baseline_digest = None
    if baseline_commit is not None:
        try:
            _files, baseline_digest = refs.snapshot(baseline_dir, baseline_commit)
        except (OSError, refs.RefError) as exc:
            print(f"cannot take pounce_worker from --baseline {args.baseline}: {exc}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)
            return 2
    bench = Bench(interp, load, server_cpu, args.boot_timeout, log_dir, app_dir, args.quiet_wait)
    if warning:
        bench.problem(warning)
    for key in missing_required:
        bench.problem(f"{key} cannot run, {skipped[key]}: the comparison with it is missing from this run")
    origin = None
    if interp.modules.get("pounce_worker"):
        env = dict(os.environ, PYTHONPATH=refs.python_path([app_dir], os.environ))
        found = refs.imported_from(interp.path, app_dir, env)
        origin = found.file
        if origin is not None and (wrong := found.wrong(app_dir)) is not None:
            bench.problem(f"the servers: {wrong}")

    runnable = [p for p in selected if p.key not in skipped]
    feature_scenarios = [FEATURE_SCENARIOS[n] for n in args.feature_scenarios.split(",") if n] if args.features else []
    cells = len(runnable) * len(scenarios) + len(mode_loops) * 2 * len(mode_kinds)
    cells += len(FEATURES) * len(feature_scenarios)
    per_cell = args.warmup + args.reps * args.duration
    boots = len(runnable) + len(mode_loops) * 2 * len(mode_kinds)
    eta = cells * (per_cell + 0.6) + boots * 2.5
    started = _dt.datetime.now()
    results: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "python": interp.python + ("" if interp.gil else " (free-threaded)"),
            "python_path": interp.path,
            "versions": interp.versions,
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "wrk": wrk_version(wrk),
            "git": refs.git_state(),
            "code_digest": digest,
            "code_from": ("working tree" if args.no_snapshot else
                          f"git {args.ref}" if args.ref else "snapshot of the working tree taken at the start"),
            "pounce_worker_imported_from": origin,
            "baseline": None if baseline_commit is None else {
                "ref": args.baseline, "commit": baseline_commit, "code_digest": baseline_digest},
        },
        "settings": {
            "tag": args.tag, "duration": args.duration, "warmup": args.warmup, "reps": args.reps,
            "connections": args.connections, "wrk_threads": args.wrk_threads, "wrk_timeout": args.wrk_timeout,
            "scenarios": [s.name for s in scenarios], "server_cpu": server_cpu, "client_cpu": client_cpu,
            "quiet_wait": args.quiet_wait, "ref": args.ref,
            "mode_loops": mode_loops, "mode_loop_kinds": mode_kinds, "mode_scenario": args.mode_scenario,
            "feature_scenarios": [f.name for f in feature_scenarios], "feature_loop": args.feature_loop,
        },
        "peers": [],
        "modes": [],
        "features": [],
    }
    print(f"{interp.python}{'' if interp.gil else ' (free-threaded)'}, {results['meta']['cpu_model']}, "
          f"{results['meta']['wrk']}")
    print(f"server on CPU {server_cpu}, wrk on CPU {client_cpu}; {cells} cells x "
          f"({args.warmup} s warm-up + {args.reps} x {args.duration} s); estimated {eta / 60:.1f} min")
    for key, why in skipped.items():
        print(f"  skipping {key}: {why}")

    interrupted = False
    with signals_stop():
        try:
            print("\n-- servers --")
            entries = []
            for peer in selected:
                result: dict[str, Any] = {"key": peer.key, "label": bench.label(peer)}
                results["peers"].append(result)
                if peer.key in skipped:
                    result.update(status="skipped", reason=skipped[peer.key])
                    continue
                server = bench.serve(peer.key, peer.launch(interp), peer.log_kind,
                                     baseline_dir if peer.baseline else None)
                result.update(status="ok", command=" ".join(server.launch.cmd), scenarios={})
                if peer.baseline:
                    result["baseline"] = baseline_commit
                entries.append(Entry(peer.key, server, result, result["scenarios"]))
            bench.run_section(entries, scenarios)
            if mode_loops:
                print("\n-- pounce_worker: threads vs processes --")
                mode_scenario = SCENARIOS[args.mode_scenario]
                mode_entries = []
                for kind in mode_kinds:
                    for loops in mode_loops:
                        for mode in ("threads", "processes"):
                            name = f"pounce-{mode}-{loops}-{kind}"
                            launch = pounce_launch(interp.path, kind, mode, loops)
                            row: dict[str, Any] = {
                                "loops": loops, "mode": mode, "loop": kind, "status": "ok",
                                "workers": 1 if mode == "threads" else loops,
                                "threads": loops if mode == "threads" else 1,
                                "scenario": mode_scenario.name, "command": " ".join(launch.cmd)}
                            results["modes"].append(row)
                            mode_entries.append(Entry(name, bench.serve(name, launch, "gunicorn"), row, {}))
                try:
                    bench.run_section(mode_entries, [mode_scenario])
                finally:
                    for e in mode_entries:
                        if e.result["status"] == "ok":
                            e.result.update(e.cells.get(mode_scenario.name)
                                            or {"status": "failed", "reason": "not measured"})
                results["mode_savings"] = mode_savings(results["modes"])
            if feature_scenarios:
                print("\n-- pounce_worker: cost of compression and Server-Timing --")
                feature_entries = []
                for feature, (title, _env) in FEATURES.items():
                    name = f"pounce-feature-{feature}"
                    launch = feature_launch(interp.path, args.feature_loop, feature)
                    row = {"feature": feature, "title": title, "status": "ok", "env": launch.env,
                           "command": " ".join(launch.cmd), "cells": {}}
                    results["features"].append(row)
                    feature_entries.append(Entry(name, bench.serve(name, launch, "gunicorn"), row, row["cells"]))
                gzip_scenarios = [dataclasses.replace(f, accept_encoding="gzip") for f in feature_scenarios]
                bench.run_section(feature_entries, gzip_scenarios)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping the servers, writing partial results", file=sys.stderr)
        finally:
            cleanup_all()
            shutil.rmtree(tmp, ignore_errors=True)

    results["meta"]["elapsed_s"] = round((_dt.datetime.now() - started).total_seconds(), 1)
    results["meta"]["interrupted"] = interrupted
    live_digest = refs.code_digest(ROOT, refs.code_files(ROOT))
    results["meta"]["code_changed_during_run"] = args.ref is None and live_digest != digest
    if results["meta"]["code_changed_during_run"]:
        note = ("pounce_worker or bench/apps.py changed in the working tree during the run"
                + ("; the numbers mix versions" if args.no_snapshot else
                   f"; every server ran the snapshot taken at the start ({results['meta']['git']['head']}"
                   f"{' + local changes' if results['meta']['git']['dirty'] else ''})"))
        (bench.problems if args.no_snapshot else bench.notes).append(note)
    if bench.noisy:
        bench.problems.append(
            f"{len(bench.noisy)} of {bench.cells} cells ran while other work on the machine used more than "
            f"{BUSY_PCT:.0f}% of a core (worst run), so their numbers are noisy: {', '.join(bench.noisy)}")
    if results["meta"]["baseline"] is not None:
        results["meta"]["baseline"]["comparison"] = baseline_comparison(results)
    results["problems"] = bench.problems
    results["notes"] = bench.notes
    table = peer_tables(results) + "\n" + mode_table(results) + "\n" + features_table(results)
    print(table)
    for note in bench.notes:
        print(textwrap.fill(f"Note: {note}", 118, subsequent_indent="  "))
    if bench.problems:
        print("\nProblems seen:")
        for p in bench.problems:
            print(textwrap.fill(p.splitlines()[0], 118, initial_indent="  - ", subsequent_indent="    "))
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{args.tag}.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / f"{args.tag}.txt").write_text(table.lstrip("\n") + "\n")
    print(f"\nwrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}", end="")
    if not args.no_chart and (results["peers"] or results["modes"]):
        png = out_dir / f"{args.tag}.png"
        why = chart(results, png)
        print(f", {png.name}" if why is None else f" (no chart: {why})", end="")
    print(f"; server logs in {log_dir}; took {results['meta']['elapsed_s'] / 60:.1f} min")
    return 130 if interrupted else 1 if missing_required else 0


if __name__ == "__main__":
    sys.exit(main())

