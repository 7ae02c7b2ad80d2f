"""conf/systemd/pounce.{socket,service}: the units are valid, consistent, and really socket-activate.

``systemd-socket-activate`` (Debian package ``systemd``) plays systemd's part: it
listens on a loopback port, and on the first connection execs the service's own
ExecStart command line (read from the file, paths mapped onto this checkout)
with LISTEN_FDS/LISTEN_PID, with only the environment the unit sets, as
systemd does. The test also plays systemd's notify socket and RuntimeDirectory,
and runs ExecReload.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import (
    CONF,
    GUNICORN_CONF,
    HOST,
    ROOT,
    SESSION_ENV,
    WORKER_BOOT_LINE,
    conf_values,
    require_tool,
    reserve_port,
)

SERVICE = CONF / "systemd" / "pounce.service"
SOCKET = CONF / "systemd" / "pounce.socket"
#: Where the unit expects the project and its virtualenv; mapped onto this checkout and
#: the virtualenv running the tests.
UNIT_ROOT = "/opt/pounce"
UNIT_VENV_BIN = "/opt/pounce/venv/bin/"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """A systemd unit file as {section: {key: [values in order]}} (keys may repeat)."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def local_path(text: str) -> str:
    """A path of the unit's layout mapped onto this machine's checkout and virtualenv."""
    venv_bin = Path(sys.executable).parent
    return text.replace(UNIT_VENV_BIN, f"{venv_bin}/").replace(UNIT_ROOT, str(ROOT))


def exec_argv(unit: Unit, key: str) -> list[str]:
    argv = shlex.split(one(unit, "Service", key))
    argv[0] = argv[0].lstrip("-@:+!")  # systemd's ExecStart prefixes
    return [local_path(arg) for arg in argv]


