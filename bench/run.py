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
import http.client
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__:
    from . import refs
else:  # python bench/run.py: bench/ is sys.path[0]
    import refs  # type: ignore[no-redef]

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
APP = "bench.apps:app"
#: Placeholders in server commands, replaced at every (re)start: a free port, and the
#: directory the app (and pounce_worker, see ``snapshot``) are imported from.
PORT = "{port}"
APPDIR = "{appdir}"
WRK_SCRIPT = BENCH / "wrk.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _load_apps() -> Any:
    """``bench/apps.py`` as a module, for the expected response sizes (no sys.path games)."""
    spec = importlib.util.spec_from_file_location("_bench_apps", BENCH / "apps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apps = _load_apps()


# -- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    title: str
    body_size: int
    post_bytes: int = 0
    #: Sent as Accept-Encoding by wrk (and the preflight request) when set: --features.
    accept_encoding: str = ""

    def verify(self, status: int, body: bytes) -> str | None:
        """Why a response is wrong for this scenario, or None when it is right."""
        if status != 200:
            return f"status {status}"
        if len(body) != self.body_size:
            return f"body is {len(body)} bytes, expected {self.body_size}"
        if self.name == "plain" and body != apps.PLAIN_BODY:
            return f"body {body[:40]!r}"
        if self.name == "json":
            try:
                json.loads(body)
            except ValueError as exc:
                return f"invalid JSON: {exc}"
        if self.name == "stream" and body != apps.STREAM_PIECE * apps.STREAM_CHUNKS:
            return "streamed bytes differ from what the app sent"
        if self.name == "echo" and body != b"x" * self.post_bytes:
            return "echoed bytes differ from the request body"
        if self.name == "page" and body != apps.PAGE_BODY:
            return "page bytes differ from what the app sent"
        return None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("plain", "/plain", "plain text, 13 B", len(apps.PLAIN_BODY)),
        Scenario("json", "/json", "JSON, 2 KiB", apps.JSON_SIZE),
        Scenario("stream", "/stream", "stream 1 MiB in 64 KiB chunks", apps.STREAM_SIZE),
        Scenario("echo", "/echo", "POST echo, 64 KiB", apps.ECHO_SIZE, post_bytes=apps.ECHO_SIZE),
    )
}
#: Scenarios of the --features section (pounce_worker alone, with and without its opt-in features).
FEATURE_SCENARIOS: dict[str, Scenario] = {
    **{name: SCENARIOS[name] for name in ("plain", "json")},
    "page": Scenario("page", "/page", "HTML page, 16 KiB", apps.PAGE_SIZE),
}
#: --features rows: name -> (title, environment). Every row gets Accept-Encoding: gzip from wrk.
FEATURES: dict[str, tuple[str, dict[str, str]]] = {
    "off": ("pounce_worker, features off", {}),
    "gzip": ("POUNCE_COMPRESSION=gzip", {"POUNCE_COMPRESSION": "gzip"}),
    "timing": ("POUNCE_SERVER_TIMING=1", {"POUNCE_SERVER_TIMING": "1"}),
}


# -- the interpreter that runs the servers -----------------------------------------------------

_PROBE = r"""
import importlib.util, importlib.metadata as md, json, platform, sys
mods = sys.argv[1].split(",")
dists = sys.argv[2].split(",")
def has(m):
    try:
        return importlib.util.find_spec(m) is not None
    except Exception:
        return False
def ver(d):
    try:
        return md.version(d)
    except Exception:
        return None
probe = getattr(sys, "_is_gil_enabled", None)
print(json.dumps({
    "modules": {m: has(m) for m in mods},
    "versions": {d: ver(d) for d in dists},
    "python": platform.python_implementation() + " " + platform.python_version(),
    "gil": bool(probe()) if probe else not getattr(sys.flags, "nogil", False),
}))
"""

