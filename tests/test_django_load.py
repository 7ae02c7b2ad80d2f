"""A real Django project under load, clients that leave, and a stop: the error log stays clean.

The project is tests/django_site/ (startproject's middleware, SQLite, async and sync views,
a request body, a streamed response, a slow view, and a background task of its own). The
load is tests/load_client.py's mix over 32 keep-alive connections (clients leaving
mid-request, mid-body, mid-stream, by reset, and idle ones closed after 1 s), then wrk,
then a graceful stop (SIGTERM) while responses that outlive ``graceful_timeout`` are still
in flight and more clients leave.

What was logged before (issue 11): Django 5.2's ASGIHandler runs the view and a disconnect
listener in tasks it awaits with ``asyncio.wait``; a stop cancelled the request task as
soon as the connections were gone (or right after aborting them), so those tasks were
orphaned: "Task exception was never retrieved" (RequestAborted, ClientDisconnected) and
"Task was destroyed but it is pending!". And the app's own tasks were never cancelled
before the loop closed (asyncio.run() cancels them), so their cleanup never ran.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import time

import pytest

from tests.harness import HOST, Gunicorn, poll_until, require_tool
from tests.load_client import run_load

APP = "tests.django_site.asgi:application"
#: What must not be in the error log.
FORBIDDEN = (
    "Task exception was never retrieved",
    "Task was destroyed but it is pending",
    "Exception in ASGI application",
    "Traceback",
)
GRACEFUL = 3
LOAD_REQUESTS = 800
#: Responses in flight at the stop that outlive graceful_timeout: streams the client does
#: not read, and slow views.
LONG_REQUESTS = ("/stream/?n=1000000&size=8192", "/sleep/?s=60")


def start_long_requests(port: int, count: int) -> list[socket.socket]:
    socks = []
    for i in range(count):
        sock = socket.create_connection((HOST, port), timeout=10)
        path = LONG_REQUESTS[i % len(LONG_REQUESTS)]
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(sock)
    return socks


@pytest.mark.slow
def test_django_under_load_disconnects_and_stop_logs_nothing(mode: str, started: list[Gunicorn], tmp_path) -> None:
    wrk = require_tool("wrk", "wrk")
    server = Gunicorn(
        APP, "--graceful-timeout", str(GRACEFUL),
        mode=mode, workers=2 if mode == "processes" else 1, threads=2,
        env={"DJANGO_SITE_DIR": str(tmp_path)},
    )
    started.append(server)
    server.start()

    result = asyncio.run(run_load(server.url, requests=LOAD_REQUESTS, connections=32))
    subprocess.run([wrk, "-c32", "-t2", "-d2s", server.url + "/plain/"], capture_output=True, timeout=60, check=True)

    # The stop: long responses in flight, a few more requests whose clients leave during the drain.
    stdout = server.tmp / "stdout.log"
    seen = stdout.read_text(errors="replace").count("request_started")
    long_running = start_long_requests(server.port, 8)
    leaving = start_long_requests(server.port, 4)
    poll_until(lambda: stdout.read_text(errors="replace").count("request_started") >= seen + 12, timeout=30,
               what="the 12 long requests reaching Django")
    server.signal(signal.SIGTERM)
    time.sleep(0.3)
    for sock in leaving:
        sock.close()
    try:
        assert server.wait(GRACEFUL + 15) == 0, server.output()
    finally:
        for sock in long_running:
            sock.close()

    log = server.log()
    app_output = (server.tmp / "stdout.log").read_text(errors="replace")
    # Not vacuous: the load reached Django (every request it saw began with request_started),
    # and the long requests were still running when the stop came.
    assert result.completed >= LOAD_REQUESTS // 2, (result, server.output())
    assert app_output.count("request_started") >= result.completed + len(long_running), app_output[-2000:]
    # Every request Django began, it finished: request_finished closes its database connections,
    # and it is skipped when send() raises into a handler that listens for http.disconnect.
    assert app_output.count("request_finished") == app_output.count("request_started"), app_output[-2000:]
    assert re.search(r"graceful_timeout=[\d.]+s expired with \d+ connections open", log), server.output()
    found = {text: log.count(text) for text in FORBIDDEN}
    assert not any(found.values()), f"{found}\n{server.output()}"
    # The app's own background task (one per loop that served /warm/) was cancelled and
    # ran its cleanup before its loop closed.
    warmers = app_output.count("cache warmer started")
    assert warmers >= 1, app_output[-2000:]
    assert app_output.count("cache warmer stopped") == warmers, app_output[-2000:]
