"""The order of what the HTTP/1.1 connection writes and reads, in process: exact bytes, call by call.

Held writes (a complete response waits for the end of the loop iteration, and
goes before any other write), the deferred head (it waits for the body unless
the app suspends), pipelining (a request behind a response is parsed only after
it; a backlog over HIGH_WATER keeps reading paused) and flow control (send()
waits while the transport is paused; a body over HIGH_WATER pauses reading until
the app takes it). Both request paths; the end-to-end tests can only infer these
from timing. See tests/inprocess.py for the rig.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.http1.apps import (
    GET,
    Echo,
    Gated,
    body,
    get,
    hello,
    ok,
    post,
    read_all,
    start,
)

#: Whether request tasks start eagerly (3.12+, LoopServer.spawn_request): then an app that
#: never waits runs inside data_received, and several responses can be held in one iteration.
EAGER = hasattr(asyncio, "eager_task_factory")
needs_eager = pytest.mark.skipif(not EAGER, reason="request tasks start eagerly on Python 3.12+ only")


# -- held writes ------------------------------------------------------------------------------------


def test_complete_response_is_held_to_the_end_of_the_iteration(make_rig, fast):
    """send() of a final body returns before anything is written; the write follows in the same settle.

    Only the fast writer holds: a response h11 frames is written as it is sent.
    """
    writes_when_sent: list[int] = []

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"5")]))
        await send(body(b"hello"))
        writes_when_sent.append(len(conn.writes()))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert writes_when_sent == ([0] if fast else [1])
    assert conn.writes() == [ok(b"hello")]


def test_streamed_chunks_are_written_at_once_not_held(make_rig, fast):
    writes_when_sent: list[int] = []

    async def app(scope, receive, send):
        await send(start(200))
        for part in (b"a", b"b"):
            await send(body(part, more=True))
            writes_when_sent.append(len(conn.writes()))
        await send(body(b""))
        writes_when_sent.append(len(conn.writes()))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    # Head and first chunk in one write, the second chunk its own; the last chunk (a
    # complete response's end) is held like a complete response.
    assert writes_when_sent == ([1, 2, 2] if fast else [1, 2, 3])
    assert conn.output().endswith(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")


def test_response_over_the_hold_limit_is_written_at_once(make_rig, fast):
    writes_when_sent: list[int] = []
    big = b"x" * (64 * 1024 + 1)

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"%d" % len(big))]))
        await send(body(big))
        writes_when_sent.append(len(conn.writes()))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert writes_when_sent == [1]
    assert conn.output() == ok(big)


def test_held_response_leaves_before_the_fin_when_the_app_then_fails(make_rig, fast):
    """An app that raises after its response closes the connection: the held response goes first.

    (Before the cycle/exchange split, on h11 with eager tasks (3.12+), the connection was
    kept open: the app failed before h11 saw the request's end, and the failure was taken
    for one of a newer request's. The split fixed it; this test was an xfail then.)
    """

    async def app(scope, receive, send):
        await hello(scope, receive, send)
        raise RuntimeError("after the response")

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.kinds() == ["write", "write_eof"]
    assert conn.output() == ok(b"hello")
    assert "Exception in ASGI application" in rig.log.text("exception")


def test_held_response_leaves_before_the_close_of_a_client_fin(make_rig, fast):
    """The FIN read in the iteration that completed the response: eof_received releases it first.

    Iteration 1 delivers the request; in iteration 2 the app's task runs (it holds its
    response and schedules the release for iteration 3), then the FIN is read: the
    transport closes in iteration 2, so the response must be written before that.
    """
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET, settle=False)
    conn.send_eof(settle=False)
    rig.settle()
    assert conn.kinds() == ["write", "close"]
    assert conn.output() == ok(b"hello")


@needs_eager
def test_pipelined_responses_of_one_read_leave_in_one_write(make_rig, fast):
    """Apps that finish in their eager first step: all responses of one read are held together.

    (h11 frames its responses as they are sent, not held: one write each.)
    """
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET * 3)
    assert conn.writes() == ([ok(b"hello") * 3] if fast else [ok(b"hello")] * 3)


@needs_eager
def test_held_responses_over_the_hold_limit_are_released_at_once(make_rig):
    writes_when_sent: list[int] = []
    part = b"x" * (30 * 1024)

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"%d" % len(part))]))
        await send(body(part))
        writes_when_sent.append(len(conn.writes()))

    rig = make_rig(app)
    conn = rig.connect()
    conn.send(GET * 3)
    # 30 KiB, 60 KiB held; the third passes HOLD_LIMIT (64 KiB): all three leave in its send.
    assert writes_when_sent == [0, 0, 1]
    assert conn.writes() == [ok(part) * 3]


# -- the deferred head --------------------------------------------------------------------------------


def test_head_goes_out_on_the_next_iteration_when_the_app_waits_before_its_body(make_rig, fast):
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"5")]))
        await gate.wait()
        await send(body(b"hello"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    head = ok(b"hello")[: -len(b"hello")]
    assert conn.writes() == [head]
    rig.call(gate.set)
    assert conn.writes() == [head, b"hello"]


def test_head_is_written_before_the_app_resumes_from_a_single_yield(make_rig, fast):
    """One asyncio.sleep(0) between start and body: the head's flush was scheduled first."""
    seen: list[list[bytes]] = []

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"5")]))
        await asyncio.sleep(0)
        seen.append(conn.writes())
        await send(body(b"hello"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    head = ok(b"hello")[: -len(b"hello")]
    assert seen == [[head]]
    assert conn.writes() == [head, b"hello"]


def test_app_that_does_not_wait_sends_head_and_body_in_one_write(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"3")]))
        await send(body(b"abc"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.writes() == [ok(b"abc")]


def test_started_response_shows_its_head_when_the_app_fails_before_its_body(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"5")]))
        raise RuntimeError("no body")

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.writes() == [ok(b"hello")[: -len(b"hello")]]
    assert conn.kinds() == ["write", "write_eof"]


