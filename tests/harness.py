"""Run a real ``gunicorn`` master in a subprocess and talk to it over loopback.

Every test server is a real arbiter with real forked workers, started with the
interpreter running the tests (so the same suite exercises 3.11, 3.13 or a
free-threaded build). The listening socket is created here and handed over as
``fd://N``: the port is known before gunicorn starts and no other process can
race us for it. Processes are stopped by the PID we started, never by name.

No port is ever probed and then bound later (another test, or any process,
could take it in between): a server either gets a socket made here (``fd://N``),
or binds port 0 itself and the port is read back (uvicorn in tests/compat), or,
when it must bind a port by number itself (``bind_fd=False``, nginx,
systemd-socket-activate: all set SO_REUSEADDR), gets a port this process keeps
reserved (``reserve_port``) until the server listens on it or stops.

Every process the suite starts carries ``SESSION_ENV`` (set per pytest process by
tests/conftest.py) in its environment, and every ``Gunicorn`` its own
``SERVER_ENV``: ``stop()`` kills what is left of a master's process tree (workers
orphaned by a SIGKILLed master), and the session ends by killing, by PID, and
naming anything still carrying the session's marker (``marked_processes``).
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
import uuid
from collections.abc import Callable, Iterator, Sequence
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


def reserve_port(host: str = HOST) -> socket.socket:
    """A socket bound to a fresh port with SO_REUSEADDR, not listening: a reservation.

    While it stays open no other process takes the port by accident: the kernel
    never hands a bound port to another ``bind(port 0)`` nor to a client's
    ``connect()``, and a ``bind`` without SO_REUSEADDR fails. A server that sets
    SO_REUSEADDR itself (nginx, systemd-socket-activate, pounce_worker's status
    listener) can still bind and listen on it. Close it once the server stopped.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def reserve_port_run(length: int, host: str = HOST) -> list[socket.socket]:
    """``length`` consecutive reserved ports (see ``reserve_port``); the first is the base."""
    for _ in range(100):
        first = reserve_port(host)
        base = first.getsockname()[1]
        held = [first]
        try:
            for port in range(base + 1, base + length):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # Another socket on the port (even one that also set SO_REUSEADDR but is
                # connected or listening) is refused: SO_REUSEADDR only shares with idle binds.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
                sock.bind((host, port))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        except OSError:
            for sock in held:
                sock.close()
            continue
        return held
    raise RuntimeError(f"no run of {length} free ports")


# -- the processes the suite starts -----------------------------------------------------------------

#: In every process the suite starts (through os.environ): a value unique to one pytest
#: process (each xdist worker has its own), set by tests/conftest.py.
SESSION_ENV = "POUNCE_TEST_SESSION"
#: In every process of one ``Gunicorn`` (master and workers): a value unique to that server.
SERVER_ENV = "POUNCE_TEST_SERVER"


def marked_processes(name: str, value: str) -> dict[int, str]:
    """``{pid: command line}`` of live processes whose environment has ``name=value`` (not this one)."""
    needle = f"{name}={value}".encode()
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
            if needle not in environ.split(b"\0"):
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone, or a zombie (its environ reads empty)
            continue
        found[int(entry.name)] = cmdline
    return found


def kill_marked(name: str, value: str, grace: float = 0.0) -> dict[int, str]:
    """Wait up to ``grace`` seconds for the marked processes to end, then SIGKILL the rest by PID.

    Returns what had to be killed. Only processes carrying ``name=value`` (ours) are touched.
    """
    deadline = time.monotonic() + grace
    survivors = marked_processes(name, value)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.1)
        survivors = marked_processes(name, value)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, _signal.SIGKILL)
    return survivors


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


# -- helpers for the end-to-end suite -----------------------------------------------------------


def _accepted_peers(port: int) -> set[int]:
    """Client ports of connections to local ``port`` that a server process has accept()ed.

    A connection still in the listen backlog has no socket file yet: inode 0 in
    /proc/net/tcp; accept() gives it one.
    """
    peers = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == port and inode != "0" and fields[3] == "01":  # ESTABLISHED
                    peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


