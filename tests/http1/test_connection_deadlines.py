"""Every deadline of the HTTP/1.1 connection, to the exact second, on a clock the test moves.

tests/test_deadlines.py shows against real servers that each deadline fires; here
each one is pinned: not a moment before its setting, at it, what is written then
(408 or only our FIN) and in which order. Settings are the defaults unless a test
says otherwise: POUNCE_HEADER_TIMEOUT 15 s, POUNCE_BODY_TIMEOUT 30 s,
POUNCE_BODY_MIN_RATE 500 B/s, keepalive 2 s, POUNCE_SEND_TIMEOUT 60 s, the
lingering close 2 s. (Times are chosen exact in binary, so boundaries are exact.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.http1.apps import (
    BODY_408,
    GET,
    HEAD_408,
    Echo,
    body,
    get,
    hello,
    ok,
    post,
    read_all,
    refusal,
    start,
)

# -- the request head -------------------------------------------------------------------------------


def test_connection_that_sends_nothing_is_closed_at_the_header_timeout_without_a_408(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    rig.advance(14.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.kinds() == ["write_eof"]  # nothing was asked: nothing to answer
    assert rig.log.text("warning") == ""


def test_partial_head_gets_408_at_the_header_timeout(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: exa")
    rig.advance(14.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.output() == refusal(b"408 Request Timeout", HEAD_408)
    assert conn.kinds() == ["write", "write_eof"]
    assert rig.server.rejected == 1


def test_header_timeout_counts_from_the_connection_not_from_each_read(make_rig, fast):
    """A head trickled in a byte at a time does not earn more time with each byte (slowloris)."""
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    for index, byte in enumerate(b"GET / HTTP/1.1\r\nHost: e"):
        if index == 14:
            break
        rig.advance(1.0)
        conn.send(bytes([byte]))
    assert conn.kinds() == []
    rig.advance(1.0)  # 15 s since the connection was made
    assert conn.output() == refusal(b"408 Request Timeout", HEAD_408)


def test_header_timeout_of_the_next_request_counts_from_its_first_byte(make_rig, fast):
    rig = make_rig(hello, fast_path=fast, keepalive=10)
    conn = rig.connect()
    conn.send(GET)
    conn.take()
    rig.advance(8.0)  # idle, within keepalive
    conn.send(b"GET / HTTP/1.1\r\n")  # the idle deadline ends; the head's starts now
    rig.advance(14.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.output() == refusal(b"408 Request Timeout", HEAD_408)


def test_head_completed_in_time_is_served_and_leaves_no_deadline_behind(make_rig, fast):
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()  # a slow app: no deadline while it works
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    rig.advance(14.5)
    conn.send(GET)
    rig.advance(3600.0)
    assert conn.kinds() == []
    rig.call(gate.set)
    assert conn.output() == ok(b"hello")


def test_header_timeout_zero_disables_it(make_rig, fast):
    rig = make_rig(hello, fast_path=fast, env={"POUNCE_HEADER_TIMEOUT": "0"})
    conn = rig.connect()
    conn.send(b"GET / HTTP/1.1\r\n")
    rig.advance(3600.0)
    assert conn.kinds() == []


# -- idle keep-alive, and the lingering close ----------------------------------------------------------


def test_idle_connection_is_closed_at_keepalive_with_a_fin_and_no_bytes(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.take()
    rig.advance(1.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.kinds() == ["write_eof"]


def test_keepalive_counts_from_the_response_not_from_the_request(make_rig, fast):
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    rig.advance(100.0)
    rig.call(gate.set)
    conn.take()
    rig.advance(1.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.kinds() == ["write_eof"]


def test_request_whose_first_byte_beats_the_idle_deadline_is_served(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.take()
    rig.advance(1.5)
    conn.send(GET[:5])
    rig.advance(1.0)  # past keepalive: the connection is no longer idle
    assert conn.kinds() == []
    conn.send(GET[5:])
    assert conn.output() == ok(b"hello")


def test_linger_after_our_fin_ends_with_a_close_after_two_seconds(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(get(extra=b"Connection: close\r\n"))
    assert conn.kinds() == ["write", "write_eof"]
    rig.advance(1.5)
    conn.send(GET)  # what the client still sends is read and dropped
    assert conn.kinds() == ["write", "write_eof"]
    rig.advance(0.5)
    assert conn.kinds() == ["write", "write_eof", "close"]
    assert conn.lost


def test_linger_ends_at_once_on_the_clients_fin(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    rig.advance(2.0)  # idle: our FIN
    assert conn.kinds() == ["write", "write_eof"]
    conn.send_eof()
    assert conn.kinds() == ["write", "write_eof", "close"]
    assert conn.lost
    rig.advance(2.0)
    assert conn.kinds() == ["write", "write_eof", "close"]


def test_linger_resumes_reading_that_was_paused(make_rig, fast):
    """A refusal while reading is paused: the client's rest must be read (and dropped), or it gets a reset."""

    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        raise RuntimeError("before reading a large body")

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"x" * 70_000, length=200_000))  # over HIGH_WATER unread: reading pauses
    assert conn.kinds() == ["pause_reading"]
    rig.call(gate.set)  # a 500, our FIN, and reading again, to drain what the client still sends
    assert conn.kinds() == ["pause_reading", "write", "write_eof", "resume_reading"]
    assert conn.output().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    conn.send(b"x" * 130_000)  # the rest of the body: read and dropped
    assert conn.kinds() == ["pause_reading", "write", "write_eof", "resume_reading"]
    conn.send_eof()
    assert conn.kinds()[-1] == "close"


