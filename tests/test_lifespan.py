"""The ASGI lifespan protocol, run once per event loop, end to end in both forced modes."""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict

import httpx
import pytest

from tests.harness import Gunicorn, serve

WORKER_BOOT_ERROR = 3


def _boot_failure(app: str, *args: str, mode: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    server = Gunicorn(app, *args, mode=mode, threads=2, env=env)
    returncode = server.boot_failure(20)
    return returncode, server.output()


def test_startup_completes_on_every_loop_before_it_accepts(mode):
    """Requests sent while startup (1s) runs wait in the backlog, then see the finished state."""
    server = Gunicorn("tests.apps:slow_startup", "--worker-connections", "2", mode=mode, threads=2,
                      env={"POUNCE_TEST_STARTUP_DELAY": "1.0"})
    server.start(wait=False)  # the listening socket exists already: connections queue at once
    try:
        sent_at = time.time()
        results: list[httpx.Response | BaseException] = []

        def one() -> None:
            try:
                results.append(httpx.get(server.url + "/", timeout=20, headers={"Connection": "close"}))
            except BaseException as exc:
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(25)
    finally:
        server.stop()
    assert len(results) == 4
    for r in results:
        assert isinstance(r, httpx.Response) and r.status_code == 200, r
        data = r.json()
        assert data["ready_at"] is not None, "served by a loop whose lifespan startup had not finished"
        assert data["ready_at"] > sent_at, "the request was sent before startup ended, so it must have waited"
        assert data["now"] >= data["ready_at"]


def test_startup_failure_stops_the_master_with_a_boot_error(mode):
    returncode, output = _boot_failure("tests.apps:startup_fails", mode=mode)
    assert returncode == WORKER_BOOT_ERROR
    assert "ASGI lifespan startup failed: database unreachable" in output
    assert "Worker failed to boot" in output


def test_app_without_lifespan_support_is_served(mode):
    with serve("tests.apps:no_lifespan", mode=mode) as server:
        response = httpx.get(server.url + "/")
        log = server.log()
    assert (response.status_code, response.text) == (200, "no lifespan here")
    assert "ASGI 'lifespan' protocol appears unsupported (ValueError: unsupported scope type lifespan)" in log


def test_lifespan_on_requires_support(mode):
    returncode, output = _boot_failure("tests.apps:no_lifespan", "--asgi-lifespan", "on", mode=mode)
    assert returncode == WORKER_BOOT_ERROR
    assert "does not support the ASGI lifespan protocol" in output


def test_lifespan_off_never_runs_it(mode):
    with serve("tests.apps:startup_fails", "--asgi-lifespan", "off", mode=mode) as server:
        response = httpx.get(server.url + "/")
    assert (response.status_code, response.text) == (200, "should not serve")


def test_asgi2_app_is_served(mode):
    with serve("tests.apps:asgi2", mode=mode) as server:
        response = httpx.get(server.url + "/two")
        log = server.log()
    assert (response.status_code, response.text) == (200, "asgi2 /two")
    assert "appears unsupported" not in log


def test_asgi2_app_gets_lifespan_startup_state_and_shutdown(mode, tmp_path):
    record = tmp_path / "shutdown.txt"
    server = Gunicorn("tests.apps:asgi2_state", mode=mode, threads=2, env={"POUNCE_TEST_SHUTDOWN_FILE": str(record)})
    server.start()
    try:
        data = httpx.get(server.url + "/two").json()
        [pid] = server.worker_pids()
    finally:
        server.stop()
    assert data["path"] == "/two"
    assert data["state_loop_id"] == data["loop_id"]
    loops = 2 if mode == "threads" else 1
    assert len([line for line in record.read_text().splitlines() if line.startswith(f"shutdown {pid} ")]) == loops


def test_shutdown_runs_on_term_once_per_loop(mode, tmp_path):
    record = tmp_path / "shutdown.txt"
    server = Gunicorn("tests.apps:echo", mode=mode, threads=2, workers=2,
                      env={"POUNCE_TEST_SHUTDOWN_FILE": str(record)})
    server.start()
    try:
        pids = server.worker_pids()
        assert len(pids) == 2
        assert not record.exists(), "shutdown ran before TERM"
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    finally:
        server.stop()
    lines = record.read_text().splitlines()
    loops = ["pounce-loop-0", "pounce-loop-1"] if mode == "threads" else ["pounce-loop-0"]
    expected = sorted(f"shutdown {pid} {loop}" for pid in pids for loop in loops)
    assert sorted(lines) == expected


def test_state_is_shallow_copied_into_each_request(mode):
    with serve("tests.apps:state_probe", mode=mode, threads=2) as server:
        answers = [httpx.get(server.url + "/", headers={"Connection": "close"}).json() for _ in range(8)]
        # Keep-alive requests on one connection get fresh copies too.
        with httpx.Client() as client:
            answers += [client.get(server.url + "/").json() for _ in range(4)]
    per_loop: dict[int, list[int]] = defaultdict(list)
    for a in answers:
        assert a["state_loop_id"] == a["loop_id"]
        assert a["counter_seen"] == 0, "a request's rebinding of a state key leaked into the loop's state"
        assert a["had_new_key"] is False, "a key added by a request leaked into the loop's state"
        per_loop[a["loop_id"]].append(a["shared_len"])
    # The copy is shallow: the list object created at startup is shared by the loop's requests.
    for lengths in per_loop.values():
        assert lengths == list(range(1, len(lengths) + 1))
    if mode == "processes":
        assert len(per_loop) == 1


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_lifespan_state_reaches_requests(mode, lifespan):
    with serve("tests.apps:echo", "--asgi-lifespan", lifespan, mode=mode) as server:
        data = httpx.get(server.url + "/").json()
    assert data["state_loop_id"] == data["loop_id"]
    assert data["state_thread"] == data["thread"]
