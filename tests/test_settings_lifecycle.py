"""Limits and process lifecycle settings keep their meaning under ThreadWorker.

timeout, graceful_timeout, keepalive, max_requests(+jitter), limit_request_*,
reuse_port, backlog, user/group, umask, worker_tmp_dir, raw_env, reload
(+reload_extra_files), and the master's HUP/TTIN/TTOU with no request lost.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import (
    HOST,
    Gunicorn,
    RawConnection,
    build_request,
    config_file,
    exchange,
    poll_until,
    reference,
    running,
    stamp_until,
    subject,
    wait_accepted,
    wait_connections,
)

PROBE = "tests.apps:settings_probe"
WSGI = "tests.apps:settings_wsgi"


def _info(server: Gunicorn, query: str = "") -> dict:
    status, _, body, _ = exchange(server.port, build_request("/info" + query))
    assert status == 200, (status, body, server.output())
    return json.loads(body)


class Hammer:
    """Requests, one after another, each on a new connection, from a thread, until stopped
    (at most ``limit`` seconds). Anything but a 200 is a failure."""

    def __init__(self, port: int, query: str = "", limit: float = 40.0) -> None:
        self.port = port
        self.query = query
        self.limit = limit
        self.ok: list[dict] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, _, body, _ = exchange(self.port, build_request("/info" + self.query), timeout=10)
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if status == 200:
                self.ok.append(json.loads(body))
            else:
                self.failures.append(f"status {status}: {body[:200]!r}")

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def wait_ok(self, count: int, timeout: float = 15.0) -> None:
        target = len(self.ok) + count
        poll_until(lambda: len(self.ok) >= target or not self._thread.is_alive(), timeout, what=f"{count} more 200s")


# -- timeout, graceful_timeout, keepalive --------------------------------------------------------


def test_timeout_does_not_limit_an_async_request(mode):
    """timeout is about a silent worker, not a slow request: an async request longer than
    ``timeout`` completes on the same worker (the loop keeps ticking the heartbeat). A loop
    blocked by a synchronous call is the other half: tests/test_settings_hooks.py
    (test_worker_abort_on_timeout) shows the master aborting and replacing that worker."""
    server = subject(PROBE, "--timeout", "1", mode=mode)
    with running(server):
        (pid,) = server.worker_pids()
        status, _, body, _ = exchange(server.port, build_request("/sleep?s=2"), timeout=15)
        assert (status, body) == (200, b"slept")
        assert server.worker_pids() == [pid]
        assert "WORKER TIMEOUT" not in server.log()


def _in_flight(port: int, path: str, result: dict) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        result["status"] = exchange(port, build_request(path), timeout=20)[0]
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_graceful_timeout_lets_in_flight_requests_finish(mode):
    """SIGTERM: the request in flight completes (within graceful_timeout), then all exit."""
    server = subject(PROBE, "--graceful-timeout", "10", mode=mode)
    with running(server):
        result: dict = {}
        thread = _in_flight(server.port, "/sleep?s=1.5", result)
        wait_connections(server.port)  # the request is in the worker
        stopped = time.monotonic()
        server.signal(signal.SIGTERM)
        thread.join(20)
        assert server.wait(20) == 0
        exited = time.monotonic() - stopped
    assert result["status"] == 200
    assert 0.8 <= exited < 8.0


def test_graceful_timeout_bounds_the_wait():
    """A request longer than graceful_timeout is cut off when it expires, and the master exits."""
    server = subject(PROBE, "--graceful-timeout", "1")
    with running(server):
        result: dict = {}
        thread = _in_flight(server.port, "/sleep?s=10", result)
        wait_connections(server.port)  # the request is in the worker
        stopped = time.monotonic()
        server.signal(signal.SIGTERM)
        thread.join(20)
        server.wait(20)
        exited = time.monotonic() - stopped
    assert result["status"] == 0  # closed without a response
    assert result["elapsed"] < 5.0 and exited < 5.0


def _idle_closed_after(port: int, keepalive_probe: float) -> tuple[bool, bytes, float]:
    """One request on a keep-alive connection, then idle up to ``keepalive_probe`` seconds:
    (closed by the server?, the first response's head, seconds idle until closed or probed)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(build_request("/fixed", close=False))
        data = b""
        while not data.endswith(b"0123456789"):
            part = sock.recv(65536)
            assert part
            data += part
        sock.settimeout(keepalive_probe)
        idle_from = time.monotonic()
        try:
            closed = sock.recv(65536) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
        idle = time.monotonic() - idle_from
        if not closed:
            sock.sendall(build_request("/fixed", close=False))
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        return closed, data.partition(b"\r\n\r\n")[0].lower(), idle


def test_keepalive():
    """keepalive N: an idle connection is closed after N seconds; 0 closes after each response."""
    short = subject(PROBE, "--keep-alive", "1")
    long = subject(PROBE, "--keep-alive", "4")
    none = subject(PROBE, "--keep-alive", "0")
    with running(short, long, none), ThreadPoolExecutor(3) as pool:
        probes = [pool.submit(_idle_closed_after, server.port, idle)
                  for server, idle in ((short, 3), (long, 1.5), (none, 1))]
        (short_closed, short_head, short_idle), (long_closed, _, _), (none_closed, none_head, none_idle) = [
            p.result() for p in probes]
    assert short_closed and b"connection: close" not in short_head
    assert 0.8 <= short_idle < 2.5  # about keepalive=1 s (deadlines are checked once per loop tick)
    assert long_closed is False
    assert none_closed and b"connection: close" in none_head and none_idle < 0.5


# -- max_requests + jitter ------------------------------------------------------------------------


def _boots(server: Gunicorn) -> int:
    return len(re.findall(r"pounce_worker: \w+ mode", server.log()))


def test_max_requests_with_jitter():
    """Each worker serves max_requests + randint(0, jitter) requests, then is replaced.

    One request at a time, and after each restart the next request waits until the new
    worker is up, so the counts are exact (concurrent load, and a burst at boot: the test below)."""
    # Thread mode: the budget is shared by the worker's loops (both modes: the test below).
    server = subject(PROBE, "--max-requests", "1", "--max-requests-jitter", "5", mode="threads")
    pids: list[int] = []
    with running(server):
        while len(set(pids)) < 7 and len(pids) < 60:
            boots = _boots(server)
            pids.append(_info(server)["pid"])
            # Did that request spend the worker's budget? Then wait for its successor.
            if poll_until_true(lambda: "Autorestarting" in server.log().rsplit("pounce_worker: ", 1)[-1], 0.15):
                poll_until(lambda b=boots: _boots(server) > b, 15, what="the next worker")
                time.sleep(0.2)
    runs: list[int] = []
    for i, pid in enumerate(pids):
        if i and pid == pids[i - 1]:
            runs[-1] += 1
        else:
            runs.append(1)
    assert len(runs) == len(set(pids)), f"a worker pid came back: {pids}"
    full = runs[:-1]  # the last worker may still be serving
    assert len(full) >= 6 and all(1 <= n <= 6 for n in full), runs
    assert len(set(full)) > 1, f"jitter ignored? every worker served {full[0]}"


def poll_until_true(predicate: object, timeout: float) -> bool:
    try:
        poll_until(predicate, timeout, interval=0.02)
    except TimeoutError:
        return False
    return True


def test_max_requests_under_concurrent_load(mode):
    """Four clients at once, so each new worker starts with a burst from the backlog: no worker
    serves more than max_requests plus what was in flight when its budget ran out. (A budget
    spent before the main thread left its start-up wait used to go unnoticed for a whole
    heartbeat interval: hundreds of requests over the limit.)"""
    server = subject(PROBE, "--max-requests", "3", mode=mode)
    with running(server):
        hammers = [Hammer(server.port, limit=10.0) for _ in range(4)]
        for hammer in hammers:
            hammer.__enter__()
        try:
            poll_until(lambda: _boots(server) >= 6, 15, what="five restarts")
        finally:
            for hammer in hammers:
                hammer.__exit__()
    served: dict[int, int] = {}
    for hammer in hammers:
        for reply in hammer.ok:
            served[reply["pid"]] = served.get(reply["pid"], 0) + 1
    assert len(served) >= 5
    assert max(served.values()) <= 3 + 4 * 2, served


def test_graceful_stop_serves_a_connection_it_accepted(mode):
    """A client connects, then the worker is told to stop gracefully, then the request
    arrives: Gunicorn's sync worker serves it (graceful means accepted work is finished),
    so must we."""
    ours = subject(PROBE, mode=mode)
    theirs = reference(WSGI)
    results = {}
    with running(ours, theirs):
        for name, server in (("ours", ours), ("theirs", theirs)):
            _info(server) if name == "ours" else exchange(server.port, build_request("/fixed"))
            with socket.create_connection((HOST, server.port), timeout=10) as sock:
                wait_accepted(sock)  # accepted by the worker
                server.signal(signal.SIGTERM)
                time.sleep(0.3)  # the stop is under way
                try:
                    sock.sendall(build_request("/fixed"))
                    data = b""
                    while part := sock.recv(65536):
                        data += part
                except OSError:
                    data = b""
            results[name] = data.split(b"\r\n", 1)[0]
            server.wait(20)
    assert results["theirs"] == b"HTTP/1.1 200 OK"
    assert results["ours"] == b"HTTP/1.1 200 OK"


# -- limit_request_* (light: tests/http1/test_http.py covers the edges) ----------------------------------

LIMITS = ("--limit-request-line", "60", "--limit-request-fields", "4", "--limit-request-field_size", "40")
#: Request line "GET <target> HTTP/1.1" of exactly 60 bytes.
AT_LINE = "/fixed?" + "a" * (60 - len("GET  HTTP/1.1") - len("/fixed?"))
LIMIT_CASES = [
    ("line at limit", build_request(AT_LINE), True),
    ("line over limit", build_request(AT_LINE + "a"), False),
    # Host + Connection + 2 more = 4 fields, then 5.
    ("fields at limit", build_request("/fixed", [("A", "1"), ("B", "2")]), True),
    ("fields over limit", build_request("/fixed", [("A", "1"), ("B", "2"), ("C", "3")]), False),
    # Gunicorn counts "X-Long: vvv\r\n": 40 bytes pass, 41 do not.
    ("field at limit", build_request("/fixed", [("X-Long", "v" * (40 - len("X-Long: \r\n")))]), True),
    ("field over limit", build_request("/fixed", [("X-Long", "v" * (41 - len("X-Long: \r\n")))]), False),
]


@pytest.fixture(scope="module")
def limit_servers():
    with running(subject(PROBE, *LIMITS), reference(WSGI, *LIMITS)) as servers:
        yield servers


@pytest.mark.parametrize(("case", "data", "accepted"), LIMIT_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_limits_agree_with_gunicorn_at_the_boundary(limit_servers, case, data, accepted):
    """The same request, just under or just over a limit, to ThreadWorker and to Gunicorn's
    sync worker: accepted or refused alike (tests/http1/test_http.py covers the limits in depth)."""
    ours, theirs = limit_servers
    gunicorns = exchange(theirs.port, data)[0]
    assert (gunicorns == 200) is accepted, f"Gunicorn itself: {gunicorns}"
    mine = exchange(ours.port, data)[0]
    assert (mine == 200) is accepted, f"{case}: ours {mine}, Gunicorn {gunicorns}"
    if not accepted:
        assert mine in (400, 414, 431), case


# -- sockets: reuse_port, backlog, umask ------------------------------------------------------------


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on local ``port`` (/proc/net/tcp, state 0A: LISTEN)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def _closed_its_listener(pid: int, port: int) -> bool:
    """Whether worker ``pid`` still runs (a dead one holds nothing) and no longer listens on ``port``."""
    try:
        running_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return running_ and not _listening_inodes(port) & _socket_inodes(pid)
    except FileNotFoundError:
        return False


def _unread_by_server(port: int, client_port: int) -> int | None:
    """Bytes the server end of our connection (from ``client_port``) has not read yet."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)) == (port, client_port):
            return int(fields[4].split(":")[1], 16)
    return None


def _socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _bind_with_reuseport(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        probe.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def test_reuse_port():
    """reuse_port: Gunicorn's listening socket has SO_REUSEPORT, so another SO_REUSEPORT
    socket may bind the same port; without it that bind fails. Each worker then has its
    own listener, which a draining worker closes at once (the kernel would keep routing
    new connections to it, to be reset at its exit) while it finishes its request in flight."""
    with_it = subject(PROBE, "--reuse-port", bind_fd=False, workers=2)
    without = subject(PROBE, bind_fd=False)
    with running(with_it, without):
        assert _info(with_it)["scheme"] == "http" and _info(without)["scheme"] == "http"
        assert _bind_with_reuseport(with_it.port) is True
        assert _bind_with_reuseport(without.port) is False
        with RawConnection(with_it.port, timeout=20) as conn:
            conn.send(build_request("/info", close=False))
            pid = json.loads(conn.read_response().body)["pid"]
            assert _listening_inodes(with_it.port) & _socket_inodes(pid)
            conn.send(build_request("/sleep?s=2"))
            poll_until(lambda: _unread_by_server(with_it.port, conn.local_port) == 0, 10,
                       what="the worker read the request")  # so it is in flight at the TERM
            os.kill(pid, signal.SIGTERM)
            # While the request is in flight (its response not here yet): not as the process exits.
            poll_until(lambda: not select.select([conn.sock], [], [], 0)[0] and _closed_its_listener(
                pid, with_it.port), 10, what="the draining worker closed its listener, its request in flight")
            assert _info(with_it)["pid"] != pid  # served by the other worker meanwhile
            assert conn.read_response().body == b"slept"  # the request in flight is finished


def test_backlog():
    """backlog is the listen() queue length of the socket the workers accept from."""
    server = subject(PROBE, "--backlog", "37", bind_fd=False)
    with running(server):
        assert _info(server)["scheme"] == "http"
        out = subprocess.run(["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    # For a listening socket, ss shows the backlog as Send-Q.
    (line,) = out.strip().splitlines()
    assert line.split()[2] == "37", out


def test_umask_applies_to_unix_socket():
    """umask is the mask for files Gunicorn creates, the unix socket included; the worker
    serves that socket (ASGI client is None there)."""
    server = subject(PROBE, "--umask", "0o077", bind_fd=False)  # fd:// would replace every other bind
    path = server.tmp / "s.sock"
    server.args += ["-b", f"unix:{path}"]
    with running(server):
        poll_until(path.exists, 10, what="unix socket")
        mode = stat.S_IMODE(path.stat().st_mode)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(build_request("/info"))
            data = b""
            while part := sock.recv(65536):
                data += part
    assert mode == 0o700
    info = json.loads(data.partition(b"\r\n\r\n")[2])
    assert info["client"] is None and info["scheme"] == "http"


# -- processes: user/group, worker_tmp_dir, raw_env ------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
@pytest.mark.parametrize("extra", [(), ("--asgi-loop", "asyncio", "--http-protocols", "h2,h1",
                                        "--http2-cleartext", "both")], ids=["default-loop", "asyncio-h2c"])
def test_user_and_group(extra):
    """This machine's interpreter lives under /root (mode 700), which nobody cannot read: what
    the worker imports lazily (uvloop, asyncio's thread pool, h2) must be imported before
    Gunicorn switches the worker to ``user``/``group``. The worker died at its loop's start
    (``ModuleNotFoundError: concurrent.futures.thread``) where ``-k asgi`` served."""
    server = subject(PROBE, "--user", "nobody", "--group", "nogroup", *extra)
    with running(server):
        info = _info(server)
        (pid,) = server.worker_pids()
        status = Path(f"/proc/{pid}/status").read_text()
        master = Path(f"/proc/{server.proc.pid}/status").read_text()
        if extra and shutil.which("curl"):
            out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                                  "-w", "%{http_code} %{http_version}", f"http://127.0.0.1:{server.port}/info"],
                                 capture_output=True, text=True, timeout=30)
            assert out.stdout == "200 2", (out, server.output())
    nobody, nogroup = 65534, 65534
    assert (info["uid"], info["gid"]) == (nobody, nogroup)
    assert re.search(rf"^Uid:\s+{nobody}\s+{nobody}\s+{nobody}\s+{nobody}$", status, re.M), status
    assert re.search(rf"^Gid:\s+{nogroup}\s+{nogroup}\s+{nogroup}\s+{nogroup}$", status, re.M), status
    assert re.search(r"^Uid:\s+0\s", master, re.M)  # the master keeps its user


def test_worker_tmp_dir_holds_the_heartbeat(tmp_path: Path):
    """worker_tmp_dir: the heartbeat file lives there, and an idle worker keeps touching it."""
    server = subject(PROBE, "--worker-tmp-dir", str(tmp_path), "--timeout", "2")
    with running(server):
        (pid,) = server.worker_pids()
        fds = [Path(f"/proc/{pid}/fd") / fd for fd in os.listdir(f"/proc/{pid}/fd")]
        heartbeat = [fd for fd in fds if os.readlink(fd).startswith(str(tmp_path / "wgunicorn-"))]
        assert len(heartbeat) == 1, [os.readlink(fd) for fd in fds]
        # Gunicorn's notify() sets the mtime from a monotonic clock; the master compares them.
        # The worker notifies every min(1, timeout / 2) seconds while idle.
        time.sleep(0.6)
        first = heartbeat[0].stat().st_mtime
        time.sleep(1.3)
        second = heartbeat[0].stat().st_mtime
    assert 0.2 <= second - first <= 2.5


def test_raw_env_reaches_the_app_and_pounce_settings():
    """raw_env (--env): the app sees the variable; POUNCE_* settings can be given that way."""
    server = subject(PROBE, "--env", "FOO=bar", "--env", "POUNCE_MAX_BODY_SIZE=10")
    with running(server):
        assert _info(server, "?env=FOO")["env"] == "bar"
        small = exchange(server.port, build_request("/info", body=b"x" * 10, method="POST"))[0]
        big = exchange(server.port, build_request("/info", body=b"x" * 11, method="POST"))[0]
    assert (small, big) == (200, 413)


# -- asgi_loop ----------------------------------------------------------------------------------



@pytest.mark.skipif(not __import__("pounce_worker.mode").mode.gil_enabled(),
                    reason="uvloop is never used on a free-threaded build")
def test_asgi_loop_that_cannot_start_fails_the_boot():
    """asgi_loop=uvloop with a uvloop that cannot be imported: the boot fails visibly
    (Gunicorn's 'Worker failed to boot'), it does not hang."""
    server = subject(PROBE, "--asgi-loop", "uvloop", "--timeout", "3")
    fake = server.tmp / "broken" / "uvloop"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('uvloop broken on purpose')\n")
    server.extra_env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), str(Path(__file__).parent.parent)])
    with running(server):
        try:
            code = server.wait(4)
        except subprocess.TimeoutExpired:
            code = None
        log = server.output()
    assert "uvloop broken on purpose" in log
    assert code is not None and code != 0, "the master still runs a worker that cannot serve"


# -- reload ---------------------------------------------------------------------------------------

RELOAD_APP = '''
VERSION = {version}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"version %d" % VERSION
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": body}})
'''


def test_reload_and_reload_extra_files():
    """reload: changing the app's module replaces the worker, which serves the new code;
    touching a reload_extra_files file replaces it too."""
    server = subject("reloadable_app:app")
    module = server.tmp / "reloadable_app.py"
    module.write_text(RELOAD_APP.format(version=1))
    extra = server.tmp / "settings.toml"
    extra.write_text("x = 1\n")
    server.args += ["--reload", "--reload-engine", "poll", "--pythonpath", str(server.tmp),
                    "--reload-extra-file", str(extra)]

    def body() -> bytes:
        return exchange(server.port, build_request("/"))[2]

    with running(server):
        assert body() == b"version 1"
        (first,) = server.worker_pids()
        assert stamp_until(module, RELOAD_APP.format(version=2), lambda: body() == b"version 2"), server.log()
        poll_until(lambda: len(server.worker_pids()) == 1, 15, interval=0.2, what="one worker")
        (second,) = server.worker_pids()
        assert stamp_until(extra, "x = 2\n", lambda: server.worker_pids() not in ([second], [])), server.log()
        assert body() == b"version 2"
    assert len({first, second}) == 2
    assert server.log().count("Worker reloading") >= 2


# -- master signals: HUP, TTIN, TTOU --------------------------------------------------------------

GEN_CONF = 'raw_env = ["GEN={gen}"]\nworkers = 2\n'


class LateSender:
    """A client that connects now and sends its request a moment later: its connection is
    accepted by a worker that then gets a graceful stop. Gunicorn's own workers serve it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        wait_accepted(self.sock)  # accepted by a worker

    def status(self) -> int:
        try:
            self.sock.sendall(build_request("/info"))
            data = b""
            while part := self.sock.recv(65536):
                data += part
        except OSError:
            data = b""
        finally:
            self.sock.close()
        return exchange_status(data)


def exchange_status(data: bytes) -> int:
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else 0


def test_hup_reloads_config_without_losing_a_request(mode):
    """HUP: the master rereads its config and replaces every worker gracefully; a client
    sending request after request on new connections sees no failure, then the new config;
    a client that connected before the HUP and sends after it is served too."""
    server = subject(PROBE, mode=mode, workers=2)
    conf = config_file(server, GEN_CONF.format(gen=1))
    server.args += ["-c", str(conf)]
    with running(server), Hammer(server.port, "?env=GEN") as hammer:
        hammer.wait_ok(20)
        old = set(server.worker_pids())
        late = LateSender(server.port)
        conf.write_text(GEN_CONF.format(gen=2))
        server.signal(signal.SIGHUP)
        time.sleep(0.3)
        late_status = late.status()
        poll_until(lambda: hammer.ok[-1]["env"] == "2" and not old & set(server.worker_pids())
                   and len(server.worker_pids()) == 2, 20, what="new workers with the new config")
        hammer.wait_ok(20)
    gens = [r["env"] for r in hammer.ok]
    assert gens[0] == "1" and gens[-1] == "2"
    assert {r["pid"] for r in hammer.ok if r["env"] == "2"}.isdisjoint(old)
    assert (hammer.failures, late_status) == ([], 200)


def test_ttin_ttou_without_losing_a_request(mode):
    """TTIN adds a worker, TTOU retires the oldest gracefully; no request fails meanwhile,
    not even one whose connection the retired worker had accepted."""
    server = subject(PROBE, mode=mode, workers=1)
    with running(server), Hammer(server.port) as hammer:
        hammer.wait_ok(20)
        (first,) = server.worker_pids()
        late = LateSender(server.port)  # only the first worker can have accepted it
        server.signal(signal.SIGTTIN)
        poll_until(lambda: len(server.worker_pids()) == 2, 15, what="a second worker")
        hammer.wait_ok(30)
        server.signal(signal.SIGTTOU)
        time.sleep(0.3)
        late_status = late.status()
        poll_until(lambda: server.worker_pids() not in ([first], []) and len(server.worker_pids()) == 1, 15,
                   what="back to one worker")
        hammer.wait_ok(30)
        (last,) = server.worker_pids()
    assert last != first  # TTOU retired the oldest worker
    assert {r["pid"] for r in hammer.ok} >= {first, last}
    assert (hammer.failures, late_status) == ([], 200)
