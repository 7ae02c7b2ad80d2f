"""conf/gunicorn.conf.py: workers x threads follow the interpreter, env overrides work, and it serves.

Every server here is ``gunicorn -c conf/gunicorn.conf.py conf.example_app:app`` with
nothing on the command line: the file alone decides the layout.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import time

import httpx
import pytest

from pounce_worker import mode as _mode
from tests.harness import GUNICORN_CONF, ROOT, WORKER_BOOT_LINE, ConfGunicorn, conf_environ, conf_values

BOOT_LINE = re.compile(WORKER_BOOT_LINE)
SUMMARY = re.compile(r"gunicorn\.conf\.py: (\w+) mode .*?: workers=(\d+) x threads=(\d+)")


def _conf_module() -> dict[str, object]:
    return runpy.run_path(str(GUNICORN_CONF))


def _independent_cpus() -> int:
    """Cores usable by this process, computed without the config file's helpers."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        try:
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fh:
                quota_v1 = int(fh.read())
            with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fh:
                period_v1 = int(fh.read())
            if quota_v1 > 0:
                cpus = min(cpus, -(-quota_v1 // period_v1))
        except (OSError, ValueError):
            pass
    return max(1, cpus)


def _expected_layout(mode: _mode.Mode, cpus: int) -> tuple[int, int, int]:
    """(workers, threads, loops per worker) that use every core in ``mode``."""
    if mode is _mode.Mode.THREADS:
        return 1, cpus, cpus
    return cpus, 1, 1


# -- what the file computes -------------------------------------------------------------------


@pytest.mark.parametrize("forced", ["threads", "processes", None])
def test_layout_uses_every_core(forced: str | None) -> None:
    env = {"POUNCE_WORKER_MODE": forced} if forced else {}
    values = conf_values(env)
    cpus = _independent_cpus()
    assert values["CPUS"] == cpus
    if forced:
        mode = _mode.Mode(forced)
    else:
        # auto: what the interpreter running the tests is.
        mode = _mode.Mode.PROCESSES if _mode.gil_enabled() else _mode.Mode.THREADS
    assert values["MODE"] == mode.value
    workers, threads, loops = _expected_layout(mode, cpus)
    assert (values["workers"], values["threads"], values["LOOPS_PER_WORKER"]) == (workers, threads, loops)
    assert workers * loops == cpus, "every core gets exactly one event loop"
    assert values["worker_class"] == "pounce_worker.ThreadWorker"
    assert values["worker_connections"] == 1000 * loops


def test_defaults() -> None:
    values = conf_values({})
    assert values["bind"] == ["127.0.0.1:8000"]
    assert values["wsgi_app"] is None
    assert values["keepalive"] > 30, "longer than conf/nginx/pounce.conf's upstream keepalive_timeout"
    assert values["graceful_timeout"] == 30
    assert values["timeout"] == 30
    assert values["errorlog"] == "-"
    assert values["accesslog"] is None
    # No shared default control socket path (two servers would fight over it).
    assert values["control_socket_disable"] is True
    assert "control_socket" not in values


def test_env_overrides(tmp_path) -> None:
    values = conf_values({
        "POUNCE_WORKER_MODE": "threads", "WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "5",
        "GUNICORN_BIND": "127.0.0.1:9001, unix:/tmp/x.sock", "GUNICORN_KEEPALIVE": "7",
        "GUNICORN_GRACEFUL_TIMEOUT": "12", "GUNICORN_TIMEOUT": "45", "GUNICORN_WORKER_CONNECTIONS": "50",
        "GUNICORN_MAX_REQUESTS": "1000", "GUNICORN_MAX_REQUESTS_JITTER": "50", "GUNICORN_LOGLEVEL": "debug",
        "GUNICORN_ACCESSLOG": "-", "APP_MODULE": "myapp:app", "GUNICORN_CONTROL_SOCKET": str(tmp_path / "c.ctl"),
    })
    assert (values["workers"], values["threads"], values["LOOPS_PER_WORKER"]) == (3, 5, 5)
    assert values["bind"] == ["127.0.0.1:9001", "unix:/tmp/x.sock"]
    assert (values["keepalive"], values["graceful_timeout"], values["timeout"]) == (7, 12, 45)
    assert values["worker_connections"] == 50
    assert (values["max_requests"], values["max_requests_jitter"]) == (1000, 50)
    assert (values["loglevel"], values["accesslog"], values["wsgi_app"]) == ("debug", "-", "myapp:app")
    assert values["control_socket"] == str(tmp_path / "c.ctl")
    # GUNICORN_CPUS resizes both layouts.
    assert conf_values({"POUNCE_WORKER_MODE": "processes", "GUNICORN_CPUS": "6"})["workers"] == 6
    threads = conf_values({"POUNCE_WORKER_MODE": "threads", "GUNICORN_CPUS": "6"})
    assert (threads["workers"], threads["threads"]) == (1, 6)
    # The PaaS convention: PORT binds all interfaces, as Gunicorn's own default does.
    assert conf_values({"PORT": "5000"})["bind"] == ["0.0.0.0:5000"]
    assert conf_values({"PORT": "5000", "GUNICORN_BIND": "127.0.0.1:1"})["bind"] == ["127.0.0.1:1"]
    # systemd's RuntimeDirectory= gives the control socket a private home.
    assert conf_values({"RUNTIME_DIRECTORY": str(tmp_path)})["control_socket"] == str(tmp_path / "gunicorn.ctl")


def test_cgroup_cpu_limit(tmp_path) -> None:
    limit = _conf_module()["cgroup_cpu_limit"]
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert limit(str(v2)) == 2  # type: ignore[operator]
    (v2 / "cpu.max").write_text("max 100000\n")
    assert limit(str(v2)) is None  # type: ignore[operator]
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert limit(str(v2)) == 1  # type: ignore[operator]
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert limit(str(v1)) == 3  # type: ignore[operator]
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert limit(str(v1)) is None  # type: ignore[operator]
    assert limit(str(tmp_path / "missing")) is None  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("POUNCE_WORKER_MODE", "thraeds", "POUNCE_WORKER_MODE='thraeds' is not one of"),
        ("GUNICORN_KEEPALIVE", "four", "GUNICORN_KEEPALIVE='four' is not an integer"),
        ("GUNICORN_THREADS", "0", "GUNICORN_THREADS='0' must be at least 1"),
    ],
)
def test_bad_environment_stops_the_boot(name: str, value: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "conf.example_app:app"],
        env=conf_environ({name: value, "GUNICORN_BIND": "127.0.0.1:0"}), cwd=str(ROOT),
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Booting worker" not in done.stderr


