"""ASGI apps the end-to-end tests serve; each one small and with one purpose."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import threading
import time


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body, True
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, False


async def _respond(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(scope, receive, send, on_startup=None, on_shutdown=None):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_startup:
                await on_startup(scope)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown:
                await on_shutdown(scope)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _startup(scope):
    scope["state"]["loop_id"] = id(asyncio.get_running_loop())
    scope["state"]["thread"] = threading.current_thread().name


async def _shutdown(scope):
    path = os.environ.get("POUNCE_TEST_SHUTDOWN_FILE")
    if path:
        with open(path, "a") as fh:
            fh.write(f"shutdown {os.getpid()} {threading.current_thread().name}\n")


async def echo(scope, receive, send):
    """Answers with JSON describing the request and where it ran.

    Paths: ``/sleep/<s>`` sleeps first; ``/stream/<n>`` streams n chunks;
    ``/status/<code>`` answers that status.
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send, _startup, _shutdown)
    path = scope["path"]
    if path.startswith("/sleep/"):
        await asyncio.sleep(float(path.rsplit("/", 1)[1]))
    if path.startswith("/stream/"):
        count = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(count):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": code, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body, _ = await _read_body(receive)
    state = scope.get("state", {})
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope["root_path"],
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "asgi": scope["asgi"],
        "body_len": len(body),
        "body": body[:64].decode("latin-1"),
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "loop_id": id(asyncio.get_running_loop()),
        "state_loop_id": state.get("loop_id"),
        "state_thread": state.get("thread"),
    }
    data = json.dumps(payload).encode()
    await _respond(send, 200, data, [(b"content-length", str(len(data)).encode())])


async def blocking(scope, receive, send):
    """``/block`` blocks its loop with a synchronous sleep (WORKER TIMEOUT material)."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["path"] == "/block":
        time.sleep(60)
    await _respond(send, 200, b"ok")


async def startup_fails(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await _respond(send, 200, b"should not serve")


async def no_lifespan(scope, receive, send):
    """An app that does not speak lifespan at all (raises on unknown scope types)."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']}")
    await _respond(send, 200, b"no lifespan here")


async def crash(scope, receive, send):
    """``/before`` raises before responding, ``/after`` mid-response, ``/silent`` returns nothing."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    path = scope["path"]
    if path == "/before":
        raise RuntimeError("boom before start")
    if path == "/after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")
    if path == "/silent":
        return
    await _respond(send, 200, b"fine")


class Asgi2App:
    """An ASGI 2 double-callable app."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "lifespan":
            return await _lifespan(self.scope, receive, send)
        await _respond(send, 200, b"asgi2 " + self.scope["path"].encode())


asgi2 = Asgi2App


async def disconnect_watch(scope, receive, send):
    """Streams until the client leaves, then records that it saw http.disconnect."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    marker = os.environ["POUNCE_TEST_DISCONNECT_FILE"]
    if scope["path"] == "/upload":
        body, disconnected = await _read_body(receive)
        with open(marker, "a") as fh:
            fh.write(f"upload disconnected={disconnected} got={len(body)}\n")
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
    while (message := await receive())["type"] != "http.disconnect":
        pass
    with open(marker, "a") as fh:
        fh.write(f"stream {message['type']}\n")


# -- apps added for the end-to-end suite (test_http, test_lifecycle, test_lifespan) --------------

_inflight_lock = threading.Lock()
_inflight = {"now": 0, "max": 0, "per_thread": {}, "max_per_thread": {}, "served": 0}


async def concurrency(scope, receive, send):
    """Counts requests in flight in this process (and per loop thread).

    ``/sleep/<s>`` holds a request for s seconds; ``/stats`` reports the peaks as JSON
    (and is itself not counted).
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send, _startup)
    thread = threading.current_thread().name
    if scope["path"] == "/stats":
        with _inflight_lock:
            data = json.dumps({
                "pid": os.getpid(),
                "max": _inflight["max"],
                "max_per_thread": dict(_inflight["max_per_thread"]),
                "served": _inflight["served"],
            }).encode()
        return await _respond(send, 200, data)
    with _inflight_lock:
        _inflight["now"] += 1
        _inflight["max"] = max(_inflight["max"], _inflight["now"])
        mine = _inflight["per_thread"].get(thread, 0) + 1
        _inflight["per_thread"][thread] = mine
        _inflight["max_per_thread"][thread] = max(_inflight["max_per_thread"].get(thread, 0), mine)
    try:
        if scope["path"].startswith("/sleep/"):
            await asyncio.sleep(float(scope["path"].rsplit("/", 1)[1]))
        await _read_body(receive)
    finally:
        with _inflight_lock:
            _inflight["now"] -= 1
            _inflight["per_thread"][thread] -= 1
            _inflight["served"] += 1
    data = json.dumps({"pid": os.getpid(), "thread": thread}).encode()
    await _respond(send, 200, data)


