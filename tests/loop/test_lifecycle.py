"""The worker contract with Gunicorn's arbiter, end to end: mode choice and boot log,
loop threads, backpressure, heartbeat/timeout, signals, hooks, max_requests, reload.

Every test boots its own gunicorn master (these tests signal, restart or kill it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from pounce_worker import mode as pounce_mode
from tests.harness import (
    Gunicorn,
    RawConnection,
    http_request,
    serve,
    stamp_until,
    wait_connections,
    wait_until,
    write_config,
)

BOOT_LINE = r"pounce_worker: (\w+) mode \(([^)]*)\), (\d+) event loop\(s\) with (\w+), worker_connections=(\d+), (.*)"


def _hooks_config(directory: Path, record: Path) -> Path:
    """A gunicorn config file whose worker hooks append "<hook> <worker pid>" lines to ``record``."""
    return write_config(directory, f'''
_RECORD = {str(record)!r}


def _note(what, pid):
    with open(_RECORD, "a") as fh:
        fh.write(f"{{what}} {{pid}}\\n")


def post_worker_init(worker):
    _note("post_worker_init", worker.pid)


def worker_int(worker):
    _note("worker_int", worker.pid)


def worker_abort(worker):
    _note("worker_abort", worker.pid)


def worker_exit(server, worker):
    _note("worker_exit", worker.pid)
''')


def _hook_lines(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def _concurrent(url_paths: list[str], base: str, timeout: float = 20.0) -> list[httpx.Response | BaseException]:
    """GET every path at once, each on its own connection (closed after its response)."""
    results: list[httpx.Response | BaseException] = [RuntimeError("not run")] * len(url_paths)

    def one(i: int, path: str) -> None:
        try:
            results[i] = httpx.get(base + path, timeout=timeout, headers={"Connection": "close"})
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(url_paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return results


def _ok_json(results: list) -> list[dict]:
    for r in results:
        assert isinstance(r, httpx.Response), f"request failed: {r!r}"
        assert r.status_code == 200, r.text
    return [r.json() for r in results]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- 1. mode choice and the boot log -------------------------------------------------------------------


def test_forced_thread_mode_boot_log_names_mode_loops_and_build():
    with serve("tests.apps:echo", mode="threads", threads=3) as server:
        found = re.findall(BOOT_LINE, server.log())
    assert len(found) == 1
    chosen, why, loops, kind, connections, build = found[0]
    assert chosen == "threads"
    assert "POUNCE_WORKER_MODE=threads" in why
    assert int(loops) == 3
    # asgi_loop=auto: uvloop when installed, except where it would re-enable the GIL.
    uvloop_usable = pounce_mode.gil_enabled() and importlib.util.find_spec("uvloop") is not None
    assert kind == ("uvloop" if uvloop_usable else "asyncio")
    assert int(connections) == 1000
    assert build == pounce_mode.interpreter_build()


def test_forced_process_mode_runs_one_loop_and_master_explains_once():
    with serve("tests.apps:echo", mode="processes", threads=3, workers=2) as server:
        results = _ok_json(_concurrent(["/sleep/0.2"] * 8, server.url))
        log = server.log()
    found = re.findall(BOOT_LINE, log)
    assert [(f[0], f[2]) for f in found] == [("processes", "1")] * 2
    assert all("POUNCE_WORKER_MODE=processes" in f[1] for f in found)
    warnings = re.findall(r"pounce_worker: threads=3 ignored: (.*)", log)
    assert len(warnings) == 1, "check_config must explain the choice once, in the master"
    assert "workers=6" in warnings[0] and "POUNCE_WORKER_MODE=threads" in warnings[0]
    assert {d["thread"] for d in results} == {"pounce-loop-0"}


@pytest.mark.skipif(not pounce_mode.gil_enabled(), reason="needs an interpreter with the GIL enabled")
def test_auto_mode_on_gil_build_chooses_processes():
    with serve("tests.apps:echo", mode=None, threads=4) as server:
        log = server.log()
        assert httpx.get(server.url + "/").json()["thread"] == "pounce-loop-0"
    found = re.findall(BOOT_LINE, log)
    assert len(found) == 1
    assert found[0][0] == "processes" and found[0][2] == "1"
    assert "GIL" in found[0][1]
    assert found[0][5] == pounce_mode.interpreter_build()
    warnings = re.findall(r"pounce_worker: threads=4 ignored: .*", log)
    assert len(warnings) == 1
    assert "workers=4" in warnings[0]  # workers x threads = 1 x 4


def test_auto_mode_chooses_threads_when_gil_is_disabled(tmp_path):
    """sys._is_gil_enabled() returning False (as on 3.13t/3.14t) selects thread mode, N = threads."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys._is_gil_enabled = lambda: False\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])])}
    with serve("tests.apps:echo", "--worker-connections", "3", mode=None, threads=3, env=env) as server:
        results = _ok_json(_concurrent(["/sleep/0.3"] * 6, server.url))
        log = server.log()
    found = re.findall(BOOT_LINE, log)
    assert len(found) == 1
    chosen, why, loops, kind, _conns, build = found[0]
    assert (chosen, loops, kind) == ("threads", "3", "asyncio")
    assert "free-threaded" in why and "free-threaded" in build
    assert "ignored" not in log
    assert {d["thread"] for d in results} == {"pounce-loop-0", "pounce-loop-1", "pounce-loop-2"}