# -- pipelining -------------------------------------------------------------------------------------------


def test_pipelined_request_waits_for_the_response_before_it(make_rig, fast):
    app = Gated()
    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(get(b"/1") + get(b"/2"))
    assert app.started == ["/1"]  # the second is not even parsed yet
    assert conn.kinds() == ["pause_reading"]  # and no more is read meanwhile
    rig.call(app.gates[0].set)
    assert app.started == ["/1", "/2"]
    assert "resume_reading" in conn.kinds()
    assert conn.output() == ok(b"/1")
    rig.call(app.gates[1].set)
    assert conn.output() == ok(b"/1") + ok(b"/2")
    assert conn.open


def test_pipelined_requests_are_answered_in_order(make_rig, fast):
    echo = Echo()
    rig = make_rig(echo, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"one", path=b"/1") + get(b"/2") + post(b"three", path=b"/3"))
    assert echo.paths == ["/1", "/2", "/3"]
    assert conn.output() == ok(b"one") + ok(b"") + ok(b"three")


def test_pipelined_backlog_over_high_water_keeps_reading_paused_until_it_drains(make_rig, fast):
    """Requests queued behind a response: reading resumes only once the backlog is at most HIGH_WATER.

    A client that pipelines without reading its responses must not fill our memory.
    Each response's completion resumes reading only when what is still queued behind
    it fits HIGH_WATER; the next request parsed then pauses reading again.
    """
    app = Gated()
    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    padding = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    queued = [get(b"/%d" % i, padding) for i in range(1, 81)]  # 80 requests of ~1 KiB: over 64 KiB
    conn.send(get(b"/0") + b"".join(queued))
    assert conn.kinds() == ["pause_reading"]
    answers = []
    resumed_at = []
    for index in range(81):
        assert app.started[-1] == f"/{index}"
        conn.calls.clear()
        rig.call(app.gates[index].set)
        answers.append(conn.output())
        kinds = conn.kinds()
        if "resume_reading" in kinds:
            resumed_at.append(index)
            if index < 79:  # the next request is parsed at once, and the rest waits behind it
                assert kinds.index("pause_reading") > kinds.index("resume_reading"), (index, kinds)
        else:
            assert "pause_reading" not in kinds
    backlogs = [sum(map(len, queued[index:])) for index in range(81)]
    assert resumed_at == [index for index in range(80) if backlogs[index] <= 64 * 1024]  # not paused after /80
    assert resumed_at[0] > 10
    assert answers == [ok(b"/%d" % i) for i in range(81)]