# -- the request body the app waits for -------------------------------------------------------------------


def test_body_pause_gets_408_at_the_body_timeout_and_the_app_sees_a_disconnect(make_rig, fast):
    seen: list[Any] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"0123456789", length=100))
    rig.advance(29.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.output() == refusal(b"408 Request Timeout", BODY_408)
    assert conn.kinds() == ["write", "write_eof"]
    assert seen == ["http.request", "http.disconnect"]


def test_each_body_read_restarts_the_pause_rule(make_rig, fast):
    echo = Echo()
    rig = make_rig(echo, fast_path=fast, env={"POUNCE_BODY_MIN_RATE": "0"})
    conn = rig.connect()
    conn.send(post(b"a", length=4))
    for byte in (b"b", b"c"):
        rig.advance(29.5)
        conn.send(byte)
    rig.advance(29.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.output().startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_body_behind_the_min_rate_gets_408_before_any_pause_is_too_long(make_rig, fast):
    """POUNCE_BODY_MIN_RATE: the deadline is the start + 30 s + 1/500 s per byte received."""
    echo = Echo()
    rig = make_rig(echo, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"x" * 1000, length=100_000))  # 2 s of credit: the pause rule (30 s) is sooner
    rig.advance(20.0)
    conn.send(b"x" * 500)  # 1 s more: the rate rule says 33 s, the pause rule 50 s
    rig.advance(12.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.output().startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_body_at_the_min_rate_is_never_cut(make_rig, fast):
    """The false-positive guard: a slow but steady body (600 B/s against 500) completes."""
    echo = Echo()
    rig = make_rig(echo, fast_path=fast)
    conn = rig.connect()
    total = 600 * 120
    conn.send(post(b"", length=total))
    for _ in range(120):
        rig.advance(1.0)
        conn.send(b"z" * 600)
    assert conn.output() == ok(b"z" * total)


def test_body_clock_stops_while_we_stop_reading(make_rig, fast):
    """Over HIGH_WATER unread, reading pauses: the client cannot send, so its deadline must not run."""
    gate = asyncio.Event()
    received: list[int] = []

    async def app(scope, receive, send):
        await gate.wait()
        received.append(len(await read_all(receive)))
        await send(start(200, [(b"content-length", b"0")]))
        await send(body())

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"x" * 70_000, length=100_000))
    assert conn.kinds() == ["pause_reading"]
    rig.advance(3600.0)  # the app takes an hour to read: not the client's fault
    assert conn.kinds() == ["pause_reading"]
    rig.call(gate.set)  # the app reads, reading resumes, the body clock starts again
    assert conn.kinds() == ["pause_reading", "resume_reading"]
    rig.advance(29.5)
    assert conn.kinds() == ["pause_reading", "resume_reading"]
    rig.advance(0.5)
    assert conn.output().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert received == []


def test_body_deadline_after_the_response_started_closes_without_a_408(make_rig, fast):
    """A 408 can only be the whole response: once one started, the body deadline just closes."""
    seen: list[str] = []

    async def app(scope, receive, send):
        await send(start(200))
        await send(body(b"partial", more=True))
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"abc", length=10))
    conn.take()
    rig.advance(30.0)
    assert conn.kinds() == ["write_eof"]
    assert seen == ["http.request", "http.disconnect"]
    assert "Request body not received in time" in rig.log.text("info")