def test_bad_mode_value_fails_at_boot():
    server = Gunicorn("tests.apps:echo", mode="fibers")
    returncode = server.boot_failure(20)
    output = server.output()
    assert returncode != 0
    assert "POUNCE_WORKER_MODE='fibers'" in output
    assert "Booting worker" not in output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"POUNCE_HEADER_TIMEOUT": "soon"}, "POUNCE_HEADER_TIMEOUT='soon' is not a number"),
        (("--worker-connections", "2"), {}, "worker_connections=2 is smaller than the 3 event loops"),
    ],
    ids=["bad-env-number", "too-few-connections"],
)
def test_bad_settings_fail_at_boot_naming_the_setting(args, env, message):
    server = Gunicorn("tests.apps:echo", *args, mode="threads", threads=3, env=env)
    returncode = server.boot_failure(20)
    assert returncode != 0
    assert message in server.output()


def test_hup_to_an_invalid_setting_halts_the_master_naming_it(tmp_path):
    """The master checks settings once, at its start; a HUP rereads them, so the new worker
    refuses a bad one with the boot-error code (the master halts) instead of dying on it
    again and again."""
    conf = write_config(tmp_path, 'raw_env = ["POUNCE_HEADER_TIMEOUT=15"]\n')
    with Gunicorn("tests.apps:echo", "-c", str(conf), mode="processes", threads=1) as server:
        conf.write_text('raw_env = ["POUNCE_HEADER_TIMEOUT=abc"]\n')
        server.signal(signal.SIGHUP)
        returncode = server.wait(20)
    assert returncode == 3, server.output()
    assert "POUNCE_HEADER_TIMEOUT='abc' is not a number" in server.log()
    assert "exited with code 255" not in server.log()


# -- 2. one event loop per thread ---------------------------------------------------------------------------


def test_requests_land_on_each_loop_with_its_own_lifespan_state(mode):
    # worker_connections=2: in thread mode each of the 2 loops takes one connection at a
    # time, so concurrent requests must be spread over both loops.
    with serve("tests.apps:echo", "--worker-connections", "2", mode=mode, threads=2) as server:
        results = _ok_json(_concurrent(["/sleep/0.3"] * 6, server.url))
        pids = server.worker_pids()
    assert {d["pid"] for d in results} == set(pids)
    for d in results:
        assert d["state_loop_id"] == d["loop_id"], "lifespan state must come from the request's own loop"
        assert d["state_thread"] == d["thread"]
    threads = {d["thread"] for d in results}
    loop_ids = {d["loop_id"] for d in results}
    if mode == "threads":
        assert threads == {"pounce-loop-0", "pounce-loop-1"}
        assert len(loop_ids) == 2
    else:
        assert threads == {"pounce-loop-0"}
        assert len(loop_ids) == 1


def test_loop_error_log_lines_name_worker_pid_and_loop(mode):
    with serve("tests.apps:features", "--worker-connections", "2", mode=mode, threads=2) as server:
        pid = server.worker_pids()[0]
        if mode == "threads":
            # Each loop holds one connection: an idle one pins a loop, so the crash goes to
            # the other; then the roles swap. Both loops must log with their own index.
            with RawConnection(server.port) as pin:
                time.sleep(0.3)
                assert httpx.get(server.url + "/crash-where").status_code == 500
                with RawConnection(server.port):
                    time.sleep(0.3)
                    pin.close()
                    time.sleep(0.3)
                    assert httpx.get(server.url + "/crash-where").status_code == 500
        else:
            for _ in range(2):
                assert httpx.get(server.url + "/crash-where").status_code == 500
        server.wait_for_log(r"boom on pounce-loop-\d", count=2)
        log = server.log()
    entries = re.findall(
        r"\[worker (\d+) loop (\d+)\] Exception in ASGI application while handling GET /crash-where\n"
        r"(?:(?!\[worker ).*\n)*?RuntimeError: boom on pounce-loop-(\d+)",
        log,
    )
    assert len(entries) == 2, log
    for logged_pid, loop_index, thread_index in entries:
        assert int(logged_pid) == pid
        assert loop_index == thread_index, "the prefix names another loop than the one that failed"
    expected = {"0", "1"} if mode == "threads" else {"0"}
    assert {e[1] for e in entries} == expected


