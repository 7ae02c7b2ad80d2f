"""A real gunicorn master in a subprocess, on a socket made here; stopped by its PID."""

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
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.harness.ports import HOST, ROOT, listening_socket, reserve_port
from tests.harness.processes import SERVER_ENV, kill_marked
from tests.harness.waiting import wait_until

BOOT_TIMEOUT = 30.0


#: Servers started and not yet stopped, with the test that started them (a leak's culprit).
LIVE: dict[Gunicorn, str] = {}


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
        #: bind_fd=False: the port Gunicorn binds by number, reserved here until it listens.
        self.reservation: socket.socket | None = None
        self.marker = uuid.uuid4().hex

    # -- lifecycle ---------------------------------------------------------------

    def command(self) -> list[str]:
        if self.bind_fd:
            self.sock = listening_socket()
            self.port = self.sock.getsockname()[1]
            bind = f"fd://{self.sock.fileno()}"
        else:
            # Gunicorn binds the socket itself (its own options: SO_REUSEPORT, backlog...), by
            # number: a reserved port (Gunicorn sets SO_REUSEADDR, so it can bind it). Not port 0:
            # with --reuse-port each worker binds on its own, and would get a port of its own.
            self.reservation = reserve_port()
            self.port = self.reservation.getsockname()[1]
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
        """Start the master (and wait until it serves); a master that fails to get ready is stopped."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.app}: already started (pid {self.proc.pid}); stop() it first")
        cmd = self.command()
        pass_fds = (self.sock.fileno(),) if self.sock is not None else ()
        env = self.environ()
        env[SERVER_ENV] = self.marker
        self.stdout = open(self.tmp / "stdout.log", "wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.stdout, stderr=subprocess.STDOUT,
            pass_fds=pass_fds, cwd=str(ROOT),
        )
        LIVE[self] = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until every worker logged its boot line and the port answers a TCP connect."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            booted = self.workers
            if self.loops_expected:
                booted = len(re.findall(r"pounce_worker: (?:threads|processes) mode \(", self.log()))
            if booted >= self.workers and self._connectable():
                self._release_reservation()  # the server's own listener holds the port now
                if self.loops_expected:
                    # The boot line comes before the loops start; with fd:// the port is
                    # connectable (our socket's backlog) even before any worker accepts.
                    wait_until(self.loops_accepting, timeout=max(0.0, min(10.0, deadline - time.monotonic())),
                               interval=0.02)
                return
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn did not become ready in {timeout}s:\n{self.output()}")

    def loops_accepting(self) -> bool:
        """Whether every loop of every live worker watches the listening socket (accepts).

        Each loop's selector (an epoll instance in the worker) lists the listener's fd
        once the loop started accepting, after its lifespan startup.
        """
        if self.sock is None:
            return True
        listener = os.fstat(self.sock.fileno()).st_ino
        loops = {int(pid): int(n) for pid, n in re.findall(
            r"\[(\d+)\] \[INFO\] pounce_worker: \w+ mode \(.*?\), (\d+) event loop", self.log())}
        pids = self.worker_pids()
        if not pids:
            return False
        for pid in pids:
            if pid not in loops or _epolls_watching(pid, listener) < loops[pid]:
                return False
        return True

    def _release_reservation(self) -> None:
        if self.reservation is not None:
            self.reservation.close()
            self.reservation = None

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

    def boot_failure(self, timeout: float = 20.0) -> int:
        """Start a master expected to fail at boot; its exit status (the output stays readable)."""
        self.start(wait=False)
        try:
            return self.wait(timeout)
        finally:
            self.stop()

    def stop(self, sig: int = _signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Stop the master (``sig``, SIGKILL after ``timeout``) and anything left of its process tree.

        A master that exits normally has reaped its workers; one that was SIGKILLed (here
        or by a test) leaves them orphaned: they carry this server's marker and are killed.
        """
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            kill_marked(SERVER_ENV, self.marker)
            LIVE.pop(self, None)
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            self._release_reservation()
            self.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Gunicorn:
        # ``with Gunicorn(...).start() as server`` must not start a second master.
        if self.proc is not None and self.proc.poll() is None:
            return self
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


def _epolls_watching(pid: int, inode: int) -> int:
    """How many epoll instances of process ``pid`` watch one of its fds open on socket ``inode``."""
    fds: set[str] = set()
    epolls: list[str] = []
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target == f"socket:[{inode}]":
                fds.add(fd.name)
            elif target == "anon_inode:[eventpoll]":
                epolls.append(fd.name)
        count = 0
        for fd_name in epolls:
            try:
                info = Path(f"/proc/{pid}/fdinfo/{fd_name}").read_text()
            except OSError:
                continue
            watched = set(re.findall(r"^tfd:\s+(\d+)", info, re.M))
            count += bool(watched & fds)
        return count
    except OSError:
        return 0


@contextlib.contextmanager
def serve(app: str, *args: str, **kwargs: object) -> Iterator[Gunicorn]:
    server = Gunicorn(app, *args, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
