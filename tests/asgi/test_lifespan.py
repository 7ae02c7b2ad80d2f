"""The ASGI lifespan protocol, run once per event loop, end to end in both forced modes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import defaultdict

import httpx
import pytest
from gunicorn.glogging import Logger

from tests.harness import Gunicorn, serve

WORKER_BOOT_ERROR = 3


def _boot_failure(app: str, *args: str, mode: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    server = Gunicorn(app, *args, mode=mode, threads=2, env=env)
    returncode = server.boot_failure(20)
    return returncode, server.output()


@pytest.mark.smoke
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


# -- bounded lifespan, and stops that arrive during startup (issue 11, item 2) ---------------------
# Apps: tests/lifespan_apps.py; each logs what it does, and the tests wait for those lines.

PENDING_WARNINGS = ("Task was destroyed but it is pending", "exception was never retrieved")


def _loops(mode: str) -> int:
    return 2 if mode == "threads" else 1


def _no_pending_task_warnings(output: str) -> None:
    for warning in PENDING_WARNINGS:
        assert warning not in output, output


def test_startup_that_never_answers_fails_the_boot_after_the_timeout(mode):
    """The loop's own bound: it logs the setting, cancels the app's startup, and the master halts."""
    returncode, output = _boot_failure(
        "tests.lifespan_apps:startup_hangs", mode=mode,
        env={"POUNCE_LIFESPAN_STARTUP_TIMEOUT": "1", "POUNCE_TEST_STARTUP": "await"},
    )
    assert returncode == WORKER_BOOT_ERROR, output
    # Reported by each loop itself (its tag), not by the main thread's fallback for blocked loops.
    reported = re.findall(r"\[worker \d+ loop \d\] ASGI lifespan startup did not complete within "
                          r"POUNCE_LIFESPAN_STARTUP_TIMEOUT=1s", output)
    assert len(reported) == _loops(mode), output
    assert output.count("lifespan app: startup cancelled") == _loops(mode), output
    assert "Worker failed to boot" in output
    _no_pending_task_warnings(output)


def test_startup_that_blocks_its_loop_fails_the_boot_after_the_timeout(mode):
    """A synchronous startup cannot see its own timeout: the main thread stops heartbeating for it."""
    returncode, output = _boot_failure(
        "tests.lifespan_apps:startup_hangs", mode=mode,
        env={"POUNCE_LIFESPAN_STARTUP_TIMEOUT": "1", "POUNCE_TEST_STARTUP": "block",
             "POUNCE_TEST_BLOCK_SECONDS": "120"},
    )
    assert returncode == WORKER_BOOT_ERROR, output
    # Each loop's bound counts from its own startup, and the first loop overdue ends the boot: a
    # loop whose thread started later (a loaded machine) may not be overdue yet, so not named.
    reported = output.count("ASGI lifespan startup did not complete within POUNCE_LIFESPAN_STARTUP_TIMEOUT=1s")
    assert 1 <= reported <= _loops(mode), output
    assert f"Worker failed to boot: {reported} of {_loops(mode)} loops did not finish lifespan startup" in output
    assert "a synchronous call in the app's startup blocks it" in output
    assert "lifespan app: startup unblocked" not in output


def test_unbounded_startup_that_blocks_its_loop_meets_the_arbiter_timeout(mode, started):
    """POUNCE_LIFESPAN_STARTUP_TIMEOUT=0: no bound, so the heartbeat follows the loops' ticks."""
    server = Gunicorn("tests.lifespan_apps:startup_hangs", "--timeout", "3", mode=mode, threads=2,
                      env={"POUNCE_LIFESPAN_STARTUP_TIMEOUT": "0", "POUNCE_TEST_STARTUP": "block",
                           "POUNCE_TEST_BLOCK_SECONDS": "120"})
    started.append(server)
    server.start(wait=False)
    server.wait_for_log(r"WORKER TIMEOUT", timeout=60)


@pytest.mark.parametrize("how", ["hang", "stubborn"])
def test_shutdown_that_never_answers_is_bounded_by_graceful_timeout(mode, how, started):
    """TERM to the worker: shutdown gets graceful_timeout, one line says it expired, the task is ended."""
    server = Gunicorn("tests.lifespan_apps:shutdown_hangs", "--graceful-timeout", "3", mode=mode, threads=2,
                      env={"POUNCE_TEST_SHUTDOWN": how})
    started.append(server)
    server.start()
    assert httpx.get(server.url + "/").text == "served"
    [pid] = server.worker_pids()
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    server.wait_for_log(rf"Worker exiting \(pid: {pid}\)", timeout=30)
    elapsed = time.monotonic() - sent
    log = server.log()
    loops = _loops(mode)
    assert log.count("lifespan app: shutdown began") == loops, server.output()
    assert log.count("ASGI lifespan shutdown did not complete within graceful_timeout=3s; cancelling it") \
        == loops, server.output()
    if how == "hang":
        assert log.count("lifespan app: shutdown cancelled") == loops, server.output()
    else:
        assert log.count("ASGI lifespan task ignored cancellation") == loops, server.output()
    assert elapsed < 3 + 10, "a generous bound: graceful_timeout plus the cancellation's wait"
    _no_pending_task_warnings(server.output())