def test_an_asyncio_object_of_another_loop_is_a_500_whose_log_line_says_why():
    """A module-level asyncio.Event, fine under uvicorn's one loop per process: the first loop
    to wait on it owns it, and the app fails on the other. The 500's log line says that thread
    mode runs the app on several loops and what to do (README: free-threading guide)."""
    with serve("tests.apps:features", "--worker-connections", "2", mode="threads", threads=2) as server:
        # worker_connections=2 over 2 loops: each loop holds one connection. The kept-alive
        # one (which bound the Event to its loop) sends the next connection to the other loop.
        with RawConnection(server.port) as pin:
            pin.send(b"GET /module-event HTTP/1.1\r\nHost: t\r\n\r\n")
            assert pin.read_response().status == 200
            assert httpx.get(server.url + "/module-event").status_code == 500
        server.wait_for_log(r"event loops: in thread mode each loop thread runs the app")
        log = server.log()
    assert re.search(r"Exception in ASGI application while handling GET /module-event \(an asyncio object made "
                     r"on another of this process's 2 event loops: .* POUNCE_WORKER_MODE=processes", log), log
    assert "is bound to a different event loop" in log  # the traceback is still there


def test_every_log_line_written_by_a_loop_thread_is_prefixed():
    with serve("tests.apps:echo", mode="threads", threads=2) as server:
        httpx.get(server.url + "/prefixed-please")
        server.wait_for_log(r"/prefixed-please")
        lines = [line for line in server.log().splitlines() if "/prefixed-please" in line]
    assert lines
    assert all(re.search(r"\[worker \d+ loop \d+\] ", line) for line in lines), lines


# -- 3. worker_connections: backpressure, never refusal --------------------------------------------------------


def test_worker_connections_limit_queues_extra_connections(mode):
    with serve("tests.apps:concurrency", "--worker-connections", "2", mode=mode, threads=2) as server:
        started = time.monotonic()
        results = _concurrent(["/sleep/0.5"] * 6, server.url)
        elapsed = time.monotonic() - started
        stats = httpx.get(server.url + "/stats").json()
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results), results
    assert stats["served"] == 6
    assert stats["max"] == 2, f"at most (and, with 6 waiting, exactly) 2 requests in flight: {stats}"
    assert elapsed >= 1.4, "6 requests of 0.5s, 2 at a time, need 3 rounds"
    if mode == "threads":
        # Each loop gets its share: 1 of 2.
        assert stats["max_per_thread"] == {"pounce-loop-0": 1, "pounce-loop-1": 1}


def test_worker_connections_shared_unevenly_between_loops():
    with serve("tests.apps:concurrency", "--worker-connections", "3", mode="threads", threads=2) as server:
        results = _concurrent(["/sleep/0.4"] * 9, server.url)
        stats = httpx.get(server.url + "/stats").json()
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results), results
    assert stats["max"] == 3
    assert stats["max_per_thread"] == {"pounce-loop-0": 2, "pounce-loop-1": 1}


def test_connections_beyond_the_limit_are_not_accepted_early(mode):
    """Idle connections occupy the slots; the next one waits unserved (not refused), then is served."""
    with serve("tests.apps:echo", "--worker-connections", "2", "--keep-alive", "5", mode=mode, threads=2) as server:
        first = RawConnection(server.port)
        second = RawConnection(server.port)
        try:
            for conn in (first, second):
                conn.send(http_request("GET", "/hold"))
                assert conn.read_response().status == 200  # kept alive: the slot stays taken
            with RawConnection(server.port) as third:
                third.send(http_request("GET", "/third"))
                assert third.recv_raw(0.8) == b"", "served beyond worker_connections"
                first.close()
                response = third.read_response(timeout=5)
                assert response.status == 200
        finally:
            first.close()
            second.close()