def unit_environment(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in unit["Service"].get("Environment", []):
        for assignment in shlex.split(line):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


# -- the files ---------------------------------------------------------------------------------


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own offline checker accepts both units (paths mapped so the binaries exist)."""
    analyze = require_tool("systemd-analyze", "systemd")
    for unit in (SERVICE, SOCKET):
        (tmp_path / unit.name).write_text(local_path(unit.read_text()))
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / SOCKET.name), str(tmp_path / SERVICE.name)],
        capture_output=True, text=True, timeout=30, cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == "", "systemd-analyze warned:\n" + done.stdout + done.stderr


def test_units_agree_with_each_other_and_the_config() -> None:
    service, sock = parse_unit(SERVICE), parse_unit(SOCKET)
    # The socket listens where conf/gunicorn.conf.py would bind by default (and nginx points).
    default_bind = conf_values({})["bind"]
    assert sock["Socket"]["ListenStream"][0] in default_bind  # type: ignore[operator]
    assert all(addr.startswith(("127.", "[::1]", "/")) for addr in sock["Socket"]["ListenStream"]), \
        "the example socket stays on loopback (nginx in front)"
    assert sock["Install"]["WantedBy"] == ["sockets.target"]
    assert "PartOf" not in sock["Unit"], "the socket must outlive service restarts to queue connections"
    assert "pounce.socket" in one(service, "Unit", "Requires").split()
    assert "pounce.socket" in one(service, "Unit", "After").split()
    svc = service["Service"]
    assert one(service, "Service", "Type") == "notify"  # gunicorn's arbiter sends READY=1
    assert one(service, "Service", "KillMode") == "mixed"
    assert exec_argv(service, "ExecReload")[-3:] == ["-s", "HUP", "$MAINPID"]
    argv = exec_argv(service, "ExecStart")
    assert Path(argv[0]).name == "gunicorn"
    config = Path(argv[argv.index("--config") + 1])
    assert config == GUNICORN_CONF
    assert local_path(one(service, "Service", "WorkingDirectory")) == str(ROOT)
    assert "RuntimeDirectory" in svc, "conf/gunicorn.conf.py puts the control socket in $RUNTIME_DIRECTORY"
    # systemd's stop timeout leaves the graceful drain time to finish.
    graceful = conf_values(unit_environment(service))["graceful_timeout"]
    assert int(one(service, "Service", "TimeoutStopSec")) >= int(graceful) + 10  # type: ignore[call-overload]


# -- socket activation, for real ---------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_for(path: Path, pattern: str, timeout: float, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, _read(path))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not seen {count}x in {timeout}s:\n{_read(path)}")


def test_socket_activation_serves_and_reloads(mode: str, tmp_path: Path) -> None:
    activate = require_tool("systemd-socket-activate", "systemd")
    service = parse_unit(SERVICE)
    argv = exec_argv(service, "ExecStart")
    if not Path(argv[0]).exists():
        pytest.fail(f"ExecStart's {argv[0]} does not exist: is gunicorn installed in {sys.prefix}?")
    env = unit_environment(service)
    env["POUNCE_WORKER_MODE"] = mode
    expected_workers = int(conf_values(env)["workers"])  # type: ignore[call-overload]
    runtime = tmp_path / "run"
    runtime.mkdir()
    notify_path = tmp_path / "notify"
    env["NOTIFY_SOCKET"] = str(notify_path)  # what Type=notify gives the service
    env["RUNTIME_DIRECTORY"] = str(runtime)  # what RuntimeDirectory= gives it
    # systemd-socket-activate takes a port only by number: reserved until the end (it binds
    # with SO_REUSEADDR, so it can; nothing else takes the port meanwhile).
    reserved = reserve_port()
    port = reserved.getsockname()[1]
    cmd = [activate, "-l", f"{HOST}:{port}"]
    # The suite's marker (tests/harness/), so a service left running is found and stopped.
    for name, value in {**env, SESSION_ENV: os.environ[SESSION_ENV]}.items():
        cmd += ["-E", f"{name}={value}"]
    cmd += argv
    log = tmp_path / "journal.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(15)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=local_path(one(service, "Service", "WorkingDirectory")), stdout=out, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), SESSION_ENV: os.environ[SESSION_ENV]},
        )
    try:
        _wait_for(log, rf"Listening on {re.escape(HOST)}:{port}", 10)
        assert "Booting worker" not in _read(log), "started before the first connection"
        # The first connection starts the service and is served by it.
        r = httpx.get(f"http://{HOST}:{port}/first", timeout=30)
        assert r.status_code == 200 and r.json()["path"] == "/first"
        assert notify.recv(4096).startswith(b"READY=1"), "Type=notify needs gunicorn's READY=1"
        _wait_for(log, WORKER_BOOT_LINE, 15, count=expected_workers)
        text = _read(log)
        # Gunicorn took the inherited socket (and nothing else): the master is the exec'd PID.
        assert re.findall(r"Listening at: (\S+) \((\d+)\)", text) == [(f"http://{HOST}:{port}", str(proc.pid))]
        assert [m for m, _ in re.findall(WORKER_BOOT_LINE, text)] == [mode] * expected_workers
        control = runtime / "gunicorn.ctl"
        deadline = time.monotonic() + 10
        while not control.is_socket() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert control.is_socket(), "control socket in $RUNTIME_DIRECTORY"
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=5) as client:
            for _ in range(10):
                assert client.get("/healthz").text == "ok\n"
        # ExecReload: a graceful reload keeps the inherited socket.
        reload_cmd = [arg.replace("$MAINPID", str(proc.pid)) for arg in exec_argv(service, "ExecReload")]
        subprocess.run(reload_cmd, check=True, timeout=10)
        _wait_for(log, r"Hang up: Master", 10)
        _wait_for(log, WORKER_BOOT_LINE, 20, count=2 * expected_workers)
        assert httpx.get(f"http://{HOST}:{port}/after-reload", timeout=10).json()["path"] == "/after-reload"
        assert len(re.findall(r"Listening at:", _read(log))) == 1
    finally:
        notify.close()
        reserved.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # systemctl stop: KillSignal to the main PID
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 0, _read(log)
    assert "Shutting down: Master" in _read(log)
