"""One section of the HTTP benchmark (bench/run.py): servers booted together, measured in turns."""

from __future__ import annotations

import http.client
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import Interpreter
from bench.peers import Launch, Peer, gunicorn_label
from bench.procs import CLK_TCK, busy_ticks, cpus_allowed, memory_kb, process_tree
from bench.scenarios import Scenario
from bench.server import BUSY_PCT, Server, ServerFailed, http_request
from bench.wrk import LoadSettings, run_wrk, summarise


@dataclass
class Entry:
    """One server in a section: its process, its result record and its cells by scenario."""

    name: str
    server: Server
    result: dict[str, Any]
    cells: dict[str, dict[str, Any]]


@dataclass
class Bench:
    interp: Interpreter
    load: LoadSettings
    server_cpu: int | None
    boot_timeout: float
    log_dir: Path
    app_dir: Path
    quiet_wait: float = 0.0
    problems: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cells: int = 0

    def say(self, msg: str) -> None:
        print(msg, flush=True)

    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        self.say(f"  !! {msg}")

    def wait_quiet(self) -> float | None:
        """Up to ``quiet_wait`` seconds for the machine to idle; returns the busy % seen last (None: no wait)."""
        if self.quiet_wait <= 0:
            return None
        deadline = time.monotonic() + self.quiet_wait
        while True:
            before = busy_ticks()
            time.sleep(1.0)
            busy = 100.0 * (busy_ticks() - before) / CLK_TCK
            if busy < BUSY_PCT or time.monotonic() >= deadline:
                return busy
            self.say(f"    machine busy ({busy:.0f}% of a core used by others); waiting")

    def serve(self, name: str, launch: Launch, log_kind: str, app_dir: Path | None = None) -> Server:
        """A server importing from ``app_dir`` (default: the run's snapshot; --baseline rows: their commit's)."""
        return Server(name, launch, self.log_dir / f"{name}.log", self.server_cpu, log_kind, app_dir or self.app_dir)

    def boot(self, server: Server) -> dict[str, Any]:
        server.start(self.boot_timeout)
        tree = process_tree(server.pid)
        rss, pss = memory_kb(tree)
        idle: dict[str, Any] = {"rss_mb": rss / 1024, "pss_mb": pss / 1024 if pss is not None else None,
                                "processes": len(tree), "cpus_allowed": sorted({cpus_allowed(p) or "?" for p in tree})}
        wrong = server.check_pounce_boot()
        if wrong:
            self.problem(f"{server.name}: {wrong}")
        if server.launch.pounce is not None:
            # Asked of the interpreter started as this server was: a row that says it runs a commit
            # but imports the working tree (or an editable install) would compare the code with itself.
            origin = server.imported_from(self.interp.path)
            idle["pounce_worker_file"] = origin.file
            self.say(f"    {server.name}: pounce_worker from {origin.file}")
            if (wrong := origin.wrong(server.app_dir)) is not None:
                self.problem(f"{server.name}: {wrong}")
        return idle

    def run_section(self, entries: list[Entry], scenarios: Sequence[Scenario]) -> None:
        """Boot every server, then measure scenario by scenario, taking turns within each repetition.

        Taking turns (and rotating who goes first) spreads slow drifts and bursts of
        other work on the machine over all servers instead of landing on one of them.
        """
        try:
            for e in entries:
                self.say(f"  booting {e.name}")
                try:
                    e.result["idle"] = self.boot(e.server)
                except ServerFailed as exc:
                    e.result.update(status="failed", reason=f"boot: {exc}")
                    self.problem(f"{e.name} failed to boot: {str(exc).splitlines()[0]}")
                    e.server.stop()
            for scenario in scenarios:
                self.run_scenario([e for e in entries if e.result["status"] == "ok"], scenario)
        finally:
            for e in entries:
                e.server.stop()
                e.result["log"] = e.server.log_report()
                self.report_log(e.name, e.result["log"])

    def _ready_for(self, e: Entry, scenario: Scenario) -> str | None:
        """Restart the server if it died or stalled, then check one response. Why not, or None when ready."""
        server = e.server
        if not server.healthy():
            self.problem(f"{e.name}: server unhealthy before {scenario.name} (no 200 on /plain); restarting it")
            server.stop()
            try:
                server.start(self.boot_timeout)
            except ServerFailed as exc:
                return f"restart failed: {exc}"
        try:
            status, body = http_request(server.port, scenario, timeout=10.0)
        except (OSError, http.client.HTTPException) as exc:
            return f"preflight request failed: {exc!r}"
        wrong = scenario.verify(status, body)
        return f"preflight response wrong: {wrong}" if wrong else None

    def run_scenario(self, entries: list[Entry], scenario: Scenario) -> None:
        live = []
        for e in entries:
            why = self._ready_for(e, scenario)
            e.cells[scenario.name] = {"status": "ok", "runs": []} if why is None else {"status": "failed",
                                                                                        "reason": why}
            if why is None:
                live.append(e)
        if not live:
            return

        def one_run(e: Entry, seconds: int) -> dict[str, Any] | None:
            cell = e.cells[scenario.name]
            if cell["status"] != "ok":
                return None
            try:
                return run_wrk(e.server, scenario, seconds, self.load)
            except ServerFailed as exc:
                cell.update(status="failed", reason=str(exc))
                return None

        if self.load.warmup:
            self.say(f"  {scenario.name}: warm-up, {self.load.warmup} s each")
            for e in live:
                e.cells[scenario.name]["warmup"] = one_run(e, self.load.warmup)
        for rep in range(self.load.reps):
            busy = self.wait_quiet()
            shift = rep % len(live)
            line = []
            for e in live[shift:] + live[:shift]:
                run = one_run(e, self.load.duration)
                if run is not None:
                    run["busy_before_pct"] = busy
                    e.cells[scenario.name]["runs"].append(run)
                    line.append(f"{e.name} {run['rps']:,.0f}")
            self.say(f"  {scenario.name} rep {rep + 1}/{self.load.reps}: " + ", ".join(line))
        for e in live:
            cell = e.cells[scenario.name]
            if cell["status"] == "ok":
                cell["summary"] = summarise(cell["runs"], scenario)
                if not e.server.healthy():
                    cell["after"] = "server unhealthy after the runs (no 200 on /plain within 5s)"
            self.report_cell(e.name, scenario, cell)

    def label(self, peer: Peer) -> str:
        return gunicorn_label(self.interp) if peer.key == "gunicorn-asgi" else peer.label

    def report_cell(self, name: str, scenario: Scenario, cell: dict[str, Any]) -> None:
        if cell["status"] != "ok":
            self.problem(f"{name} {scenario.name}: {cell['reason']}")
            return
        s = cell["summary"]
        self.say(f"  {name:<23} {scenario.name:<7} {s['rps']:>10,.0f} req/s  p50 {s['p50_ms']:.2f} ms  "
                 f"p99 {s['p99_ms']:.2f} ms  errors {s['errors']}  RSS {s['rss_peak_mb']:.1f} MB  "
                 f"cpu srv {s['server_cpu_pct']:.0f}% wrk {s['wrk_cpu_pct']:.0f}%")
        if s["errors"]:
            kinds: dict[str, int] = {}
            for run in cell["runs"]:
                for k, v in run["error_kinds"].items():
                    kinds[k] = kinds.get(k, 0) + v
            self.problem(f"{name} {scenario.name}: {s['errors']} errors in measured runs {kinds}")
        warm = cell.get("warmup")
        if warm and warm["errors"]:
            self.problem(f"{name} {scenario.name}: {warm['errors']} errors during warm-up {warm['error_kinds']}")
        if s["short_responses"]:
            self.problem(f"{name} {scenario.name}: fewer bytes per response than the body size")
        self.cells += 1
        if s["other_cpu_pct"] > BUSY_PCT:
            self.noisy.append(f"{name}/{scenario.name} ({s['other_cpu_pct']:.0f}%)")
        if "after" in cell:
            self.problem(f"{name} {scenario.name}: {cell['after']}")

    def report_log(self, name: str, log: dict[str, Any]) -> None:
        if log.get("worker_restarts"):
            self.problem(f"{name}: {log['worker_restarts']} worker restart(s) (see {log['log']})")
        if log["notable_count"]:
            self.say(f"  {name}: {log['notable_count']} notable log line(s) in {log['log']}, e.g.: "
                     f"{log['notable'][0][:160]}")