def test_head_larger_than_high_water_is_read_while_it_arrives(make_rig, fast):
    """Only complete requests queued behind a response are backlog: a head must be read to be answered."""
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    fields = b"".join(b"X-Pad-%d: " % i + b"p" * 7000 + b"\r\n" for i in range(10))  # 70 kB
    conn.send(b"GET / HTTP/1.1\r\nHost: example.org\r\n" + fields)
    assert conn.kinds() == []
    conn.send(b"\r\n")
    assert conn.output() == ok(b"hello")


# -- flow control ------------------------------------------------------------------------------------------


def test_send_waits_while_writing_is_paused_and_resumes_with_it(make_rig, fast):
    progress: list[str] = []

    async def app(scope, receive, send):
        await send(start(200))
        await send(body(b"a", more=True))
        progress.append("first sent")
        await send(body(b"b", more=True))
        progress.append("second sent")
        await send(body(b""))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.stop_reading()  # the client stopped reading before the app ran
    conn.send(GET)
    assert progress == []  # the first send waits for the buffer to drain
    assert conn.writes() == []
    conn.read_buffered()  # the head and the first chunk go, and fill the buffer again
    assert progress == ["first sent"]
    conn.start_reading()
    assert progress == ["first sent", "second sent"]
    assert conn.output().endswith(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n")


def test_body_over_high_water_pauses_reading_until_the_app_consumes_it(make_rig, fast):
    gate = asyncio.Event()
    received: list[int] = []

    async def app(scope, receive, send):
        await gate.wait()
        data = await read_all(receive)
        received.append(len(data))
        await send(start(200, [(b"content-length", b"0")]))
        await send(body(b""))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    size = 100_000
    conn.send(post(b"x" * 40_000, length=size))
    assert conn.kinds() == []  # 40 kB buffered: under HIGH_WATER, reading goes on
    conn.send(b"x" * 30_000)
    assert conn.kinds() == ["pause_reading"]  # 70 kB buffered and the app has not read any
    rig.call(gate.set)  # the app reads what is buffered: reading resumes
    assert conn.kinds() == ["pause_reading", "resume_reading"]
    conn.send(b"x" * 30_000)
    assert received == [size]
    assert conn.output() == ok(b"")


def test_reading_resumes_as_soon_as_the_app_takes_the_buffered_body(make_rig, fast):
    """Not at the app's next receive(): an app may take one part, then work on it for a while."""
    gates = [asyncio.Event(), asyncio.Event()]
    received: list[int] = []

    async def app(scope, receive, send):
        await gates[0].wait()
        received.append(len((await receive())["body"]))
        await gates[1].wait()
        received.append(len(await read_all(receive)))
        await send(start(200, [(b"content-length", b"0")]))
        await send(body(b""))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"x" * 70_000, length=100_000))
    assert conn.kinds() == ["pause_reading"]
    rig.call(gates[0].set)
    assert received == [70_000]
    assert conn.kinds() == ["pause_reading", "resume_reading"]
    conn.send(b"x" * 30_000)
    rig.call(gates[1].set)
    assert received == [70_000, 30_000]


def test_body_under_high_water_is_read_without_pausing(make_rig, fast):
    echo = Echo()
    rig = make_rig(echo, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"y" * 60_000))
    assert "pause_reading" not in conn.kinds()
    assert conn.output() == ok(b"y" * 60_000)