MODULES = (
    "gunicorn", "gunicorn.workers.gasgi", "pounce_worker", "uvicorn", "uvicorn_worker",
    "httptools", "uvloop", "hypercorn", "granian", "gunicorn_h1c",
)
DISTS = (
    "gunicorn", "pounce_worker", "h11", "uvicorn", "uvicorn-worker", "httptools", "uvloop",
    "hypercorn", "granian", "gunicorn_h1c",
)


@dataclass
class Interpreter:
    path: str
    modules: dict[str, bool]
    versions: dict[str, str | None]
    python: str
    gil: bool

    @classmethod
    def probe(cls, path: str) -> Interpreter:
        out = subprocess.run(
            [path, "-c", _PROBE, ",".join(MODULES), ",".join(DISTS)],
            capture_output=True, text=True, timeout=60, check=True,
        )
        data = json.loads(out.stdout)
        return cls(path=path, **data)

    def missing(self, modules: Sequence[str]) -> list[str]:
        return [m for m in modules if not self.modules.get(m)]


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Launch:
    """How to start one server on one port."""

    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    procs: int = 2  # processes in the tree once fully booted (master + workers)
    #: For pounce_worker: (mode, loops, loop kind) its boot line must announce.
    pounce: tuple[str, int, str] | None = None


def gunicorn_cmd(py: str, worker_class: str, *extra: str, workers: int = 1, threads: int = 1) -> list[str]:
    return [
        py, "-m", "gunicorn", "-k", worker_class, "-b", f"{HOST}:{PORT}",
        "--workers", str(workers), "--threads", str(threads),
        "--no-control-socket", "--error-logfile", "-", "--log-level", "info",
        "--graceful-timeout", "5", "--chdir", APPDIR, *extra, APP,
    ]


def pounce_launch(py: str, loop: str, mode: str = "processes", loops: int = 1) -> Launch:
    if mode == "threads":
        workers, threads = 1, loops
    else:
        workers, threads = loops, 1
    return Launch(
        gunicorn_cmd(py, "pounce_worker.ThreadWorker", "--asgi-loop", loop, workers=workers, threads=threads),
        env={"POUNCE_WORKER_MODE": mode},
        procs=1 + workers,
        pounce=(mode, threads if mode == "threads" else 1, loop),
    )


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    needs: tuple[str, ...]
    launch: Callable[[Interpreter], Launch]
    log_kind: str = "gunicorn"  # how to read its log for restarts and errors
    #: An extra reason to skip it on this interpreter, or None.
    unfit: Callable[[Interpreter], str | None] = lambda _i: None
    #: A run that was asked for it and cannot start it fails (listed under "Problems seen",
    #: exit status 1) instead of skipping it: the README's ratios depend on it.
    required: bool = False
    #: --baseline: runs pounce_worker as of the baseline commit, from its own exported copy.
    baseline: bool = False


def _gasgi_loop(interp: Interpreter) -> str:
    return "uvloop" if interp.modules.get("uvloop") and interp.gil else "asyncio"