# -- 7. heartbeat, WORKER TIMEOUT ---------------------------------------------------------------------------


def test_async_waits_longer_than_timeout_do_not_kill_the_worker(mode):
    with serve("tests.apps:echo", "--timeout", "2", mode=mode) as server:
        pids = server.worker_pids()
        response = httpx.get(server.url + "/sleep/3", timeout=10)
        assert response.status_code == 200
        assert response.json()["pid"] == pids[0]
        assert server.worker_pids() == pids
        assert "WORKER TIMEOUT" not in server.log()


def test_blocked_loop_triggers_worker_timeout_and_a_new_worker(mode):
    with serve("tests.apps:blocking", "--timeout", "2", mode=mode) as server:
        [old] = server.worker_pids()
        outcome: dict[str, object] = {}

        def block() -> None:
            try:
                outcome["response"] = httpx.get(server.url + "/block", timeout=15)
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        blocked = threading.Thread(target=block, daemon=True)
        blocked.start()
        server.wait_for_log(rf"WORKER TIMEOUT \(pid:{old}\)", timeout=10)
        server.wait_for_log(r"has not run for [\d.]+s \(a blocking call in the app\?\)", timeout=1)
        assert wait_until(lambda: server.worker_pids() not in ([], [old]), timeout=10)
        server.wait_for_log(r"pounce_worker: \w+ mode", count=2)
        [new] = server.worker_pids()
        response = httpx.get(server.url + "/", timeout=10)
        blocked.join(15)
    assert new != old
    assert (response.status_code, response.text) == (200, "ok")
    assert "error" in outcome, "the request that blocked the killed worker cannot have been answered"


# -- 7. signals and hooks ---------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_term_is_graceful(mode, tmp_path):
    record = tmp_path / "hooks.txt"
    config = _hooks_config(tmp_path, record)
    server = Gunicorn("tests.apps:echo", "-c", str(config), "--graceful-timeout", "3", mode=mode).start()
    try:
        [pid] = server.worker_pids()
        holder: dict[str, object] = {}

        def slow() -> None:
            try:
                holder["response"] = httpx.get(server.url + "/sleep/1", timeout=10)
            except BaseException as exc:
                holder["error"] = exc

        request = threading.Thread(target=slow)
        request.start()
        wait_connections(server.port)  # the request's connection is in the worker
        server.signal(signal.SIGTERM)
        returncode = server.wait(15)
        request.join(10)
    finally:
        server.stop()
    assert "error" not in holder, holder
    response = holder["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    assert response.json()["path"] == "/sleep/1"
    assert response.headers.get("connection", "").lower() == "close"
    assert returncode == 0
    assert _hook_lines(record) == [f"post_worker_init {pid}", f"worker_exit {pid}"]


def test_term_to_one_worker_lets_its_request_finish_and_the_master_replaces_it(mode):
    with serve("tests.apps:echo", "--graceful-timeout", "3", mode=mode) as server:
        [old] = server.worker_pids()
        holder: dict[str, object] = {}

        def slow() -> None:
            try:
                holder["r"] = httpx.get(server.url + "/sleep/1", timeout=10)
            except httpx.HTTPError as exc:
                holder["r"] = exc

        request = threading.Thread(target=slow)
        request.start()
        wait_connections(server.port)  # the request's connection is in the worker
        os.kill(old, signal.SIGTERM)
        request.join(10)
        assert wait_until(lambda: server.worker_pids() not in ([], [old]), timeout=10)
        server.wait_for_log(r"pounce_worker: \w+ mode", count=2)
        after = httpx.get(server.url + "/after").json()
    assert isinstance(holder["r"], httpx.Response), holder
    assert holder["r"].status_code == 200
    assert after["pid"] != old


@pytest.mark.serial  # exit within 3 s
def test_quit_is_fast(mode, tmp_path):
    record = tmp_path / "hooks.txt"
    config = _hooks_config(tmp_path, record)
    server = Gunicorn("tests.apps:echo", "-c", str(config), "--graceful-timeout", "10", mode=mode).start()
    try:
        [pid] = server.worker_pids()
        holder: dict[str, object] = {}

        def slow() -> None:
            try:
                holder["response"] = httpx.get(server.url + "/sleep/8", timeout=15)
            except BaseException as exc:
                holder["error"] = exc

        request = threading.Thread(target=slow)
        request.start()
        wait_connections(server.port)  # the request's connection is in the worker
        started = time.monotonic()
        server.signal(signal.SIGQUIT)
        returncode = server.wait(15)
        elapsed = time.monotonic() - started
        request.join(10)
    finally:
        server.stop()
    assert elapsed < 3, f"QUIT took {elapsed:.1f}s: it must not wait for requests (graceful_timeout=10)"
    assert "response" not in holder, "the in-flight request must be cut, not completed"
    assert isinstance(holder.get("error"), httpx.HTTPError)
    assert returncode == 0
    assert f"worker_int {pid}" in _hook_lines(record)


def test_usr1_reopens_the_error_log(mode):
    with serve("tests.apps:echo", mode=mode) as server:
        [pid] = server.worker_pids()
        rotated = server.errorlog.with_name("error.log.1")
        server.errorlog.rename(rotated)
        os.kill(pid, signal.SIGUSR1)
        assert wait_until(server.errorlog.exists, timeout=5), "USR1 did not reopen (recreate) the error log"
        assert httpx.get(server.url + "/after-rotation").status_code == 200
        server.wait_for_log(r"/after-rotation", timeout=5)
        assert "/after-rotation" not in rotated.read_text()
        # The worker keeps serving normally after the reopen.
        assert httpx.get(server.url + "/again").json()["pid"] == pid


def test_abrt_runs_worker_abort_hook(mode, tmp_path):
    record = tmp_path / "hooks.txt"
    config = _hooks_config(tmp_path, record)
    with serve("tests.apps:echo", "-c", str(config), mode=mode) as server:
        [old] = server.worker_pids()
        os.kill(old, signal.SIGABRT)
        assert wait_until(lambda: f"worker_abort {old}" in _hook_lines(record), timeout=5), _hook_lines(record)
        server.wait_for_log(r"Worker aborted; loop state: loop 0: ")
        assert wait_until(lambda: server.worker_pids() not in ([], [old]), timeout=10)
        server.wait_for_log(r"pounce_worker: \w+ mode", count=2)
        assert httpx.get(server.url + "/").json()["pid"] != old


def test_worker_exits_when_the_master_dies(mode):
    server = Gunicorn("tests.apps:echo", mode=mode, env={"POUNCE_SHUTDOWN_TICK": "0.2"}).start()
    [worker] = server.worker_pids()
    try:
        assert server.proc is not None
        server.proc.kill()  # SIGKILL: the master cannot tell its worker anything
        server.proc.wait(5)
        assert wait_until(lambda: not _alive(worker), timeout=10), "orphaned worker kept running"
        server.wait_for_log(r"Parent changed, shutting down", timeout=1)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)  # the worker this test started, by its pid
        server.stop()


