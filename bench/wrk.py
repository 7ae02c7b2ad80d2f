"""wrk runs against one server (bench/run.py), with the server's CPU time and memory sampled meanwhile."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import CLK_TCK, HOST, Sampler, busy_ticks, cpu_ticks, forget, process_tree, spawn, terminate
from bench.scenarios import Scenario
from bench.server import Server, ServerFailed

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk.lua"


@dataclass(frozen=True)
class LoadSettings:
    duration: int
    warmup: int
    reps: int
    connections: int
    wrk_threads: int
    wrk_timeout: int
    client_cpu: int | None
    sample_interval: float


_BENCH_JSON = re.compile(r"^BENCH_JSON (\{.*\})\s*$", re.MULTILINE)


def run_wrk(server: Server, scenario: Scenario, seconds: int, load: LoadSettings) -> dict[str, Any]:
    """One wrk run against ``server`` while sampling its memory and CPU time."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    prefix = ["taskset", "-c", str(load.client_cpu)] if load.client_cpu is not None else []
    cmd = [*prefix, wrk, "-t", str(load.wrk_threads), "-c", str(load.connections), "-d", f"{seconds}s",
           "--timeout", f"{load.wrk_timeout}s", "--latency", "-s", str(WRK_SCRIPT),
           f"http://{HOST}:{server.port}{scenario.path}"]
    env = dict(os.environ, BENCH_POST_BYTES=str(scenario.post_bytes), BENCH_ACCEPT_ENCODING=scenario.accept_encoding)
    tree = process_tree(server.pid)
    ticks0 = cpu_ticks(tree)
    busy0 = busy_ticks()
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with Sampler(server.pid, load.sample_interval) as sampler:
        proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = proc.communicate(timeout=seconds + 20)
        except subprocess.TimeoutExpired:
            terminate(proc, timeout=2.0)
            raise ServerFailed(f"wrk did not finish within {seconds + 20}s") from None
        except BaseException:  # Ctrl-C or SIGTERM: do not leave wrk running
            terminate(proc, timeout=2.0)
            raise
        forget(proc)
    elapsed = time.monotonic() - t0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ticks1 = cpu_ticks(process_tree(server.pid))
    busy1 = busy_ticks()
    match = _BENCH_JSON.search(out)
    if proc.returncode != 0 or match is None:
        raise ServerFailed(f"wrk failed (exit {proc.returncode}): {err.strip() or out.strip()}")
    data = json.loads(match.group(1))
    duration = data["duration_us"] / 1e6
    requests = data["requests"]
    errors = {k: data[k] for k in ("connect", "read", "write", "timeout", "status")}
    rss = [s[0] for s in sampler.samples]
    pss = [s[1] for s in sampler.samples if s[1] is not None]
    wrk_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    text_rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    server_cpu_s = (ticks1 - ticks0) / CLK_TCK
    return {
        "requests": requests,
        "duration_s": round(duration, 3),
        "rps": requests / duration if duration else 0.0,
        "wrk_text_rps": float(text_rps.group(1)) if text_rps else None,
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "p999_ms": data["p999_us"] / 1000,
        "mean_ms": data["lat_mean_us"] / 1000,
        "max_ms": data["lat_max_us"] / 1000,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "bytes_per_request": data["bytes"] / requests if requests else 0,
        "rss_peak_kb": max(rss),
        "rss_mean_kb": round(statistics.fmean(rss)),
        "pss_peak_kb": max(pss) if pss else None,
        "processes": max(s[2] for s in sampler.samples),
        "server_cpu_pct": 100.0 * server_cpu_s / elapsed,
        # Requests per CPU-second of the server: what it would serve with a whole core to itself.
        # Much steadier than req/s when other work competes for the server's CPU.
        "rps_per_cpu_s": requests / server_cpu_s if server_cpu_s else 0.0,
        "wrk_cpu_pct": 100.0 * wrk_cpu / elapsed,
        # Everything else on the machine (this script, kernel work not charged to a process, other jobs).
        "other_cpu_pct": max(0.0, 100.0 * ((busy1 - busy0 - (ticks1 - ticks0)) / CLK_TCK - wrk_cpu) / elapsed),
    }


def summarise(runs: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    rps = [r["rps"] for r in runs]
    med = statistics.median(rps)
    # A compressed body is shorter than the scenario's: only identity responses can be short.
    short = [r for r in runs if r["requests"] and r["bytes_per_request"] < scenario.body_size
             and not scenario.accept_encoding]
    pss = [r["pss_peak_kb"] for r in runs if r["pss_peak_kb"] is not None]
    return {
        "rps": med,
        "rps_min": min(rps),
        "rps_max": max(rps),
        "rps_spread_pct": 100.0 * (max(rps) - min(rps)) / med if med else 0.0,
        "rps_per_cpu_s": statistics.median(r["rps_per_cpu_s"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "rss_peak_mb": max(r["rss_peak_kb"] for r in runs) / 1024,
        "pss_peak_mb": max(pss) / 1024 if pss else None,
        "server_cpu_pct": statistics.median(r["server_cpu_pct"] for r in runs),
        "wrk_cpu_pct": statistics.median(r["wrk_cpu_pct"] for r in runs),
        "other_cpu_pct": max(r["other_cpu_pct"] for r in runs),
        "short_responses": bool(short),
        "bytes_per_request": statistics.median(r["bytes_per_request"] for r in runs),
    }