PEERS: tuple[Peer, ...] = (
    Peer(
        "pounce-asyncio", "pounce_worker (asyncio)", ("gunicorn", "pounce_worker"),
        lambda i: pounce_launch(i.path, "asyncio"),
    ),
    Peer(
        "pounce-uvloop", "pounce_worker (uvloop)", ("gunicorn", "pounce_worker", "uvloop"),
        lambda i: pounce_launch(i.path, "uvloop"),
        unfit=lambda i: None if i.gil else "free-threaded build: pounce_worker never imports uvloop there",
    ),
    # -k asgi twice: on Gunicorn's pure-Python parser (what the README's ratios first compared
    # with), and at its strongest, as a user who picks it for speed runs it: its C parser
    # (gunicorn_h1c, "gunicorn[fast]") and uvloop. --http-parser names the parser in both, so a
    # machine with gunicorn_h1c installed still measures the pure-Python row as such.
    Peer(
        "gunicorn-asgi", "gunicorn -k asgi", ("gunicorn", "gunicorn.workers.gasgi"),
        lambda i: Launch(gunicorn_cmd(i.path, "asgi", "--http-parser", "python", "--asgi-loop", _gasgi_loop(i))),
    ),
    Peer(
        "gunicorn-asgi-fast", "gunicorn -k asgi (h1c+uvloop)",
        ("gunicorn", "gunicorn.workers.gasgi", "gunicorn_h1c", "uvloop"),
        lambda i: Launch(gunicorn_cmd(i.path, "asgi", "--http-parser", "fast", "--asgi-loop", "uvloop")),
        unfit=lambda i: None if i.gil else "free-threaded build: uvloop would switch the GIL back on",
        required=True,
    ),
    Peer(
        "uvicorn", "uvicorn (httptools+uvloop)", ("gunicorn", "uvicorn", "uvicorn_worker", "httptools", "uvloop"),
        lambda i: Launch(gunicorn_cmd(i.path, "uvicorn_worker.UvicornWorker")),
    ),
    Peer(
        "uvicorn-h11", "uvicorn (h11+asyncio)", ("gunicorn", "uvicorn", "uvicorn_worker"),
        lambda i: Launch(gunicorn_cmd(i.path, "uvicorn_worker.UvicornH11Worker")),
    ),
    Peer(
        "hypercorn", "hypercorn (asyncio)", ("hypercorn",),
        lambda i: Launch([
            i.path, "-m", "hypercorn", "--workers", "1", "--bind", f"{HOST}:{PORT}",
            "--error-logfile", "-", "--log-level", "info", "--graceful-timeout", "5", APP,
        ]),
        log_kind="generic",
    ),
    Peer(
        "granian", "granian (asgi)", ("granian",),
        lambda i: Launch([
            i.path, "-m", "granian", "--interface", "asgi", "--http", "1", "--workers", "1",
            "--host", HOST, "--port", PORT, "--log-level", "info", APP,
        ]),
        log_kind="generic",
    ),
)
#: Not peers but the yardstick issue 7 sets: bench/floor.py, ~50 lines of asyncio HTTP with no
#: validation, limits or timeouts. Run only when asked for with --peers.
FLOORS: tuple[Peer, ...] = tuple(
    Peer(
        f"floor-{loop}", f"floor.py ({loop})", ("uvloop",) if loop == "uvloop" else (),
        lambda i, loop=loop: Launch([i.path, "-m", "bench.floor", HOST, PORT, APP, loop], procs=1),  # type: ignore[misc]
        log_kind="generic",
    )
    for loop in ("asyncio", "uvloop")
)
PEER_KEYS = tuple(p.key for p in PEERS)
#: --baseline: each pounce_worker row of the run gets a twin running the baseline commit.
BASELINE_TWINS = {"pounce-asyncio": "pounce-baseline-asyncio", "pounce-uvloop": "pounce-baseline-uvloop"}


def with_baseline(selected: Sequence[Peer], commit: str) -> list[Peer]:
    """``selected`` with each pounce_worker row followed by its baseline twin: same command, other code.

    The twin sits in the same section, so it boots with the others and takes its turn
    in every repetition: the two versions meet the same drifts and bursts of other work.
    """
    peers = []
    for peer in selected:
        peers.append(peer)
        if peer.key in BASELINE_TWINS:
            loop = peer.key.rsplit("-", 1)[1]
            peers.append(dataclasses.replace(peer, key=BASELINE_TWINS[peer.key], baseline=True,
                                             label=f"pounce_worker @{commit} ({loop})"))
    return peers


#: How to install what a peer lacks, when the module's name does not say it.
INSTALL_HINTS = {
    "gunicorn_h1c": "Gunicorn's C parser: pip install gunicorn_h1c, or the bench extra",
    "gunicorn.workers.gasgi": "gunicorn >= 24 has -k asgi",
}


def gunicorn_label(interp: Interpreter) -> str:
    return f"gunicorn -k asgi (py parser+{_gasgi_loop(interp)})"


def not_installed(interp: Interpreter, missing: Sequence[str]) -> str:
    hints = [INSTALL_HINTS[m] for m in missing if m in INSTALL_HINTS]
    return f"not installed in {interp.path}: {', '.join(missing)}" + (f" ({'; '.join(hints)})" if hints else "")