@pytest.mark.serial  # the worker must exit within the last 0.2 s of a 4 s graceful_timeout
def test_term_with_a_request_in_flight_ends_the_stop_before_the_sigkill(started):
    """TERM to the master with a request outliving graceful_timeout and a shutdown that ignores
    cancellation: drain, request task, lifespan shutdown and leftovers each end within their
    slice, so the worker exits by itself before the arbiter's SIGKILL (it once gave lifespan
    shutdown "at least a second" after the drain, and leftovers another one)."""
    server = Gunicorn("tests.lifespan_apps:shutdown_hangs", "--graceful-timeout", "4", mode="processes",
                      threads=1, env={"POUNCE_TEST_SHUTDOWN": "stubborn"})
    started.append(server)
    server.start()
    [pid] = server.worker_pids()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_for_log("lifespan app: request waits")
        server.signal(signal.SIGTERM)
        assert server.wait(20) == 0, server.output()
    log = server.log()
    assert "lifespan app: shutdown began" in log, server.output()
    assert f"Worker exiting (pid: {pid})" in log and "SIGKILL" not in log, server.output()


def test_shutdown_that_raises_is_logged_once_per_loop(mode, started):
    server = Gunicorn("tests.lifespan_apps:shutdown_hangs", mode=mode, threads=2,
                      env={"POUNCE_TEST_SHUTDOWN": "raise"})
    started.append(server)
    server.start()
    [pid] = server.worker_pids()
    os.kill(pid, signal.SIGTERM)
    server.wait_for_log(rf"Worker exiting \(pid: {pid}\)", timeout=30)
    log = server.log()
    assert log.count("ASGI lifespan shutdown raised") == _loops(mode), server.output()
    assert "RuntimeError: shutdown exploded" in log
    _no_pending_task_warnings(server.output())


def test_fast_stop_skips_shutdown_and_cancels_the_lifespan_task(mode, started):
    """QUIT: no lifespan.shutdown (as -k asgi), and the app's lifespan task is cancelled, not left pending."""
    server = Gunicorn("tests.lifespan_apps:shutdown_hangs", mode=mode, threads=2)
    started.append(server)
    server.start()
    [pid] = server.worker_pids()
    os.kill(pid, signal.SIGQUIT)
    server.wait_for_log(rf"Worker exiting \(pid: {pid}\)", timeout=30)
    log = server.log()
    assert "lifespan app: shutdown began" not in log
    assert log.count("lifespan app: waiting for shutdown cancelled") == _loops(mode), server.output()
    _no_pending_task_warnings(server.output())


def test_term_during_slow_startup_stops_the_worker_without_serving(mode):
    """TERM while every loop is in lifespan startup: startup is cancelled and the master exits at once,
    long before graceful_timeout (30 s here) would have it SIGKILL the worker."""
    server = Gunicorn("tests.lifespan_apps:startup_hangs", "--graceful-timeout", "30", mode=mode, threads=2,
                      env={"POUNCE_LIFESPAN_STARTUP_TIMEOUT": "120", "POUNCE_TEST_STARTUP": "await"})
    server.start(wait=False)
    try:
        server.wait_for_log(r"lifespan app: startup began", timeout=30, count=_loops(mode))
        # A request waiting in the backlog for the startup to end: it must never be served.
        client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        server.signal(signal.SIGTERM)
        assert server.wait(20) == 0, server.output()
    finally:
        server.stop()  # also closes the listening socket: the queued connection is reset
    try:
        answer = client.recv(65536)
    except ConnectionResetError:
        answer = b""
    finally:
        client.close()
    output = server.output()
    assert answer == b"", answer
    assert output.count("Stop requested during ASGI lifespan startup; cancelling it") == _loops(mode), output
    assert output.count("lifespan app: startup cancelled") == _loops(mode), output
    assert "lifespan app: served a request" not in output
    assert "SIGKILL" not in output
    assert "Worker failed to boot" not in output
    _no_pending_task_warnings(output)


