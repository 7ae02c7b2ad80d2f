"""Gunicorn's server hooks are called, with the arguments they document, under ThreadWorker.

One config file defines every hook; each appends a JSON line (hook name, the pid
it ran in, and what it was handed) to the file named by ``POUNCE_TEST_HOOK_LOG``.
The request hooks are also run under Gunicorn's own sync worker for the same
request bytes, and what they saw is compared.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from tests.harness import (
    Gunicorn,
    build_request,
    config_file,
    exchange,
    poll_until,
    reference,
    running,
    subject,
)

PROBE = "tests.apps:settings_probe"
WSGI = "tests.apps:settings_wsgi"

HOOKS_CONF = '''
import json, os

def _record(hook, **data):
    data.update(hook=hook, pid=os.getpid())
    with open(os.environ["POUNCE_TEST_HOOK_LOG"], "a") as fh:
        fh.write(json.dumps(data) + "\\n")

def on_starting(server):
    _record("on_starting")

def when_ready(server):
    _record("when_ready")

def pre_fork(server, worker):
    _record("pre_fork")

def post_fork(server, worker):
    _record("post_fork", worker_pid=worker.pid)

def post_worker_init(worker):
    _record("post_worker_init", worker_pid=worker.pid, worker_class=type(worker).__name__,
            has_app=getattr(worker, "wsgi", None) is not None)

def worker_int(worker):
    _record("worker_int", worker_pid=worker.pid)

def worker_abort(worker):
    _record("worker_abort", worker_pid=worker.pid)

def pre_request(worker, req):
    _record("pre_request", worker_pid=worker.pid, method=req.method, path=req.path, uri=req.uri,
            query=req.query, version=list(req.version), scheme=req.scheme,
            headers=[list(h) for h in req.headers], nr=worker.nr)

def post_request(worker, req, environ, resp):
    keys = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "SERVER_PROTOCOL",
            "REMOTE_ADDR", "REMOTE_PORT", "HTTP_X_TRACE", "wsgi.url_scheme")
    _record("post_request", worker_pid=worker.pid, method=req.method, path=req.path,
            status=str(resp.status), sent=resp.sent,
            resp_headers=[[str(n).lower(), str(v)] for n, v in resp.headers],
            environ={k: environ.get(k) for k in keys})

def child_exit(server, worker):
    _record("child_exit", worker_pid=worker.pid)

def worker_exit(server, worker):
    _record("worker_exit", worker_pid=worker.pid)

def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new=new_value, old=old_value)

def on_exit(server):
    _record("on_exit")
'''


def _hooked(server: Gunicorn) -> Gunicorn:
    server.extra_env["POUNCE_TEST_HOOK_LOG"] = str(server.tmp / "hooks.jsonl")
    server.args += ["-c", str(config_file(server, HOOKS_CONF))]
    return server


def _records(server: Gunicorn, hook: str | None = None) -> list[dict]:
    path = server.tmp / "hooks.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if hook is None or r["hook"] == hook]


def _wait_records(server: Gunicorn, hook: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
    poll_until(lambda: len(_records(server, hook)) >= count, timeout,
               what=f"{count} {hook} record(s)\n{server.output()}")
    return _records(server, hook)


def _read_response(sock: socket.socket) -> int:
    """Read one Content-Length-framed response off a keep-alive connection; its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, "connection closed before a response"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1])


TARGET = "/a%20b/fixed?x=1&y=two"
REQUEST = build_request(TARGET, [("X-Trace", "t-1"), ("User-Agent", "hooks/1")])


def test_request_hooks_match_gunicorn(mode):
    """pre_request gets the request, post_request the request, environ and response,
    with the same values the sync worker hands them for the same bytes."""
    ours = _hooked(subject(PROBE, mode=mode))
    theirs = _hooked(reference(WSGI))
    seen = {}
    with running(ours, theirs):
        for name, server in (("ours", ours), ("theirs", theirs)):
            status, _, body, port = exchange(server.port, REQUEST)
            assert (status, body) == (200, b"0123456789")
            pre = _wait_records(server, "pre_request")
            post = _wait_records(server, "post_request")
            seen[name] = (pre, post, port, server.worker_pids())

    pre, post, port, pids = seen["ours"]
    assert len(pre) == len(post) == 1
    pre, post = pre[0], post[0]
    assert pre["pid"] == post["pid"] == pre["worker_pid"] == pids[0]
    assert (pre["method"], pre["uri"], pre["query"], pre["version"], pre["scheme"]) == (
        "GET", TARGET, "x=1&y=two", [1, 1], "http")
    assert ["X-TRACE", "t-1"] in pre["headers"] and ["USER-AGENT", "hooks/1"] in pre["headers"]
    assert post["status"].split()[0] == "200" and post["sent"] == 10
    assert ["x-resp", "probe-value"] in post["resp_headers"]
    assert post["environ"] == {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/a b/fixed", "QUERY_STRING": "x=1&y=two", "RAW_URI": TARGET,
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": str(port),
        "HTTP_X_TRACE": "t-1", "wsgi.url_scheme": "http",
    }

    their_pre, their_post, _their_port, _ = seen["theirs"]
    their_pre, their_post = their_pre[0], their_post[0]
    for key in ("method", "uri", "query", "version", "scheme", "headers"):
        assert pre[key] == their_pre[key], key
    assert post["status"].split()[0] == their_post["status"].split()[0]
    assert post["sent"] == their_post["sent"]
    # The app's headers; a Connection header is the server's business (hop-by-hop), not compared.
    assert sorted(h for h in post["resp_headers"] if h[0] != "connection") == sorted(their_post["resp_headers"])
    assert post["environ"] == {**their_post["environ"], "REMOTE_PORT": str(port)}