#: A module-level asyncio object, as apps written for one loop per process keep (``/module-event``).
_MODULE_EVENT = asyncio.Event()


async def features(scope, receive, send):
    """HTTP feature probes.

    ``/fixed``: the same 11-byte body and headers for every method (HEAD checks);
    ``/noread``: answers without reading the request body (Expect: 100-continue);
    ``/slowread``: reads the body slowly and reports the largest chunk one receive() returned;
    ``/crash-where``: raises an exception naming the loop thread it ran on;
    ``/server-header``: sets its own Server and Date headers;
    ``/module-event``: waits 10 ms on a module-level ``asyncio.Event`` (bound to the first
    loop that waits on it: from another loop, asyncio raises; the thread-mode hint's probe).
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    path = scope["path"]
    if path == "/fixed":
        return await _respond(send, 200, b"hello world", [(b"content-length", b"11"), (b"x-custom", b"yes")])
    if path == "/noread":
        return await _respond(send, 200, b"not reading", [(b"content-length", b"11")])
    if path == "/slowread":
        total = largest = count = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = len(message.get("body", b""))
            total += chunk
            largest = max(largest, chunk)
            count += 1
            if count <= 4:
                await asyncio.sleep(0.25)  # a slow consumer while the client pushes
            if not message.get("more_body", False):
                break
        data = json.dumps({"total": total, "largest": largest, "receives": count}).encode()
        return await _respond(send, 200, data)
    if path == "/crash-where":
        raise RuntimeError(f"boom on {threading.current_thread().name}")
    if path == "/module-event":
        try:
            await asyncio.wait_for(_MODULE_EVENT.wait(), 0.01)
        except asyncio.TimeoutError:
            pass
        return await _respond(send, 200, b"waited")
    if path == "/server-header":
        own = [(b"server", b"custom/1.0"), (b"date", b"Thu, 01 Jan 2015 00:00:00 GMT")]
        return await _respond(send, 200, b"own", own)
    return await _respond(send, 404, b"no such probe")


async def _state_startup(scope):
    scope["state"]["counter"] = 0
    scope["state"]["shared"] = []
    scope["state"]["loop_id"] = id(asyncio.get_running_loop())


async def state_probe(scope, receive, send):
    """Each request rebinds ``state['counter']`` (must not leak: the state is copied per
    request) and appends to ``state['shared']`` (does leak: the copy is shallow)."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send, _state_startup)
    state = scope["state"]
    seen = state["counter"]
    had_new_key = "new_key" in state
    state["counter"] = seen + 1
    state["new_key"] = "set by a request"
    state["shared"].append(1)
    data = json.dumps({
        "counter_seen": seen,
        "had_new_key": had_new_key,
        "shared_len": len(state["shared"]),
        "loop_id": id(asyncio.get_running_loop()),
        "state_loop_id": state["loop_id"],
        "thread": threading.current_thread().name,
    }).encode()
    await _respond(send, 200, data)


async def _slow_startup(scope):
    await asyncio.sleep(float(os.environ.get("POUNCE_TEST_STARTUP_DELAY", "1.0")))
    scope["state"]["ready_at"] = time.time()