# -- the early-stop race, in process: a LoopServer driven from the test thread ----------------------


class _Log:
    """Gunicorn's logger, as far as LoopLog uses it: keeps the formatted lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _add(self, msg: object, *args: object, **_kw: object) -> None:
        self.lines.append(str(msg) % args if args else str(msg))

    debug = info = warning = error = exception = _add
    access = Logger.access  # not overridden, and no access log: LoopLog makes no access calls
    access_log_enabled = False


def _loop_server(app, env: dict[str, str] | None = None):
    from gunicorn.config import Config

    from pounce_worker.asgi.hooks import Hooks
    from pounce_worker.budget import RequestBudget
    from pounce_worker.config import ServerConfig
    from pounce_worker.log import LoopLog
    from pounce_worker.loop.server import LoopServer

    cfg = Config()
    config = ServerConfig.from_gunicorn(cfg, env={"POUNCE_WORKER_MODE": "threads", **(env or {})})
    log = _Log()
    server = LoopServer(0, config, app, [], None, None, Hooks.from_gunicorn(cfg),
                        LoopLog(log, os.getpid(), 0), RequestBudget(sys.maxsize), "asyncio")
    return server, log


def _run_in_thread(server) -> threading.Thread:
    thread = threading.Thread(target=server.run, name="test-loop", daemon=True)
    server.thread = thread
    thread.start()
    return thread


def test_stop_requested_before_the_loop_exists_is_not_lost():
    """request_stop before the loop thread even started (the loop is None): the loop must
    still see it, skip lifespan startup and end, instead of serving until a second stop."""
    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append((await receive())["type"])
        await send({"type": "lifespan.startup.complete"})
        seen.append((await receive())["type"])
        await send({"type": "lifespan.shutdown.complete"})

    server, log = _loop_server(app)
    assert server.loop is None
    server.request_stop(True)
    thread = _run_in_thread(server)
    try:
        thread.join(30)
        assert not thread.is_alive(), f"the stop was lost; log: {log.lines}"
    finally:
        server.request_stop(False)  # unblocks a loop that lost the first stop
    assert server.started.is_set() and server.finished
    assert server.startup_error is None
    assert seen == [], "lifespan startup ran although the stop came first"
    assert not server.accepting
    assert any("Stop requested before ASGI lifespan startup" in line for line in log.lines), log.lines


def test_stop_requested_while_the_loop_is_created_is_not_lost(monkeypatch):
    """The stop lands between the loop's creation and its publication (``self.loop``): the
    window where request_stop once saw no loop and returned. Forced here, not left to timing."""
    import pounce_worker.loop.server as server_module

    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    server, log = _loop_server(app)
    create = server_module.new_event_loop

    def new_event_loop(kind: str):
        loop = create(kind)
        stopper = threading.Thread(target=server.request_stop, args=(False,))
        stopper.start()  # the main thread's QUIT, while this thread has a loop it has not published
        stopper.join()
        return loop

    monkeypatch.setattr(server_module, "new_event_loop", new_event_loop)
    thread = _run_in_thread(server)
    try:
        thread.join(30)
        assert not thread.is_alive(), f"the stop was lost; log: {log.lines}"
    finally:
        server.request_stop(False)
    assert server.fast_stop and server.finished and server.startup_error is None


def test_stop_requested_during_lifespan_startup_cancels_it():
    """A graceful stop while the app's startup awaits: startup is cancelled, the loop ends, no error."""
    began = threading.Event()
    cancelled = threading.Event()

    async def app(scope, receive, send):
        await receive()
        began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server, log = _loop_server(app)
    thread = _run_in_thread(server)
    try:
        assert began.wait(30)
        server.request_stop(True)
        thread.join(30)
        assert not thread.is_alive(), f"startup was not cancelled; log: {log.lines}"
    finally:
        server.request_stop(False)
    assert cancelled.is_set()
    assert server.startup_error is None and server.finished
    assert not any("Task was destroyed" in line for line in log.lines), log.lines


def test_startup_timeout_in_process_cancels_the_app_and_reports_the_setting():
    cancelled = threading.Event()

    async def app(scope, receive, send):
        await receive()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server, log = _loop_server(app, env={"POUNCE_LIFESPAN_STARTUP_TIMEOUT": "0.2"})
    thread = _run_in_thread(server)
    try:
        thread.join(30)
        assert not thread.is_alive()
    finally:
        server.request_stop(False)
    assert cancelled.is_set()
    assert server.startup_error is not None
    assert any("did not complete within POUNCE_LIFESPAN_STARTUP_TIMEOUT=0.2s" in line for line in log.lines)