# -- 7. max_requests -----------------------------------------------------------------------------------------------


def test_max_requests_counted_across_loops_then_graceful_restart(mode):
    args = ("--max-requests", "6", "--max-requests-jitter", "0", "--worker-connections", "2")
    with serve("tests.apps:echo", *args, mode=mode, threads=2) as server:
        [first] = server.worker_pids()
        served = []
        for _ in range(3):  # three rounds of two concurrent requests: 6 in all
            served += _ok_json(_concurrent(["/sleep/0.2"] * 2, server.url))
        assert {d["pid"] for d in served} == {first}
        if mode == "threads":
            assert {d["thread"] for d in served} == {"pounce-loop-0", "pounce-loop-1"}
        server.wait_for_log(r"Autorestarting worker after current request", timeout=5)
        assert wait_until(lambda: server.worker_pids() not in ([], [first]), timeout=10)
        for i in range(10):
            served += _ok_json([httpx.get(server.url + f"/after/{i}", headers={"Connection": "close"})])
    counts = Counter(d["pid"] for d in served)
    assert counts[first] <= 8, f"first worker served {counts[first]} requests with max_requests=6"
    assert len(counts) >= 2


def test_max_requests_jitter_keeps_each_worker_within_bounds():
    args = ("--max-requests", "3", "--max-requests-jitter", "3")
    with serve("tests.apps:echo", *args, mode="threads", threads=2) as server:
        pids = []
        for i in range(24):
            response = httpx.get(server.url + f"/r/{i}", headers={"Connection": "close"}, timeout=10)
            assert response.status_code == 200
            pids.append(response.json()["pid"])
    order = list(dict.fromkeys(pids))
    counts = Counter(pids)
    assert len(order) >= 4, f"24 requests with max_requests 3..6 must use at least 4 workers: {counts}"
    for pid in order[:-1]:  # the last worker has not finished its budget
        assert 3 <= counts[pid] <= 6 + 2, counts