def test_request_hooks_path_is_raw_like_gunicorn():
    ours = _hooked(subject(PROBE))
    theirs = _hooked(reference(WSGI))
    with running(ours, theirs):
        for server in (ours, theirs):
            assert exchange(server.port, REQUEST)[0] == 200
        ours_pre = _wait_records(ours, "pre_request")[0]
        theirs_pre = _wait_records(theirs, "pre_request")[0]
    assert theirs_pre["path"] == "/a%20b/fixed"
    assert ours_pre["path"] == theirs_pre["path"]


def test_request_hooks_see_every_request_on_a_keepalive_connection(mode):
    """Three pipelined-in-sequence requests on one connection: three pre/post pairs, in order,
    each post_request with its own status, and worker.nr counting the requests served."""
    server = _hooked(subject(PROBE, mode=mode))
    with running(server), socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for path in ("/one/fixed", "/two/info", "/three/crash"):
            sock.sendall(build_request(path, close=False))
            assert _read_response(sock) in (200, 500)
        posts = _wait_records(server, "post_request", 3)
        pres = _records(server, "pre_request")
    assert [p["path"] for p in pres] == ["/one/fixed", "/two/info", "/three/crash"]
    assert [p["nr"] for p in pres] == [0, 1, 2]
    assert [(p["path"], p["status"].split()[0]) for p in posts] == [
        ("/one/fixed", "200"), ("/two/info", "200"), ("/three/crash", "500")]


def test_master_and_worker_lifecycle_hooks():
    """on_starting, when_ready, pre_fork, post_fork, post_worker_init, then on a clean stop
    worker_exit (in the worker), child_exit (in the master) and on_exit (in the master)."""
    server = _hooked(subject(PROBE, workers=2))
    with running(server):
        _wait_records(server, "post_worker_init", 2)
        pids = server.worker_pids()
        master = server.proc.pid
    records = _records(server)
    by_hook: dict[str, list[dict]] = {}
    for r in records:
        by_hook.setdefault(r["hook"], []).append(r)
    assert [r["pid"] for r in by_hook["on_starting"]] == [master]
    assert [r["pid"] for r in by_hook["when_ready"]] == [master]
    assert [r["pid"] for r in by_hook["pre_fork"]] == [master, master]
    assert sorted(r["pid"] for r in by_hook["post_fork"]) == pids
    inits = by_hook["post_worker_init"]
    assert sorted(r["pid"] for r in inits) == pids
    assert all(r["worker_class"] == "ThreadWorker" and r["has_app"] for r in inits) or \
        all(r["worker_class"] != "ThreadWorker" for r in inits)
    assert sorted(r["worker_pid"] for r in by_hook["worker_exit"]) == pids
    assert sorted(r["pid"] for r in by_hook["worker_exit"]) == pids  # runs in the worker itself
    assert sorted(r["worker_pid"] for r in by_hook["child_exit"]) == pids
    assert {r["pid"] for r in by_hook["child_exit"]} == {master}
    assert [r["pid"] for r in by_hook["on_exit"]] == [master]
    assert records[-1]["hook"] == "on_exit"
    assert [r["new"] for r in by_hook["nworkers_changed"]][:1] == [2]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_worker_int_on_int_and_quit(sig, mode):
    """INT/QUIT sent to a worker: worker_int runs in it, it exits, the master replaces it."""
    server = _hooked(subject(PROBE, mode=mode))
    with running(server):
        _wait_records(server, "post_worker_init")
        (pid,) = server.worker_pids()
        os.kill(pid, sig)
        ints = _wait_records(server, "worker_int")
        _wait_records(server, "child_exit")
        _wait_records(server, "post_worker_init", 2)
        assert exchange(server.port, build_request("/fixed"))[0] == 200
        assert server.worker_pids() != [pid]
    assert [(r["pid"], r["worker_pid"]) for r in ints] == [(pid, pid)]
    assert pid in [r["worker_pid"] for r in _records(server, "worker_exit")]
    assert pid in [r["worker_pid"] for r in _records(server, "child_exit")]


def test_worker_abort_on_abrt():
    server = _hooked(subject(PROBE))
    with running(server):
        _wait_records(server, "post_worker_init")
        (pid,) = server.worker_pids()
        os.kill(pid, signal.SIGABRT)
        aborts = _wait_records(server, "worker_abort")
        _wait_records(server, "post_worker_init", 2)
    assert [(r["pid"], r["worker_pid"]) for r in aborts] == [(pid, pid)]
    assert not _records(server, "worker_int")
    assert pid in [r["worker_pid"] for r in _records(server, "worker_exit")]


def test_worker_abort_on_timeout(mode):
    """A loop blocked by a synchronous call stops the heartbeat; after ``timeout`` the master
    sends SIGABRT (WORKER TIMEOUT), worker_abort runs in the stuck worker, a new one serves."""
    server = _hooked(subject(PROBE, "--timeout", "1", mode=mode))
    with running(server):
        _wait_records(server, "post_worker_init")
        (pid,) = server.worker_pids()
        started = time.monotonic()
        status = exchange(server.port, build_request("/block"), timeout=20)[0]
        aborts = _wait_records(server, "worker_abort", timeout=20)
        elapsed = time.monotonic() - started
        server.wait_for_log(rf"WORKER TIMEOUT \(pid:{pid}\)")
        _wait_records(server, "post_worker_init", 2)
        assert exchange(server.port, build_request("/fixed"))[0] == 200
    assert status == 0  # the blocked request dies with its worker
    assert [(r["pid"], r["worker_pid"]) for r in aborts] == [(pid, pid)]
    assert 1.0 <= elapsed < 10.0