# -- /proc --------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat_fields(pid) is None:
            continue
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _kb_field(path: str, name: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_kb(pids: Sequence[int]) -> tuple[int, int | None]:
    """(summed VmRSS, summed Pss) of ``pids`` in KiB; Pss is None if smaps_rollup is unavailable."""
    rss, pss, have_pss = 0, 0, True
    for pid in pids:
        rss += _kb_field(f"/proc/{pid}/status", "VmRSS:") or 0
        value = _kb_field(f"/proc/{pid}/smaps_rollup", "Pss:")
        if value is None:
            have_pss = False
        else:
            pss += value
    return rss, (pss if have_pss else None)


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total


def busy_ticks() -> int:
    """CPU ticks spent on anything but idle and iowait, all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4]


def cpus_allowed(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Samples the memory of a server's process tree every ``interval`` seconds."""

    def __init__(self, root: int, interval: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.interval = interval
        self.samples: list[tuple[int, int | None, int]] = []
        self.pids_seen: set[int] = set()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        pids = process_tree(self.root)
        self.pids_seen.update(pids)
        rss, pss = memory_kb(pids)
        self.samples.append((rss, pss, len(pids)))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def __enter__(self) -> Sampler:
        self.sample()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.sample()


# -- process handling -----------------------------------------------------------------------------

#: Every process group we started and have not reaped yet, for the emergency cleanup.
_LIVE: dict[int, subprocess.Popen[Any]] = {}


def spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(list(cmd), start_new_session=True, **kwargs)
    _LIVE[proc.pid] = proc
    return proc


def exit_status(proc: subprocess.Popen[Any]) -> int | None:
    """The exit status if the process has ended, else None; it is NOT reaped.

    A zombie keeps its PID, and so its process group id, reserved: while we have
    not reaped the server, SIGKILL to its group cannot reach anyone else's process.
    """
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return -1
    return None if info is None else info.si_status


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def terminate(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM the process we started; SIGKILL its group (id = its PID) if anything lingers; then reap it."""
    pgid = proc.pid
    try:
        if proc.returncode is not None:
            return  # already reaped: its PID may belong to someone else by now
        if exit_status(proc) is None:
            os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while exit_status(proc) is None and time.monotonic() < deadline:
                time.sleep(0.05)
        deadline = time.monotonic() + 3.0
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    finally:
        _LIVE.pop(proc.pid, None)


def cleanup_all() -> None:
    for proc in list(_LIVE.values()):
        terminate(proc, timeout=5.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


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
        self.port = free_port()
        cmd = [c.replace(PORT, str(self.port)).replace(APPDIR, str(self.app_dir)) for c in self.launch.cmd]
        env = self.env()
        prefix = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts + 1} {_dt.datetime.now().isoformat(timespec='seconds')}: "
                      f"{' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = spawn([*prefix, *cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              cwd=str(self.app_dir), env=env)
        self.starts += 1
        self.wait_ready(boot_timeout)

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


# -- wrk ------------------------------------------------------------------------------------------


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
        _LIVE.pop(proc.pid, None)
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


# -- the benchmark --------------------------------------------------------------------------------


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

# -- output ----------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def peer_tables(results: dict[str, Any]) -> str:
    peers = results["peers"]
    if not peers:
        return ""
    out = []
    base = {k: next((p for p in peers if p["key"] == k and p["status"] == "ok"), None)
            for k in ("pounce-asyncio", "pounce-uvloop")}
    s = results["settings"]
    for name in s["scenarios"]:
        scenario = SCENARIOS[name]
        out.append(f"\n== {name}: {scenario.title}; {s['connections']} connections, "
                   f"{s['reps']} x {s['duration']} s after {s['warmup']} s warm-up ==")
        out.append(f"{'server':<38}{'req/s':>9}{'spread':>7}{'/aio':>6}{'/uvl':>6}{'req/cpu-s':>10}{'/aio':>6}"
                   f"{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'RSS MB':>7}{'srv%':>5}{'wrk%':>6}{'oth%':>5}")
        ref: dict[str, float | None] = {}
        eff_ref = None
        for k, p in base.items():
            cell = p["scenarios"].get(name) if p else None
            ref[k] = cell["summary"]["rps"] if cell and "summary" in cell else None
            if k == "pounce-asyncio" and cell and "summary" in cell:
                eff_ref = cell["summary"]["rps_per_cpu_s"]
        for p in peers:
            label = p["label"]
            if p["status"] == "skipped":
                out.append(f"{label:<38}skipped: {p['reason']}")
                continue
            cell = p["scenarios"].get(name)
            if p["status"] != "ok" or cell is None or cell.get("status") != "ok" or "summary" not in cell:
                reason = (cell or {}).get("reason") or p.get("reason") or "not run"
                out.append(f"{label:<38}FAILED: {reason.splitlines()[0][:90]}")
                continue
            m = cell["summary"]
            ratios = [m["rps"] / r if r else None for r in (ref["pounce-asyncio"], ref["pounce-uvloop"])]
            eff = m["rps_per_cpu_s"] / eff_ref if eff_ref else None
            out.append(
                f"{label[:37]:<38}{m['rps']:>9,.0f}{m['rps_spread_pct']:>6.0f}%"
                f"{_fmt(ratios[0], '.2f', 6)}{_fmt(ratios[1], '.2f', 6)}"
                f"{m['rps_per_cpu_s']:>10,.0f}{_fmt(eff, '.2f', 6)}"
                f"{m['p50_ms']:>8.2f}{m['p99_ms']:>8.2f}{m['errors']:>7}{m['rss_peak_mb']:>7.1f}"
                f"{m['server_cpu_pct']:>5.0f}{m['wrk_cpu_pct']:>5.0f}{'*' if m['wrk_cpu_pct'] >= 90 else ' '}"
                f"{m['other_cpu_pct']:>5.0f}"
            )
        out.extend(baseline_lines(results, name))
    out.append("\n/aio, /uvl: req/s relative to pounce_worker with asyncio / with uvloop (>1: faster than pounce).\n"
               "req/cpu-s: requests per CPU-second of the server (req/s if it had its core to itself; steadier than "
               "req/s\nwhen other work competes for the CPU); /aio: that relative to pounce_worker (asyncio).")
    out.append("spread: (max-min)/median of the measured runs. RSS: peak summed VmRSS of master + workers "
               "under load.\nsrv%/wrk%/oth%: CPU used by the server tree / by wrk / by everything else on the "
               "machine (100 = one core; worst run).\n*: wrk used >= 90% of its core, so the client may be "
               "the bottleneck for that row.")
    if results["meta"].get("baseline"):
        out.append("tree/base: this run's pounce_worker ÷ the same row as of the baseline commit (>1: faster now); "
                   "tree÷X/base÷X:\neach of them ÷ server X (>1: pounce_worker faster than X). Same run, so their "
                   "quotient is tree/base.")
    return "\n".join(out)


def _summary(peer: dict[str, Any], scenario: str) -> dict[str, Any] | None:
    cell = peer.get("scenarios", {}).get(scenario) if peer["status"] == "ok" else None
    return cell.get("summary") if cell and cell.get("status") == "ok" else None


def baseline_comparison(results: dict[str, Any]) -> dict[str, Any]:
    """--baseline: per scenario and loop, this run's pounce_worker ÷ the baseline's, and each ÷ every other server.

    Measured in the same run, (tree ÷ peer) / (baseline ÷ peer) is tree ÷ baseline: the
    ratios to the peers are "no worse than before" exactly when tree ÷ baseline >= 1.
    """
    peers = results["peers"]
    by_key = {p["key"]: p for p in peers}
    others = [p for p in peers if not p["key"].startswith("pounce-")]
    comparison: dict[str, Any] = {}
    for name in results["settings"]["scenarios"]:
        for tree_key, base_key in BASELINE_TWINS.items():
            if tree_key not in by_key or base_key not in by_key:
                continue
            tree, base = _summary(by_key[tree_key], name), _summary(by_key[base_key], name)
            if tree is None or base is None:
                continue
            row: dict[str, Any] = {"vs": {}}
            for metric in ("rps", "rps_per_cpu_s"):
                row[metric] = tree[metric] / base[metric] if base[metric] else None
            for other in others:
                theirs = _summary(other, name)
                if theirs is not None:
                    row["vs"][other["key"]] = {
                        metric: {"tree": tree[metric] / theirs[metric], "baseline": base[metric] / theirs[metric]}
                        for metric in ("rps", "rps_per_cpu_s") if theirs[metric]}
            comparison.setdefault(name, {})[tree_key.rsplit("-", 1)[1]] = row
    return comparison


def baseline_lines(results: dict[str, Any], name: str) -> list[str]:
    """The --baseline block under a scenario's table: tree ÷ baseline, then both ÷ each other server."""
    baseline = results["meta"].get("baseline")
    rows = (baseline or {}).get("comparison", {}).get(name)
    if not rows:
        return []
    keys = list(dict.fromkeys(k for row in rows.values() for k in row["vs"]))
    width = max([11, *(len(k) + 2 for k in keys)])
    ref = results["settings"].get("ref")
    out = [f"-- {name}: pounce_worker {'@' + ref if ref else 'working tree'} (tree) against baseline "
           f"@{baseline['commit']} (base), same run --",
           f"{'loop':<9}{'metric':<11}{'tree/base':>10}" + "".join(f"{k:>{width}}" for k in keys)]
    for loop, row in rows.items():
        for metric, title in (("rps", "req/s"), ("rps_per_cpu_s", "req/cpu-s")):
            cells = []
            for k in keys:
                pair = row["vs"].get(k, {}).get(metric)
                cells.append(f"{pair['tree']:.2f}/{pair['baseline']:.2f}" if pair else "-")
            out.append(f"{loop:<9}{title:<11}{_fmt(row[metric], '.3f', 10)}" + "".join(f"{c:>{width}}" for c in cells))
    return out


def mode_table(results: dict[str, Any]) -> str:
    rows = results.get("modes") or []
    if not rows:
        return ""
    s = results["settings"]
    out = [f"\n== pounce_worker: N loops as threads of 1 process vs N processes "
           f"({s['mode_scenario']}, {s['connections']} connections; server pinned to "
           f"{'CPU ' + str(s['server_cpu']) if s['server_cpu'] is not None else 'no CPU'}) ==",
           f"{'loop':<9}{'loops':>6}{'mode':>11}{'procs':>7}{'req/s':>10}{'req/cpu-s':>10}{'p99 ms':>9}{'errors':>8}"
           f"{'idle RSS':>10}{'RSS MB':>8}{'PSS MB':>8}{'oth%':>6}"]
    for r in rows:
        head = f"{r['loop']:<9}{r['loops']:>6}{r['mode']:>11}"
        if r.get("status") != "ok" or "summary" not in r:
            out.append(f"{head}  FAILED: {str(r.get('reason', '')).splitlines()[0][:80]}")
            continue
        m, idle = r["summary"], r["idle"]
        out.append(f"{head}{idle['processes']:>7}{m['rps']:>10,.0f}{m['rps_per_cpu_s']:>10,.0f}{m['p99_ms']:>9.2f}"
                   f"{m['errors']:>8}"
                   f"{idle['rss_mb']:>10.1f}{m['rss_peak_mb']:>8.1f}{_fmt(m['pss_peak_mb'], '.1f', 8)}"
                   f"{m['other_cpu_pct']:>6.0f}")
    out.append("")
    for saving in results.get("mode_savings", []):
        out.append(
            f"{saving['loop']}, {saving['loops']} loops: threads use {saving['rss_saved_mb']:.1f} MB less RSS "
            f"({saving['rss_saved_pct']:.0f}%)"
            + (f", {saving['pss_saved_mb']:.1f} MB less PSS ({saving['pss_saved_pct']:.0f}%)"
               if saving.get("pss_saved_mb") is not None else "")
            + f"; threads/processes req/s = {saving['rps_ratio']:.2f}, req/cpu-s = {saving['eff_ratio']:.2f}"
        )
    out.append("RSS counts pages shared between forked workers once per process; PSS splits them, so it is "
               "the fairer total.")
    return "\n".join(out)


def features_table(results: dict[str, Any]) -> str:
    """--features: each opt-in feature's req/s and CPU cost against pounce_worker with them off."""
    rows = results.get("features") or []
    if not rows:
        return ""
    s = results["settings"]
    out = [f"\n== pounce_worker features: cost against features off ({s['feature_loop']}, 1 process, "
           f"{s['connections']} connections, wrk sends Accept-Encoding: gzip) =="]
    out.append(f"{'feature':<26}{'scenario':<10}{'req/s':>9}{'ratio':>7}{'req/cpu-s':>10}{'ratio':>7}"
               f"{'p99 ms':>8}{'bytes/resp':>11}{'errors':>7}{'oth%':>6}")
    base = next((r for r in rows if r["feature"] == "off"), None)
    for r in rows:
        for name in s["feature_scenarios"]:
            cell = r.get("cells", {}).get(name)
            head = f"{r['title'][:25]:<26}{name:<10}"
            if r.get("status") != "ok" or not cell or "summary" not in cell:
                reason = (cell or {}).get("reason") or r.get("reason") or "not run"
                out.append(f"{head}FAILED: {str(reason).splitlines()[0][:80]}")
                continue
            m = cell["summary"]
            ref = (base or {}).get("cells", {}).get(name, {}).get("summary")
            ratio = m["rps"] / ref["rps"] if ref and ref["rps"] else None
            eff = m["rps_per_cpu_s"] / ref["rps_per_cpu_s"] if ref and ref["rps_per_cpu_s"] else None
            out.append(f"{head}{m['rps']:>9,.0f}{_fmt(ratio, '.2f', 7)}{m['rps_per_cpu_s']:>10,.0f}"
                       f"{_fmt(eff, '.2f', 7)}{m['p99_ms']:>8.2f}{m['bytes_per_request']:>11,.0f}{m['errors']:>7}"
                       f"{m['other_cpu_pct']:>6.0f}")
    out.append("ratio: against 'features off' on the same scenario (1.00: no cost). bytes/resp: what wrk "
               "received per response, head included (compressed bodies are smaller).")
    return "\n".join(out)


def feature_launch(py: str, loop: str, feature: str) -> Launch:
    launch = pounce_launch(py, loop)
    launch.env.update(FEATURES[feature][1])
    return launch


def mode_savings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    savings = []
    index = {(r["loop"], r["loops"], r["mode"]): r for r in rows if r.get("status") == "ok" and "summary" in r}
    for (loop, loops, mode), t in index.items():
        p = index.get((loop, loops, "processes"))
        if mode != "threads" or p is None:
            continue
        tm, pm = t["summary"], p["summary"]
        item: dict[str, Any] = {
            "loop": loop, "loops": loops,
            "rss_threads_mb": tm["rss_peak_mb"], "rss_processes_mb": pm["rss_peak_mb"],
            "rss_saved_mb": pm["rss_peak_mb"] - tm["rss_peak_mb"],
            "rss_saved_pct": 100.0 * (pm["rss_peak_mb"] - tm["rss_peak_mb"]) / pm["rss_peak_mb"],
            "rps_ratio": tm["rps"] / pm["rps"] if pm["rps"] else 0.0,
            "eff_ratio": tm["rps_per_cpu_s"] / pm["rps_per_cpu_s"] if pm["rps_per_cpu_s"] else 0.0,
        }
        if tm["pss_peak_mb"] is not None and pm["pss_peak_mb"] is not None:
            item["pss_saved_mb"] = pm["pss_peak_mb"] - tm["pss_peak_mb"]
            item["pss_saved_pct"] = 100.0 * item["pss_saved_mb"] / pm["pss_peak_mb"]
        savings.append(item)
    return savings


def chart(results: dict[str, Any], path: Path) -> str | None:
    """A PNG: req/s per server for each scenario, then threads vs processes. Returns why not, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    names = results["settings"]["scenarios"]
    modes = [r for r in results.get("modes") or [] if r.get("status") == "ok" and "summary" in r]
    panels = len(names) + (2 if modes else 0)
    cols = 3 if panels > 4 else 2
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, name in zip(flat, names, strict=False):
        labels, values, colors, effs = [], [], [], []
        for p in results["peers"]:
            cell = p.get("scenarios", {}).get(name)
            if p["status"] != "ok" or not cell or "summary" not in cell:
                continue
            labels.append(p["label"])
            values.append(cell["summary"]["rps"])
            effs.append(cell["summary"]["rps_per_cpu_s"])
            colors.append("tab:gray" if p.get("baseline") else "tab:orange" if p["key"].startswith("pounce")
                          else "tab:blue")
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.scatter(effs[::-1], range(len(effs)), marker="|", s=300, color="black", zorder=3,
                   label="req per CPU-second")
        if effs:
            ax.legend(fontsize=7, loc="lower right", markerscale=0.5)
        for y, v in enumerate(values[::-1]):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_title(f"{name}: {SCENARIOS[name].title}", fontsize=10)
        ax.set_xlabel("requests/s (median); | = per CPU-second of the server")
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(x=0.2)
    if modes:
        ax_rps, ax_mem = flat[len(names)], flat[len(names) + 1]
        groups = sorted({(r["loop"], r["mode"]) for r in modes})
        loops = sorted({r["loops"] for r in modes})
        width = 0.8 / max(1, len(groups))
        for gi, (loop, mode) in enumerate(groups):
            xs, rps, rss, pss, effs = [], [], [], [], []
            for li, n in enumerate(loops):
                r = next((r for r in modes if (r["loop"], r["mode"], r["loops"]) == (loop, mode, n)), None)
                if r is None:
                    continue
                xs.append(li + gi * width)
                rps.append(r["summary"]["rps"])
                effs.append(r["summary"]["rps_per_cpu_s"])
                rss.append(r["summary"]["rss_peak_mb"])
                pss.append(r["summary"]["pss_peak_mb"])
            ax_rps.bar(xs, rps, width, label=f"{mode} ({loop})")
            ax_rps.scatter(xs, effs, marker="_", s=900, color="black", zorder=3,
                           label="req per CPU-second" if gi == len(groups) - 1 else None)
            ax_mem.bar(xs, rss, width, label=f"{mode} ({loop}) RSS")
            if any(v is not None for v in pss):
                ax_mem.scatter(xs, pss, marker="_", s=900, color="black", zorder=3,
                               label="PSS" if gi == len(groups) - 1 else None)
        titles = ((ax_rps, "pounce_worker req/s, threads vs processes"),
                  (ax_mem, "pounce_worker peak MB: RSS bars, PSS ticks"))
        for ax, title in titles:
            ax.set_xticks([i + (len(groups) - 1) * width / 2 for i in range(len(loops))])
            ax.set_xticklabels([f"{n} loop{'s' if n > 1 else ''}" for n in loops])
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=7, markerscale=0.3)
    for ax in flat[panels:]:
        ax.axis("off")
    meta = results["meta"]
    git = meta.get("git") or {}
    code = (f"pounce_worker @{results['settings']['ref']}" if results["settings"].get("ref") else
            f"pounce_worker {git.get('head') or '?'}{'+changes' if git.get('dirty') else ''}")
    fig.suptitle(f"ASGI servers, 1 worker, {meta['python']} on {meta['cpu_model']}; {code} "
                 f"({results['settings']['tag']}, {meta['started'][:16]})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- main -----------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


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
        interp = Interpreter.probe(args.python)
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