# -- 7. --reload -------------------------------------------------------------------------------------------------------

RELOAD_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"{version}"}})
'''


def test_reload_serves_the_changed_module(mode, tmp_path):
    module = f"pounce_reload_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text(RELOAD_APP.format(version="v1"))
    with serve(f"{module}:app", "--reload", "--pythonpath", str(tmp_path), mode=mode) as server:
        [old] = server.worker_pids()
        assert httpx.get(server.url + "/").text == "v1"

        def get_text() -> str:
            return _get_text(server.url)

        assert stamp_until(source, RELOAD_APP.format(version="v2"), lambda: get_text() == "v2"), server.output()
        assert old not in server.worker_pids()
        server.wait_for_log(rf"Worker reloading: {re.escape(str(source))} modified")
        # A SyntaxError is shown, not fatal; fixing it serves again.
        assert stamp_until(source, "async def app(:\n", lambda: "SyntaxError" in get_text()), server.output()
        assert stamp_until(source, RELOAD_APP.format(version="v3"), lambda: get_text() == "v3"), server.output()


def _get_text(url: str) -> str:
    try:
        return httpx.get(url + "/", timeout=5).text
    except httpx.HTTPError as exc:
        return f"error: {exc}"


def _fetch_pid(port: int, path: str) -> int | None:
    """One request on a fresh raw connection; the answering worker's pid, or None if it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(http_request("GET", path, [("Connection", "close")]))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(json.loads(data.partition(b"\r\n\r\n")[2])["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_max_requests_honoured_by_a_freshly_booted_worker(mode):
    """Back-to-back requests: each worker generation serves max_requests (+ a request in the race), no more."""
    with serve("tests.apps:echo", "--max-requests", "2", mode=mode) as server:
        pids = [_fetch_pid(server.port, f"/n/{i}") for i in range(30)]
    counts = Counter(pid for pid in pids if pid is not None)
    assert len(counts) >= 5, f"30 requests, max_requests=2: {counts}"
    assert max(counts.values()) <= 4, f"a worker served far more than max_requests=2: {counts}"


def test_connection_accepted_during_graceful_stop_is_served(mode):
    """A request already sent when the worker gets TERM must be answered (by it, or by its successor).

    One loop (threads=1 in both modes) is blocked for 1s by a synchronous call; meanwhile
    a second client connects and sends its request, and the worker gets TERM. When the
    loop resumes, the stop and the pending accept are handled in the same iteration.
    """
    with serve("tests.apps:spin", mode=mode, threads=1) as server:
        [pid] = server.worker_pids()
        holder: dict[str, object] = {}

        def block() -> None:
            try:
                holder["spin"] = httpx.get(server.url + "/spin/1.0", timeout=10).status_code
            except httpx.HTTPError as exc:
                holder["spin"] = exc

        blocker = threading.Thread(target=block)
        blocker.start()
        time.sleep(0.25)
        with RawConnection(server.port, timeout=10) as late:
            late.send(http_request("GET", "/late", [("Connection", "close")]))
            time.sleep(0.25)
            os.kill(pid, signal.SIGTERM)
            try:
                response = late.read_response(timeout=10)
            except OSError as exc:
                pytest.fail(f"request sent before TERM was dropped: {exc!r}")
        blocker.join(10)
    assert holder.get("spin") == 200
    assert response.status == 200
    assert json.loads(response.body)["path"] == "/late"


def test_master_exit_code_zero_and_no_stray_workers_after_term(mode):
    server = Gunicorn("tests.apps:echo", mode=mode, workers=2).start()
    try:
        workers = server.worker_pids()
        assert len(workers) == 2
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    finally:
        server.stop()
    assert not any(_alive(pid) for pid in workers)


def test_max_requests_restart_lets_a_slow_request_finish_past_timeout():
    """While a worker drains (max_requests), finished loops must not withhold the heartbeat."""
    with serve("tests.apps:echo", "--timeout", "3", "--max-requests", "3", "--graceful-timeout", "20",
               mode="threads", threads=2) as server:
        result: dict[str, object] = {}

        def slow() -> None:
            try:
                result["status"] = httpx.get(server.url + "/sleep/6", timeout=20).status_code
            except httpx.HTTPError as exc:
                result["status"] = exc

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.3)
        for i in range(4):
            httpx.get(server.url + f"/quick/{i}", timeout=10)
        thread.join(20)
        assert result.get("status") == 200, server.output()
        assert "WORKER TIMEOUT" not in server.log()