async def slow_startup(scope, receive, send):
    """Lifespan startup takes POUNCE_TEST_STARTUP_DELAY seconds; requests report when it ended."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send, _slow_startup)
    data = json.dumps({"ready_at": scope["state"].get("ready_at"), "now": time.time()}).encode()
    await _respond(send, 200, data)


# -- apps for the hostile-input, slow-client and overload suites (tests/test_hostile_*.py) ------


def wsgi_echo(environ, start_response):
    """WSGI twin of ``hostile``'s default route, for the Gunicorn sync-worker baseline."""
    body = environ["wsgi.input"].read()
    data = json.dumps({"path": environ["PATH_INFO"], "body_len": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


_hostile_lock = threading.Lock()
_hostile = {"now": {}, "peak": {}, "served": 0}


async def hostile(scope, receive, send):
    """Probes for the hostile-client suites.

    ``/hold/<s>``: counts itself in flight on its loop thread for s seconds;
    ``/peaks``: the per-thread in-flight peaks and the number of held requests served;
    ``/stream/<mib>``: streams that many MiB in 64 KiB chunks;
    ``/count``: reads the body without keeping it, reports its size and the largest receive();
    anything else: reads the body, answers JSON with the path, thread and body size.
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    path = scope["path"]
    thread = threading.current_thread().name
    if path.startswith("/hold/"):
        with _hostile_lock:
            now = _hostile["now"][thread] = _hostile["now"].get(thread, 0) + 1
            _hostile["peak"][thread] = max(_hostile["peak"].get(thread, 0), now)
        try:
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        finally:
            with _hostile_lock:
                _hostile["now"][thread] -= 1
                _hostile["served"] += 1
        data = json.dumps({"pid": os.getpid(), "thread": thread}).encode()
        return await _respond(send, 200, data, [(b"content-length", str(len(data)).encode())])
    if path == "/peaks":
        with _hostile_lock:
            data = json.dumps({"pid": os.getpid(), "peak": _hostile["peak"], "served": _hostile["served"]}).encode()
        return await _respond(send, 200, data, [(b"content-length", str(len(data)).encode())])
    if path.startswith("/stream/"):
        mib = int(path.rsplit("/", 1)[1])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(mib * 1048576).encode())]})
        for i in range(mib * 16):
            # A new object each time, as real data would be: a server that queues
            # references to one shared chunk would hide its buffering.
            chunk = bytes([97 + i % 26]) * 65536
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    total = largest = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        total += len(body)
        largest = max(largest, len(body))
        if not message.get("more_body", False):
            break
    data = json.dumps({
        "path": path, "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "thread": thread, "body_len": total, "largest": largest,
    }).encode()
    await _respond(send, 200, data, [(b"content-length", str(len(data)).encode())])


# -- apps added for the settings suite (tests/test_settings_*.py) ----------------------------------

#: The body ``/fixed`` answers with, identical in ``settings_probe`` and ``settings_wsgi`` so the
#: access-log atoms of both can be compared field by field.
FIXED_BODY = b"0123456789"
FIXED_HEADERS = [("Content-Type", "text/plain"), ("X-Resp", "probe-value"), ("Content-Length", "10")]


def _proc_status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].split()
    return None


def _query(scope_or_qs):
    from urllib.parse import parse_qs

    return {k: v[-1] for k, v in parse_qs(scope_or_qs).items()}


async def settings_probe(scope, receive, send):
    """What Gunicorn's settings change, seen from an ASGI app.

    ``.../fixed``: FIXED_BODY with FIXED_HEADERS (``?sleep=S`` sleeps first);
    ``.../info``: JSON of the scope's client/server/scheme/root_path/path, the process's
    pid/uid/gid/umask and ``os.environ[?env=NAME]``;
    ``.../print?marker=M``: print()s M to stdout and to stderr;
    ``.../block``: blocks the loop (time.sleep) for 60 s; ``.../crash``: raises;
    ``.../sleep?s=S``: answers after an async sleep of S seconds.
    Routes match the end of the path, so a root_path or SCRIPT_NAME prefix does not matter.
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    path = scope["path"]
    query = _query(scope["query_string"].decode("latin-1"))
    await _read_body(receive)
    if path.endswith("/fixed"):
        if "sleep" in query:
            await asyncio.sleep(float(query["sleep"]))
        headers = [(k.lower().encode(), v.encode()) for k, v in FIXED_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": FIXED_BODY})
        return
    if path.endswith("/print"):
        marker = query.get("marker", "PRINTED")
        print(f"{marker} on stdout")
        import sys

        print(f"{marker} on stderr", file=sys.stderr)
        return await _respond(send, 200, b"printed")
    if path.endswith("/block"):
        time.sleep(60)
        return await _respond(send, 200, b"unblocked")
    if path.endswith("/crash"):
        raise RuntimeError("settings_probe crash on purpose")
    if path.endswith("/sleep"):
        await asyncio.sleep(float(query.get("s", "1")))
        return await _respond(send, 200, b"slept")
    name = query.get("env")
    payload = {
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "scheme": scope["scheme"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "umask": (_proc_status("Umask") or [None])[0],
        "env": os.environ.get(name) if name else None,
    }
    data = json.dumps(payload).encode()
    await _respond(send, 200, data, [(b"content-length", str(len(data)).encode())])


def settings_wsgi(environ, start_response):
    """The WSGI twin of ``settings_probe`` for Gunicorn's own sync worker: ``/fixed`` answers
    the same bytes; ``/info`` reports the environ keys Gunicorn computes from its settings."""
    path = environ["PATH_INFO"]
    if path.endswith("/fixed"):
        query = _query(environ.get("QUERY_STRING", ""))
        if "sleep" in query:
            time.sleep(float(query["sleep"]))
        start_response("200 OK", list(FIXED_HEADERS))
        return [FIXED_BODY]
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "SCRIPT_NAME", "PATH_INFO", "RAW_URI",
            "PROXY_ADDR", "PROXY_PORT", "SERVER_NAME", "SERVER_PORT")
    data = json.dumps({k: environ.get(k) for k in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class Asgi2StateApp:
    """An ASGI 2 app whose lifespan startup fills the state its requests report."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] == "lifespan":
            return await _lifespan(self.scope, receive, send, _startup, _shutdown)
        state = self.scope["state"]
        data = json.dumps({
            "loop_id": id(asyncio.get_running_loop()),
            "state_loop_id": state.get("loop_id"),
            "path": self.scope["path"],
        }).encode()
        await _respond(send, 200, data)


asgi2_state = Asgi2StateApp


async def spin(scope, receive, send):
    """``/spin/<s>`` blocks its loop with a synchronous sleep of s seconds, then answers; else answers at once."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["path"].startswith("/spin/"):
        time.sleep(float(scope["path"].rsplit("/", 1)[1]))
    data = json.dumps({"pid": os.getpid(), "path": scope["path"]}).encode()
    await _respond(send, 200, data)


async def background_raises(scope, receive, send):
    """``/bg`` answers, then raises 0.3 s later (a failing background task); ``/slow`` answers after 0.6 s."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.6)
        await _respond(send, 200, b"slow done", [(b"content-length", b"9")])
        return
    await _respond(send, 200, b"bg", [(b"content-length", b"2")])
    await asyncio.sleep(0.3)
    raise RuntimeError("background task failed after the response")


# -- apps for the restart and thread-safety suites (tests/test_hostile_restart.py, tests/loop/test_thread_safety.py) --

#: One O_APPEND file descriptor per process (a worker forked after import must open its own):
#: pid -> fd. Guarded because the loop threads of one worker open it concurrently.
_seen_lock = threading.Lock()
_seen_fds: dict = {}


def _record_seen(request_id):
    """Append ``request_id`` to this process's file in POUNCE_TEST_SEEN_DIR: one write(2) of a short
    line to an O_APPEND descriptor is atomic, so loop threads need no lock for the write itself."""
    pid = os.getpid()
    fd = _seen_fds.get(pid)
    if fd is None:
        with _seen_lock:
            fd = _seen_fds.get(pid)
            if fd is None:
                path = os.path.join(os.environ["POUNCE_TEST_SEEN_DIR"], f"seen-{pid}.txt")
                fd = _seen_fds[pid] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, request_id.encode("ascii") + b"\n")


async def restart_probe(scope, receive, send):
    """Records every request it sees, so a test can tell a lost response from a request never read.

    ``/r/<id>``: records id, answers ``<id> <pid>``; ``/slow/<s>/<id>``: records id, sleeps s seconds,
    then answers the same. The id is echoed in an ``x-id`` header too.
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    parts = scope["path"].split("/")
    request_id = parts[-1]
    _record_seen(request_id)
    await _read_body(receive)
    if parts[1] == "slow":
        await asyncio.sleep(float(parts[2]))
    body = f"{request_id} {os.getpid()}".encode()
    await _respond(send, 200, body, [(b"content-length", str(len(body)).encode()),
                                     (b"x-id", request_id.encode())])


#: The README's pattern for process-wide state shared by loop threads: a threading.Lock,
#: held for the update only, never across an await.
_isolation_lock = threading.Lock()
_isolation = {"served": 0, "per_thread": {}, "mixups": 0}
_request_id = contextvars.ContextVar("request_id")


async def isolation(scope, receive, send):
    """Per-request isolation under interleaving: ``POST /iso/<id>`` with header ``x-id: <id>`` and
    body ``<id>``. The app yields to the loop between every step and answers JSON with the ids it
    saw in the path, the header, the body and its context variable after those awaits; the
    response carries the id in a header too. ``GET /count`` reports the locked counter."""
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["path"] == "/count":
        with _isolation_lock:
            data = json.dumps({**_isolation, "per_thread": dict(_isolation["per_thread"]),
                               "switchinterval": sys.getswitchinterval(),
                               "pid": os.getpid()}).encode()
        return await _respond(send, 200, data)
    path_id = scope["path"].rsplit("/", 1)[1]
    _request_id.set(path_id)
    await asyncio.sleep(0)
    header_id = dict(scope["headers"]).get(b"x-id", b"").decode("latin-1")
    body, _ = await _read_body(receive)
    await asyncio.sleep(0)
    seen = {
        "path": scope["path"].rsplit("/", 1)[1],  # read again after the awaits
        "header": header_id,
        "body": body.decode("latin-1"),
        "context": _request_id.get(),
    }
    thread = threading.current_thread().name
    with _isolation_lock:
        _isolation["served"] += 1
        _isolation["per_thread"][thread] = _isolation["per_thread"].get(thread, 0) + 1
        if len(set(seen.values())) != 1:
            _isolation["mixups"] += 1
    data = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"x-id", path_id.encode()),
                            (b"content-length", str(len(data)).encode())]})
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": data})


async def misbehaves(scope, receive, send):
    """An app that breaks the ASGI HTTP rules, one way per path (``/ok`` answers properly):

    ``/body-before-start``, ``/start-twice``, ``/body-after-end``, ``/str-body`` (a str where
    bytes belong), ``/returns-str`` (returns a value instead of None, sending nothing),
    ``/start-after-end`` (a second response start once the first response completed).
    """
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    path = scope["path"]
    await _read_body(receive)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
    if path == "/body-before-start":
        await send({"type": "http.response.body", "body": b"too early"})
    elif path == "/start-twice":
        await send(start)
        await send(start)
    elif path == "/body-after-end":
        await send(start)
        await send({"type": "http.response.body", "body": b"complete"})
        await send({"type": "http.response.body", "body": b"one too many"})
    elif path == "/start-after-end":
        await send(start)
        await send({"type": "http.response.body", "body": b"complete"})
        await send(start)
    elif path == "/str-body":
        await send(start)
        await send({"type": "http.response.body", "body": "not bytes"})
    elif path == "/returns-str":
        return "a str instead of None"
    else:
        data = f"ok {os.getpid()}".encode()
        await _respond(send, 200, data, [(b"content-length", str(len(data)).encode())])


async def shutdown_raises(scope, receive, send):
    """Lifespan startup completes; lifespan shutdown leaks an exception instead of answering."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                raise RuntimeError("lifespan shutdown exploded on purpose")
    await _respond(send, 200, b"ok", [(b"content-length", b"2")])


# One header list reused by every response and changed in place between them (as apps that
# keep module-level header lists do): each response carries what the list holds at its start.
# The test sends one request at a time; the lock only keeps the write itself whole.
_REUSED_HEADERS = [(b"content-type", b"text/plain"), (b"x-version", b"0")]
_REUSED_LOCK = threading.Lock()


async def reused_headers(scope, receive, send):
    if scope["type"] != "http":
        return
    version = scope["query_string"] or b"0"
    with _REUSED_LOCK:
        _REUSED_HEADERS[1] = (b"x-version", version)
    await send({"type": "http.response.start", "status": 200, "headers": _REUSED_HEADERS})
    await send({"type": "http.response.body", "body": version})
