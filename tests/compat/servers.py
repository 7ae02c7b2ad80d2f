"""The servers under comparison, each a subprocess started and stopped by PID.

Targets:

* ``uvicorn``: the reference, ``python -m uvicorn --http h11 --loop asyncio``;
* ``pounce-threads`` / ``pounce-processes``: ``gunicorn -k pounce_worker.ThreadWorker``
  (tests.harness.Gunicorn) in each forced mode;
* ``gunicorn-asgi``: gunicorn's own ``-k asgi`` worker, for the three-way report only.

Flavors: ``main`` serves the multiplexing app, ``root`` the same app mounted
under root_path ``/api`` (``--root-path`` on both servers).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness import ROOT, Gunicorn

HOST = "127.0.0.1"
APP = "tests.compat.apps:app"
ROOT_PATH = "/api"
REFERENCE = "uvicorn"
POUNCE_TARGETS = ("pounce-threads", "pounce-processes")
ALL_TARGETS = (REFERENCE, *POUNCE_TARGETS, "gunicorn-asgi")
#: The same keep-alive idle timeout everywhere (uvicorn's default), so it never differs.
KEEPALIVE = 5
BOOT_TIMEOUT = 30.0
#: The same WebSocket message size limit everywhere (small, so the 1009 case is cheap).
WS_MAX_SIZE = 1024 * 1024


class Uvicorn:
    """``python -m uvicorn`` on loopback port 0 (the reference server): the port is read back.

    Not ``--fd``: uvicorn wraps an inherited descriptor as AF_UNIX, and the scope's
    client and server would no longer be what they are on a TCP bind.
    """

    def __init__(self, app: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.app = app
        self.args = list(args)
        self.extra_env = env or {}
        self.tmp = Path(tempfile.mkdtemp(prefix="compat-uvicorn-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The port uvicorn bound, once it says it is running (0 until then)."""
        if not self._port and self.proc is not None:
            found = re.search(rf"Uvicorn running on http://{re.escape(HOST)}:(\d+) ", self.output())
            if found:
                self._port = int(found.group(1))
        return self._port

    def start(self, wait: bool = True) -> Uvicorn:
        self._port = 0
        cmd = [
            sys.executable, "-m", "uvicorn",
            "--http", "h11", "--loop", "asyncio", "--lifespan", "auto",
            "--host", HOST, "--port", "0",
            "--timeout-keep-alive", str(KEEPALIVE),
            "--timeout-graceful-shutdown", "5",
            "--no-access-log",
            # The reference for WebSockets is uvicorn's wsproto implementation (the same
            # library pounce_worker uses); "auto" would pick the websockets library when installed.
            "--ws", "wsproto", "--ws-max-size", str(WS_MAX_SIZE),
            *self.args, self.app,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        self.out = open(self.tmp / "output.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=subprocess.STDOUT, cwd=str(ROOT))
        if wait:
            self.wait_ready()
        return self

    def output(self) -> str:
        path = self.tmp / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}:\n{self.output()}")
            if self.port and _connectable(self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"uvicorn did not become ready in {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()
        return self.proc.returncode


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def make_server(target: str, app: str, *, root_path: str = "", env: dict[str, str] | None = None,
                bind_fd: bool = True) -> Uvicorn | Gunicorn:
    """An unstarted server of ``target`` kind serving ``app``."""
    # A fixed hash seed: frameworks emit some headers from sets (Starlette's Allow).
    env = {"PYTHONHASHSEED": "0", **(env or {})}
    if target == REFERENCE:
        args = ["--root-path", root_path] if root_path else []
        return Uvicorn(app, *args, env=env)
    args = ["--keep-alive", str(KEEPALIVE), "--asgi-loop", "asyncio", "--timeout", "30",
            "--websocket-max-message-size", str(WS_MAX_SIZE)]
    if root_path:
        args += ["--root-path", root_path]
    if target in POUNCE_TARGETS:
        # Extra settings for the pounce_worker servers only, e.g. COMPAT_POUNCE_ENV="POUNCE_FAST_PATH=0".
        for item in os.environ.get("COMPAT_POUNCE_ENV", "").split():
            name, _, value = item.partition("=")
            env[name] = value
        mode = target.split("-", 1)[1]
        return Gunicorn(app, *args, mode=mode, env=env, bind_fd=bind_fd)
    if target == "gunicorn-asgi":
        return Gunicorn(app, *args, worker_class="asgi", loops_expected=False, mode=None, threads=1,
                        env=env, bind_fd=bind_fd)
    raise ValueError(f"unknown target {target!r}")


class Served:
    """A running server of one target and flavor, plus the directory its app records into."""

    def __init__(self, target: str, flavor: str) -> None:
        self.target = target
        self.flavor = flavor
        self.record_dir = Path(tempfile.mkdtemp(prefix=f"compat-rec-{target}-{flavor}-"))
        root_path = ROOT_PATH if flavor == "root" else ""
        self.server = make_server(target, APP, root_path=root_path,
                                  env={"COMPAT_RECORD_DIR": str(self.record_dir)})

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start(wait=False)

    def wait_ready(self) -> None:
        self.server.wait_ready()

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.record_dir, ignore_errors=True)
        shutil.rmtree(self.server.tmp, ignore_errors=True)

    def output(self) -> str:
        return self.server.output()


class ServerPool:
    """Starts each (target, flavor) server once, on first use, and stops them all at the end."""

    def __init__(self) -> None:
        self.servers: dict[tuple[str, str], Served] = {}

    def get(self, target: str, flavor: str) -> Served:
        key = (target, flavor)
        served = self.servers.get(key)
        if served is None:
            served = Served(target, flavor)
            served.start()
            self.servers[key] = served
            served.wait_ready()
        return served

    def prestart(self, keys: list[tuple[str, str]]) -> None:
        """Boot several servers concurrently (each boot is mostly waiting)."""
        fresh = []
        for key in keys:
            if key not in self.servers:
                served = Served(*key)
                served.start()
                self.servers[key] = served
                fresh.append(served)
        for served in fresh:
            served.wait_ready()

    def stop_all(self, timeout: float = 20.0) -> None:
        # SIGTERM every server first, so their graceful shutdowns overlap, then reap each.
        for served in self.servers.values():
            proc = served.server.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for served in self.servers.values():
            proc = served.server.proc
            if proc is not None:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass  # stop() below kills it
        for served in self.servers.values():
            try:
                served.stop()
            except Exception as exc:  # keep stopping the others
                print(f"compat: stopping {served.target}/{served.flavor} failed: {exc}", file=sys.stderr)
        self.servers.clear()