def wait_accepted(sock: socket.socket, timeout: float = 10.0) -> None:
    """Until the server end of the connection ``sock`` was accept()ed (by a worker, for Gunicorn).

    What "sleep a moment, the worker has accepted it by now" means, observed instead of hoped.
    """
    port = sock.getpeername()[1]
    mine = sock.getsockname()[1]
    if not wait_until(lambda: mine in _accepted_peers(port), timeout=timeout, interval=0.01):
        raise TimeoutError(f"connection from port {mine} to {port} not accepted in {timeout}s")


def wait_connections(port: int, count: int = 1, timeout: float = 10.0) -> None:
    """Until at least ``count`` connections to ``port`` were accept()ed and are still established.

    For a request a thread is making: its connection is in a worker, not in the backlog.
    """
    if not wait_until(lambda: len(_accepted_peers(port)) >= count, timeout=timeout, interval=0.01):
        raise TimeoutError(f"{count} accepted connection(s) to port {port} not seen in {timeout}s")



def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` passes; return its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class ParsedResponse:
    """One response read off a raw socket: status, lower-cased headers, body, informational 1xx seen."""

    def __init__(self, status: int, http_version: bytes, headers: list[tuple[bytes, bytes]],
                 body: bytes, informational: list[int]) -> None:
        self.status = status
        self.http_version = http_version
        self.headers = headers
        self.body = body
        self.informational = informational

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def __repr__(self) -> str:
        return f"<ParsedResponse {self.status} {self.headers!r} {self.body[:80]!r}>"


class RawConnection:
    """A raw client socket on loopback that parses the server's responses with h11.

    Bytes are sent exactly as given (pipelining, hand-made framing, bad requests); h11
    only frames what comes back, so a HEAD response carrying a body, or a response
    out of order, breaks the parse of the following one.
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        import h11

        self._h11 = h11
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.timeout = timeout
        self.conn = h11.Connection(h11.CLIENT)
        self.local_port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self, method: bytes = b"GET", timeout: float | None = None) -> ParsedResponse:
        """The next complete response (1xx responses are recorded in ``informational``)."""
        h11 = self._h11
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if conn.our_state is h11.IDLE:
            # Tell h11 which request this response answers; the bytes were sent already.
            conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"x")]))
            conn.send(h11.EndOfMessage())
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        informational: list[int] = []
        head = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return ParsedResponse(head.status_code, head.http_version, list(head.headers.raw_items()),
                                      body, informational)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed before a complete response")

    def recv_raw(self, timeout: float = 1.0) -> bytes:
        """Whatever arrives within ``timeout`` (empty on timeout or EOF)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return b""

    def closed_by_server(self, timeout: float) -> bool:
        """True when the server closes (EOF or reset) within ``timeout`` without sending more."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if data:
            raise AssertionError(f"expected EOF, got {data!r}")
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_request(method: str = "GET", target: str = "/", headers: Sequence[tuple[str, str]] = (),
                 body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    """Request bytes exactly as written: ``Host`` first, then ``headers``, then ``body`` (no framing added)."""
    lines = [f"{method} {target} {version}", "Host: test"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def write_config(directory: Path, body: str) -> Path:
    """A gunicorn config file (``-c``) holding ``body``; returns its path."""
    path = directory / "gunicorn_test_conf.py"
    path.write_text(body)
    return path


# -- deployment examples in conf/ (tests/test_conf_*.py) ------------------------------------------

CONF = ROOT / "conf"
GUNICORN_CONF = CONF / "gunicorn.conf.py"
#: What conf/gunicorn.conf.py (and Gunicorn itself) read from the environment: removed from the
#: servers' environment unless a test sets them, so the runner's own environment cannot leak in.
CONF_ENV = (
    "GUNICORN_BIND", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_CPUS",
    "GUNICORN_WORKER_CONNECTIONS", "GUNICORN_KEEPALIVE", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS_JITTER", "GUNICORN_LOGLEVEL", "GUNICORN_ACCESSLOG",
    "GUNICORN_CONTROL_SOCKET", "RUNTIME_DIRECTORY", "APP_MODULE", "GUNICORN_CMD_ARGS",
    "FORWARDED_ALLOW_IPS", "POUNCE_WORKER_MODE", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET",
)


def conf_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment minus ``CONF_ENV``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in CONF_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def conf_values(env: dict[str, str] | None = None, config: Path = GUNICORN_CONF) -> dict[str, object]:
    """The settings ``config`` computes under ``env``, evaluated in a fresh interpreter as gunicorn would."""
    code = (
        "import json, runpy, sys\n"
        "ns = runpy.run_path(sys.argv[1])\n"
        "out = {k: v for k, v in ns.items() if not k.startswith('__') and not callable(v)"
        " and not hasattr(v, '__spec__')}\n"
        "out['MODE'] = ns['MODE'].value\n"
        "print(json.dumps(out, default=str))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)], env=conf_environ(env), cwd=str(ROOT),
        capture_output=True, text=True, timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{config} failed under {env}:\n{done.stderr}")
    import json

    return dict(json.loads(done.stdout))


#: A worker's boot line (not the master's "thread mode on a GIL build" warning).
WORKER_BOOT_LINE = r"pounce_worker: (\w+) mode \(.*?\), (\d+) event loop\(s\)"


class ConfGunicorn(Gunicorn):
    """``gunicorn -c conf/gunicorn.conf.py APP``: only the config file and its environment decide.

    The listening socket is made here and handed over through the file's own
    ``GUNICORN_BIND`` (``fd://N``); the log is what the config sends to stderr.
    ``workers`` is how many boot lines ``wait_ready`` waits for.
    """

    def __init__(
        self,
        app: str | None = "conf.example_app:app",
        *args: str,
        mode: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        config: Path = GUNICORN_CONF,
    ) -> None:
        super().__init__(app or "", *args, mode=mode, workers=workers, env=env)
        self.config = config

    def command(self) -> list[str]:
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        cmd = [self.python, "-m", "gunicorn", "-c", str(self.config), *self.args]
        return [*cmd, self.app] if self.app else cmd

    def environ(self) -> dict[str, str]:
        env = conf_environ()
        if self.mode is not None:
            env["POUNCE_WORKER_MODE"] = self.mode
        assert self.sock is not None
        env["GUNICORN_BIND"] = f"fd://{self.sock.fileno()}"
        env.update(self.extra_env)
        return env

    def log(self) -> str:
        try:
            return (self.tmp / "stdout.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        return f"--- gunicorn output ---\n{self.log()}"

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until ``workers`` workers logged their boot line and the port answers.

        Counts only the worker's "pounce_worker: <mode> mode (<why>), N event loop(s)"
        line: the master's "pounce_worker: thread mode on a GIL build" warning also
        matches ``pounce_worker: \\w+ mode`` and would be counted as a worker.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            if len(re.findall(WORKER_BOOT_LINE, self.log())) >= self.workers and self._connectable():
                return
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn did not become ready in {timeout}s:\n{self.output()}")


def require_tool(name: str, package: str, *extra_paths: str) -> str:
    """The path of a Debian tool a test needs; fails (never skips) naming the package to install."""
    import shutil

    found = shutil.which(name) or next((p for p in extra_paths if os.access(p, os.X_OK)), None)
    if found is None:
        import pytest

        pytest.fail(f"{name} is not installed: apt-get install {package} (tests/run installs it)", pytrace=False)
    return found


# -- helpers for the settings suite (tests/test_settings_*.py) ----------------------------------

#: Names another worker class to run the settings tests against (a comparison run, e.g.
#: ``uvicorn_worker.UvicornWorker``); unset, they run against ``pounce_worker.ThreadWorker``.
SETTINGS_WORKER_ENV = "POUNCE_SETTINGS_WORKER"


def subject(app: str, *args: str, mode: str | None = "threads", **kwargs: object) -> Gunicorn:
    """A master running the worker class under test (see ``SETTINGS_WORKER_ENV``)."""
    other = os.environ.get(SETTINGS_WORKER_ENV)
    if other:
        kwargs.update(worker_class=other, loops_expected=False)
        mode = None
    return Gunicorn(app, *args, mode=mode, **kwargs)  # type: ignore[arg-type]


def reference(app: str, *args: str, **kwargs: object) -> Gunicorn:
    """Gunicorn's own sync worker serving a WSGI app: how Gunicorn itself reads a setting."""
    kwargs.setdefault("threads", 1)  # threads > 1 would turn sync into gthread
    return Gunicorn(app, *args, worker_class="sync", mode=None, loops_expected=False, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(*servers: Gunicorn) -> Iterator[tuple[Gunicorn, ...]]:
    """Start several masters at once (they boot in parallel), stop them all afterwards."""
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            if server.proc is not None:
                server.stop()


def config_file(server: Gunicorn, text: str, name: str = "gunicorn.conf.py") -> Path:
    """Write a Gunicorn config file into the server's temp dir; pass it with ``-c``."""
    path = server.tmp / name
    path.write_text(text)
    return path


def build_request(
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    method: str = "GET",
    body: bytes = b"",
    close: bool = True,
) -> bytes:
    """An HTTP/1.1 request as bytes, with Host (and Connection: close unless ``close`` is False)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers, body)`` of one raw HTTP/1.x response; status 0 when there is none."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/"):
        return 0, {}, data
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (as far as it is complete)."""
    out = b""
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def exchange(
    port: int, data: bytes, timeout: float = 10.0, host: str = HOST
) -> tuple[int, dict[str, str], bytes, int]:
    """Send ``data`` on a new connection, read to EOF: ``(status, headers, body, local_port)``."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        local_port = s.getsockname()[1]
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not part:
                break
            out += part
    status, headers, body = parse_response(out)
    return status, headers, body, local_port


def poll_until(predicate: object, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate()`` until it is true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout}s")


def stamp_until(path: Path, text: str, predicate: object, timeout: float = 20.0) -> bool:
    """Write ``text`` to ``path`` with a fresh, later mtime every 1.5 s until ``predicate()``.

    Gunicorn's poll reloader takes each file's baseline mtime on its first pass in a new
    worker, and only a later mtime counts as a change: a write that lands before that first
    pass (a new worker starting on a loaded machine) is never seen. Stamping again with a
    still later mtime is what an operator's next save does; the reloader polls every second.
    """
    deadline = time.monotonic() + timeout
    stamp = time.time() + 5  # ahead of any baseline, whatever the filesystem's resolution
    while time.monotonic() < deadline:
        path.write_text(text)
        os.utime(path, (stamp, stamp))
        if wait_until(predicate, timeout=1.5, interval=0.1):
            return True
        stamp += 1
    return bool(predicate())  # type: ignore[operator]


# -- helpers for the hostile-client suites (tests/test_hostile_*.py) ---------------------------------


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in KiB (``VmRSS`` now, ``VmHWM`` the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def read_until_close(
    sock: socket.socket, timeout: float, until: Callable[[bytes], bool] | None = None
) -> tuple[bytes, str]:
    """Everything the peer sends until it closes: ``(data, how)``, how is eof, reset or timeout
    (or ``done``, once ``until(data)`` holds)."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        if until is not None and until(out):
            return out, "done"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return out, "timeout"
        sock.settimeout(remaining)
        try:
            part = sock.recv(65536)
        except TimeoutError:
            return out, "timeout"
        except ConnectionResetError:
            return out, "reset"
        if not part:
            return out, "eof"
        out += part


def response_statuses(data: bytes) -> list[int]:
    """Status codes of the consecutive HTTP/1.x responses in ``data`` (framed by Content-Length).

    Stops at the first thing that is not a complete response head; a response
    without Content-Length takes the rest of the data as its body.
    """
    statuses: list[int] = []
    while data.startswith(b"HTTP/1."):
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        head = data[:end].decode("latin-1").split("\r\n")
        statuses.append(int(head[0].split(" ")[1]))
        length = 0 if statuses[-1] < 200 or statuses[-1] in (204, 304) else None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            break
        data = data[end + 4 + length:]
    return statuses