# -- gunicorn really runs with it -------------------------------------------------------------


@pytest.mark.parametrize("forced", ["threads", "processes"])
def test_boot_log_matches_the_file(forced: str) -> None:
    values = conf_values({"POUNCE_WORKER_MODE": forced})
    workers, loops = int(values["workers"]), int(values["LOOPS_PER_WORKER"])  # type: ignore[call-overload]
    server = ConfGunicorn(mode=forced, workers=workers)
    with server:
        log = server.log()
        assert SUMMARY.search(log).groups() == (forced, str(workers), str(values["threads"]))  # type: ignore[union-attr]
        boots = BOOT_LINE.findall(log)
        assert boots == [(forced, str(loops))] * workers, log
        assert len(re.findall(r"Booting worker with pid", log)) == workers
        assert len(server.worker_pids()) == workers
        assert f"Listening at: http://127.0.0.1:{server.port}" in log
        with httpx.Client(base_url=server.url, timeout=5) as client:
            seen_pids, seen_threads = set(), set()
            for i in range(40):
                r = client.post(f"/hello?i={i}", content=b"x" * i, headers={"connection": "close"})
                assert r.status_code == 200
                data = r.json()
                assert (data["path"], data["query"], data["body_bytes"]) == ("/hello", f"i={i}", i)
                assert data["lifespan_thread"] == data["thread"], "lifespan state is per loop"
                seen_pids.add(data["pid"])
                seen_threads.add(data["thread"])
            assert seen_pids <= set(server.worker_pids())
            assert seen_threads <= {f"pounce-loop-{n}" for n in range(loops)}
            assert client.get("/healthz").text == "ok\n"
            assert client.get("/readyz").status_code == 200
    assert server.proc is not None and server.proc.returncode == 0, server.output()
    assert "Shutting down: Master" in server.log()


def test_web_concurrency_and_threads_from_env() -> None:
    """WEB_CONCURRENCY / GUNICORN_THREADS reach the running server (2 processes x 3 loops)."""
    server = ConfGunicorn(
        mode="threads", workers=2, env={"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "3"},
    )
    with server:
        assert BOOT_LINE.findall(server.log()) == [("threads", "3")] * 2
        assert len(server.worker_pids()) == 2
        assert httpx.get(server.url + "/", timeout=5).status_code == 200


def test_app_module_from_env_and_control_socket(tmp_path) -> None:
    """APP_MODULE names the app when the command line does not; RUNTIME_DIRECTORY homes gunicornc's socket."""
    server = ConfGunicorn(
        None, mode="processes", workers=1,
        env={"APP_MODULE": "conf.example_app:app", "WEB_CONCURRENCY": "1", "RUNTIME_DIRECTORY": str(tmp_path)},
    )
    with server:
        assert httpx.get(server.url + "/healthz", timeout=5).text == "ok\n"
        control = tmp_path / "gunicorn.ctl"
        deadline = time.monotonic() + 10
        while not control.is_socket() and time.monotonic() < deadline:
            time.sleep(0.05)  # the arbiter opens it after the workers boot
        assert control.is_socket(), server.output()