def test_chunked_body_stalled_mid_chunk_gets_408_at_the_body_timeout(make_rig, fast):
    """A chunked body has no length to wait for: its pause is bounded all the same (h11 reads it)."""
    echo = Echo()
    rig = make_rig(echo, fast_path=fast)
    conn = rig.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: example.org\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    rig.advance(29.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.output() == refusal(b"408 Request Timeout", BODY_408)
    assert [m["type"] for m in echo.messages] == ["http.request", "http.disconnect"]


def test_body_timeout_zero_disables_both_rules(make_rig, fast):
    echo = Echo()
    rig = make_rig(echo, fast_path=fast, env={"POUNCE_BODY_TIMEOUT": "0"})
    conn = rig.connect()
    conn.send(post(b"a", length=2))
    rig.advance(3600.0)
    assert conn.kinds() == []
    conn.send(b"b")
    assert conn.output() == ok(b"ab")


def test_100_continue_body_clock_starts_with_the_100(make_rig, fast):
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        await read_all(receive)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"", length=5, extra=b"Expect: 100-continue\r\n"))
    rig.advance(3600.0)  # the client waits for our 100: no body deadline yet
    assert conn.kinds() == []
    rig.call(gate.set)
    assert conn.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    rig.advance(29.5)
    assert conn.kinds() == ["write"]
    rig.advance(0.5)
    assert conn.writes()[1:] == [refusal(b"408 Request Timeout", BODY_408)]


# -- a body left unread after the response ----------------------------------------------------------------


def test_unread_body_after_the_response_is_waited_for_keepalive_then_closed(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(401, [(b"content-length", b"0")]))
        await send(body())

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"x" * 10, length=1_000_000))
    conn.take()
    rig.advance(1.5)
    conn.send(b"x" * 1000)  # still arriving, but keepalive counts from the response
    rig.advance(0.5)
    assert conn.kinds() == ["write_eof"]
    assert "the rest of the request body did not arrive within keepalive=2s" in rig.log.text("info")


def test_unread_body_that_ends_in_time_leaves_the_connection_idle_and_serving(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"2")]))
        await send(body(b"ok"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"x" * 10, length=20))
    rig.advance(1.5)
    conn.send(b"x" * 10)  # the body ends: the connection is idle from here
    rig.advance(1.5)
    assert conn.kinds() == ["write"]
    conn.send(GET)
    assert conn.kinds() == ["write", "write"]
    assert conn.writes()[1] == conn.writes()[0]


# -- the client that stops reading our response -----------------------------------------------------------


def test_send_timeout_aborts_a_client_that_reads_nothing_and_the_app_is_stopped(make_rig, fast):
    errors: list[str] = []

    async def app(scope, receive, send):
        try:
            await send(start(200))
            await send(body(b"a", more=True))
        except OSError as exc:
            errors.append(type(exc).__name__)
            raise

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.stop_reading()
    conn.send(GET)
    rig.advance(59.5)
    assert conn.kinds() == [] and errors == []
    rig.advance(0.5)  # 60 s with our buffer full
    assert "abort" in conn.kinds()
    assert errors == ["ClientDisconnected"]
    assert conn.lost
    assert "POUNCE_SEND_TIMEOUT=60s" in rig.log.text("info")


def test_send_timeout_counts_each_wait_not_the_whole_response(make_rig, fast):
    progress: list[int] = []

    async def app(scope, receive, send):
        await send(start(200))
        for index in range(3):
            await send(body(b"x", more=True))
            progress.append(index)
        await send(body())

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.stop_reading()
    conn.send(GET)
    for expected in ([0], [0, 1], [0, 1, 2]):
        rig.advance(59.5)
        conn.read_buffered()  # the client reads a little just in time, then stops again
        assert progress == expected
    rig.advance(59.5)
    conn.start_reading()
    assert "abort" not in conn.kinds()
    assert conn.output().endswith(b"1\r\nx\r\n" * 3 + b"0\r\n\r\n")


