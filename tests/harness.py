"""Run a real ``gunicorn`` master in a subprocess and talk to it over loopback.

Every test server is a real arbiter with real forked workers, started with the
interpreter running the tests (so the same suite exercises 3.11, 3.13 or a
free-threaded build). The listening socket is created here and handed over as
``fd://N``: the port is known before gunicorn starts and no other process can
race us for it. Processes are stopped by the PID we started, never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal as _signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BOOT_TIMEOUT = 30.0


def listening_socket(host: str = HOST, backlog: int = 2048) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Gunicorn:
    """A gunicorn master serving ``app`` with ``pounce_worker.ThreadWorker`` (or ``worker_class``)."""

    def __init__(
        self,
        app: str,
        *args: str,
        mode: str | None = "threads",
        threads: int = 2,
        workers: int = 1,
        env: dict[str, str] | None = None,
        worker_class: str = "pounce_worker.ThreadWorker",
        python: str = sys.executable,
        bind_fd: bool = True,
        loops_expected: bool = True,
    ) -> None:
        self.app = app
        self.args = list(args)
        self.mode = mode
        self.threads = threads
        self.workers = workers
        self.extra_env = env or {}
        self.worker_class = worker_class
        self.python = python
        self.bind_fd = bind_fd
        self.loops_expected = loops_expected
        self.tmp = Path(tempfile.mkdtemp(prefix="pounce-test-"))
        self.errorlog = self.tmp / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------

    def command(self) -> list[str]:
        if self.bind_fd:
            self.sock = listening_socket()
            self.port = self.sock.getsockname()[1]
            bind = f"fd://{self.sock.fileno()}"
        else:
            self.port = free_port()
            bind = f"{HOST}:{self.port}"
        cmd = [
            self.python, "-m", "gunicorn",
            "-k", self.worker_class,
            "-b", bind,
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--no-control-socket",
            "--error-logfile", str(self.errorlog),
            "--log-level", "debug",
            "--chdir", str(ROOT),
            "--graceful-timeout", "10",
        ]
        return [*cmd, *self.args, self.app]

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("POUNCE_WORKER_MODE", None)
        if self.mode is not None:
            env["POUNCE_WORKER_MODE"] = self.mode
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> Gunicorn:
        cmd = self.command()
        pass_fds = (self.sock.fileno(),) if self.sock is not None else ()
        self.stdout = open(self.tmp / "stdout.log", "wb")
        self.proc = subprocess.Popen(
            cmd, env=self.environ(), stdout=self.stdout, stderr=subprocess.STDOUT,
            pass_fds=pass_fds, cwd=str(ROOT),
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until every worker logged its boot line and the port answers a TCP connect."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            booted = len(re.findall(r"pounce_worker: \w+ mode", self.log())) if self.loops_expected else self.workers
            if booted >= self.workers and self._connectable():
                time.sleep(0.05)
                return
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn did not become ready in {timeout}s:\n{self.output()}")

    def _connectable(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = _signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        try:
            return self.errorlog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        out = (self.tmp / "stdout.log").read_text(errors="replace") if (self.tmp / "stdout.log").exists() else ""
        return f"--- error log ---\n{self.log()}\n--- stdout/stderr ---\n{out}"

    def wait_for_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"{pattern!r} not seen {count}x in {timeout}s:\n{self.output()}")

    def worker_pids(self) -> list[int]:
        """PIDs of live workers: the master's children, read from /proc."""
        assert self.proc is not None
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(entry.name))
        return sorted(pids)


@contextlib.contextmanager
def serve(app: str, *args: str, **kwargs: object) -> Iterator[Gunicorn]:
    server = Gunicorn(app, *args, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def raw_request(port: int, data: bytes | Sequence[bytes], timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send bytes on a fresh connection and return everything read until EOF (or timeout)."""
    chunks = [data] if isinstance(data, bytes) else list(data)
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        for chunk in chunks:
            s.sendall(chunk)
        if not read_until_close:
            return s.recv(65536)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            out += part
        return out
