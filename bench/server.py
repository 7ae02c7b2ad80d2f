"""One benchmarked server: its process tree, its readiness, its log.

bench/run.py uses it as it is; bench/h2.py and bench/ws.py through ``bench.solo``, with their own readiness.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import http.client
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import refs
from bench.peers import APPDIR, PORT, Launch
from bench.procs import HOST, exit_status, free_port, process_tree, spawn, terminate
from bench.scenarios import SCENARIOS, Scenario

BENCH = Path(__file__).resolve().parent


def http_request(port: int, scenario: Scenario, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if scenario.post_bytes:
            conn.request("POST", scenario.path, body=b"x" * scenario.post_bytes,
                         headers={"Content-Type": "application/octet-stream"})
        else:
            conn.request("GET", scenario.path, headers=_accept(scenario))
        response = conn.getresponse()
        body = response.read()
        if response.getheader("content-encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)  # --features: check what the client would see
        return response.status, body
    finally:
        conn.close()


def _accept(scenario: Scenario) -> dict[str, str]:
    return {"Accept-Encoding": scenario.accept_encoding} if scenario.accept_encoding else {}


#: CPU use by other processes (percent of one core) above which a cell is flagged as noisy.
BUSY_PCT = 25.0
#: Seconds a server whose processes are all up may take to answer its first request.
ANSWER_GRACE = 10.0


class ServerFailed(RuntimeError):
    pass


BENIGN = (
    re.compile(r"thread mode on a GIL build"),
    re.compile(r"threads=\d+ ignored"),
)
NOTABLE = re.compile(
    r"Traceback|\bERROR\b|\[ERROR\]|CRITICAL|WARNING|\bWARN\b|TIMEOUT|Exception|died|was sent|"
    r"exited|killed|did not stop|has not run|stall",
    re.IGNORECASE,
)


class Server:
    """One server process tree: started in its own session, stopped by its PID."""

    def __init__(
        self, name: str, launch: Launch, log_path: Path, cpu: int | None, log_kind: str, app_dir: Path
    ) -> None:
        self.name = name
        self.app_dir = app_dir
        self.launch = launch
        self.log_path = log_path
        self.cpu = cpu
        self.log_kind = log_kind
        self.port = 0
        self.cmd: list[str] = []  # as last started: taskset, the real port and directory
        self.proc: subprocess.Popen[Any] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        """The server's environment: its code directory first on PYTHONPATH, ahead of any installed copy."""
        env = dict(os.environ)
        env.pop("POUNCE_WORKER_MODE", None)
        env.update(self.launch.env)
        env["PYTHONPATH"] = refs.python_path([self.app_dir], env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def imported_from(self, python: str) -> refs.Origin:
        """What ``python`` started as this server is (cwd, environment) imports as pounce_worker."""
        return refs.imported_from(python, self.app_dir, self.env())

    def start(self, boot_timeout: float) -> None:
        self.spawn()
        self.wait_ready(boot_timeout)

    def spawn(self) -> None:
        """Start it on a free port, pinned to its CPU, its output appended to its log; do not wait."""
        self.port = free_port()
        cmd = [c.replace(PORT, str(self.port)).replace(APPDIR, str(self.app_dir)) for c in self.launch.cmd]
        env = self.env()
        prefix = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        self.cmd = [*prefix, *cmd]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts + 1} {_dt.datetime.now().isoformat(timespec='seconds')}: "
                      f"{' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = spawn(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              cwd=str(self.app_dir), env=env)
        self.starts += 1

    def wait_ready(self, timeout: float) -> None:
        """Until /plain answers 200 and the tree has all its processes (workers booted)."""
        started = time.monotonic()
        deadline = started + timeout
        probe = SCENARIOS["plain"]
        answered = False
        while time.monotonic() < deadline:
            status = exit_status(self.proc) if self.proc is not None else None
            if status is not None:
                raise ServerFailed(f"exited with {status} while booting:\n{self.log_tail()}")
            if not answered:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    answered = http_request(self.port, probe, timeout=1.0)[0] == 200
            if len(process_tree(self.pid)) >= self.launch.procs:
                if answered:
                    time.sleep(0.3)  # let late workers finish their own boot
                    return
                # Every process is up but nothing answers: give it ANSWER_GRACE, not the whole timeout.
                deadline = min(deadline, time.monotonic() + ANSWER_GRACE)
            time.sleep(0.05)
        raise ServerFailed(f"not ready after {time.monotonic() - started:.0f}s (no 200 on /plain: {not answered}, "
                           f"processes={len(process_tree(self.pid))}/{self.launch.procs}):\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and exit_status(self.proc) is None

    def healthy(self) -> bool:
        if not self.alive():
            return False
        try:
            return http_request(self.port, SCENARIOS["plain"], timeout=5.0)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_report(self) -> dict[str, Any]:
        """Worker boots, pounce boot lines and the lines that look like trouble."""
        text = self.log_text()
        lines = text.splitlines()
        notable = [ln for ln in lines
                   if NOTABLE.search(ln) and not any(b.search(ln) for b in BENIGN) and not ln.startswith("===")]
        report: dict[str, Any] = {"log": os.path.relpath(self.log_path, BENCH), "notable": notable[:40],
                                  "notable_count": len(notable), "starts": self.starts}
        if self.log_kind == "gunicorn":
            boots = len(re.findall(r"Booting worker with pid", text))
            expected = (self.launch.procs - 1) * self.starts
            report["worker_boots"] = boots
            report["worker_restarts"] = max(0, boots - expected)
        if self.launch.pounce is not None:
            report["pounce_boot"] = sorted(set(re.findall(r"pounce_worker: \w+ mode .*", text)))
        return report

    def check_pounce_boot(self) -> str | None:
        """Whether the boot line says the mode, loops and loop kind we asked for."""
        if self.launch.pounce is None:
            return None
        mode, loops, kind = self.launch.pounce
        found = re.findall(r"pounce_worker: (\w+) mode \(.*?\), (\d+) event loop\(s\) with (\w+)", self.log_text())
        if not found:
            return "no 'pounce_worker: ... mode' boot line in the log"
        bad = [f for f in found if f != (mode, str(loops), kind)]
        if bad:
            return f"asked for {mode}/{loops} loops/{kind}, boot line says {bad[0]}"
        return None