def test_send_timeout_counts_from_the_clients_last_progress_within_one_write(make_rig, fast):
    """One 1 MB body message to a client reading it slowly: the wait is long, but the client takes
    some of the buffer every 50 s, so POUNCE_SEND_TIMEOUT (60 s) never fires; once it stops, it does."""

    async def app(scope, receive, send):
        await send(start(200))
        await send(body(b"x" * 1_000_000))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.stop_reading()
    conn.transport.buffered = 1_000_000
    conn.send(GET)
    for _ in range(4):
        for _ in range(10):
            rig.advance(5)
        conn.read_some(100_000)  # (seen at the next quarter-timeout check, 15 s apart)
    for _ in range(11):
        rig.advance(5)
    assert "abort" not in conn.kinds()  # 55 s since the last progress: not yet
    for _ in range(4):
        rig.advance(5)
    assert "abort" in conn.kinds()  # 75 s: the stall is declared within 1.25 timeouts of it
    assert "POUNCE_SEND_TIMEOUT=60s" in rig.log.text("info")


def test_send_timeout_zero_waits_for_the_client_forever(make_rig, fast):
    sent: list[bool] = []

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"1")]))
        await send(body(b"x"))
        sent.append(True)

    rig = make_rig(app, fast_path=fast, env={"POUNCE_SEND_TIMEOUT": "0"})
    conn = rig.connect()
    conn.stop_reading()
    conn.send(GET)
    rig.advance(36_000.0)
    assert sent == [] and "abort" not in conn.kinds()
    conn.start_reading()
    assert sent == [True]
    assert conn.output() == ok(b"x")


# -- found in review (session 6): states that had no deadline ------------------------------------


def test_an_expect_body_sent_without_waiting_for_the_100_has_the_body_deadline(make_rig):
    """Expect: 100-continue, then body bytes at once (curl sends after 1 s anyway), then a stall:
    the body's clock starts when the app waits for it (there is no 100 to start it)."""
    rig = make_rig(Echo(), fast_path=False)  # (the fast path hands Expect requests to h11)
    conn = rig.connect()
    conn.send(post(b"abc", length=100, extra=b"Expect: 100-continue\r\n"))
    rig.advance(29.9)
    assert conn.open
    rig.advance(0.1)
    # (A 100 may come first: where the app starts at once, 3.12+, it asks before h11 saw the bytes.)
    assert b"HTTP/1.1 408 " in conn.output()


def test_a_103_before_the_body_still_gets_the_client_its_100(make_rig):
    """The app sends 103 Early Hints, then reads the body: h11 forgets the client waits for a 100
    once any 1xx is out, but the client still gets one (RFC 9110 §10.1.1), and the body deadline."""

    async def app(scope, receive, send):
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await receive()
        await send(start(200))
        await send(body(b"read"))

    rig = make_rig(app, fast_path=False)
    conn = rig.connect()
    conn.send(post(b"", length=100, extra=b"Expect: 100-continue\r\n"))
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 103 ") and b"HTTP/1.1 100 " in out
    rig.advance(30)
    assert b"HTTP/1.1 408 " in conn.output()


BIG = b"x" * 1_000_000


def test_a_client_that_never_reads_its_last_response_is_let_go(make_rig, fast):
    """The app wrote its whole response and returned; the client reads none of it: the close that
    follows (idle, or Connection: close) waits for our buffer only POUNCE_SEND_TIMEOUT."""

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"%d" % len(BIG))]))
        await send(body(BIG))

    for request in (GET, get(extra=b"Connection: close\r\n")):
        rig = make_rig(app, fast_path=fast, keepalive=2)
        conn = rig.connect()
        conn.transport.full = True  # the client stops reading: our write fills the buffer
        conn.send(request)
        seconds = 0
        while not conn.lost and seconds < 70:
            rig.advance(1)
            seconds += 1
        # keepalive (2 s, keep-alive only), the lingering close (2 s), then 60 s of our buffer untouched
        assert conn.lost and seconds in (62, 64) and "abort" in conn.kinds(), seconds
        assert "POUNCE_SEND_TIMEOUT=60s" in rig.log.text("info")


def test_an_app_failing_while_the_client_does_not_read_leaves_no_task_exception(make_rig, fast):
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        raise ValueError("boom")

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.stop_reading()
    tasks = list(rig.server.tasks)
    rig.call(gate.set)
    rig.advance(61)
    assert "abort" in conn.kinds()
    assert tasks and all(task.done() and task.exception() is None for task in tasks)
