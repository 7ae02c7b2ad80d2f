"""The request-body deadline of an HTTP/2 stream, to the second, on the in-process rig.

The same two rules as HTTP/1.1 (tests/http1/test_connection_deadlines.py), per
stream: no pause over ``POUNCE_BODY_TIMEOUT`` while the app waits, and past that
first allowance an average of ``POUNCE_BODY_MIN_RATE`` bytes/s. What differs is
who holds the body: the client cannot send past the window we give it, and
that window reopens only as the app reads. So the clock runs only while the app
waits for bytes; the time the app spends on what it got is not the client's.

A real client's frames (h2's client side) go through the connection's
``asyncio.Protocol`` interface; the clock moves only when the test says so.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.http2.rig_client import SETTINGS, Client
from tests.inprocess import Rig


class Reader:
    """An app that reads its body one message at a time, working ``work`` seconds (the test's
    clock, moved by the test) on each, then answers with the byte count."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.working: asyncio.Event | None = None
        self.done: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        total = 0
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] != "http.request":
                return
            total += len(message["body"])
            if self.working is not None:  # hold the bytes until the test lets go
                self.done = asyncio.Event()
                self.working.set()
                await self.done.wait()
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % total})


def start(make_rig: Any, app: Any, **env: str) -> tuple[Rig, Client]:
    rig = make_rig(app, env=env, **SETTINGS)
    return rig, Client(rig)


def test_a_pause_gets_408_at_the_body_timeout_and_the_connection_serves_on(make_rig):
    app = Reader()
    rig, client = start(make_rig, app, POUNCE_BODY_MIN_RATE="0")
    stream = client.post(b"abc")
    rig.advance(29.9)
    assert client.status(stream) is None
    rig.advance(0.1)
    assert client.status(stream) == 408
    assert b"POUNCE_BODY_TIMEOUT=30s" in client.body(stream)
    assert app.messages[-1] == {"type": "http.disconnect"}
    assert "POUNCE_BODY_TIMEOUT=30s" in rig.log.text("warning")
    second = client.post()
    client.send(second, b"xy", end=True)
    assert client.status(second) == 200 and client.body(second) == b"2"


def test_a_body_behind_the_min_rate_gets_408_though_it_never_pauses_long(make_rig):
    """10 bytes every 15 s never pause for 30 s but average 0.67 bytes/s: at 1 byte/s past the 30 s
    allowance, the deadline after the third chunk is 30 s + 30 bytes = 60 s, when the fourth is due."""
    app = Reader()
    rig, client = start(make_rig, app, POUNCE_BODY_MIN_RATE="1")
    stream = client.post()
    for _ in range(3):
        rig.advance(15)
        client.send(stream, b"x" * 10)
    rig.advance(14.9)
    assert client.status(stream) is None
    rig.advance(0.1)
    assert client.status(stream) == 408
    assert b"POUNCE_BODY_MIN_RATE=1 bytes/s" in client.body(stream)


def test_a_body_at_the_min_rate_is_served(make_rig):
    """The same trickle, 10 bytes every 5 s, keeps ahead of 1 byte/s: it is served whole."""
    app = Reader()
    rig, client = start(make_rig, app, POUNCE_BODY_MIN_RATE="1")
    stream = client.post()
    for _ in range(20):
        rig.advance(5)
        client.send(stream, b"x" * 10)
    client.send(stream, b"", end=True)
    assert client.status(stream) == 200 and client.body(stream) == b"200"


def test_the_time_the_app_holds_the_body_is_not_the_clients(make_rig):
    """The app works 100 s on each of three chunks (the client's window is what it is meanwhile):
    no 408, whatever the rate rule says of 100 bytes in 300 s."""
    app = Reader()
    app.working = asyncio.Event()
    rig, client = start(make_rig, app, POUNCE_BODY_MIN_RATE="1")
    stream = client.post()
    for _ in range(3):
        rig.advance(1)
        client.send(stream, b"x" * 33)
        assert app.working.is_set()
        app.working.clear()
        rig.advance(100)  # the app works; no deadline runs
        assert client.status(stream) is None
        rig.call(app.done.set)
    client.send(stream, b"x", end=True)
    rig.call(app.done.set)
    assert client.status(stream) == 200 and client.body(stream) == b"100"


def test_empty_data_frames_do_not_move_the_deadline(make_rig):
    """An empty DATA frame is no body: a client sending one every 20 s still gets its 408 at 30 s."""
    app = Reader()
    rig, client = start(make_rig, app, POUNCE_BODY_MIN_RATE="0")
    stream = client.post()
    rig.advance(20)
    client.send(stream, b"")
    rig.advance(9.9)
    assert client.status(stream) is None
    rig.advance(0.1)
    assert client.status(stream) == 408
