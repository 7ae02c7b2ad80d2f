"""A graceful stop as each HTTP/1.1 connection sees it, in process (tests/inprocess.py).

In-flight requests finish with ``Connection: close``, idle connections close at
once, and a connection accepted just before the stop (or during it) has
FIRST_REQUEST_GRACE (1 s) to send the request it was opened for. The drain's
own bound (graceful_timeout) and the lifespan are tests/test_lifecycle.py's.
"""

from __future__ import annotations

import asyncio

from tests.http1.apps import GET, H11_CLOSE, SERVER_CLOSE, Gated, hello, ok


def closing(body: bytes, fast: bool) -> bytes:
    """A 200 that ends the connection because the worker stops (the paths spell the close differently)."""
    return ok(body, close=H11_CLOSE if fast else SERVER_CLOSE)


def test_request_in_flight_at_a_stop_is_answered_with_close(make_rig, fast):
    app = Gated()
    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    rig.stop_gracefully()
    assert conn.kinds() == []  # the app is still working: nothing is cut
    rig.call(app.gates[0].set)
    assert conn.output() == closing(b"/", fast)
    assert conn.kinds() == ["write", "write_eof"]


def test_pipelined_request_behind_one_in_flight_is_not_served_after_a_stop(make_rig, fast):
    app = Gated()
    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET + GET)
    rig.stop_gracefully()
    rig.call(app.gates[0].set)
    assert app.started == ["/"]
    assert conn.output() == closing(b"/", fast)
    # reading was paused for the pipelined request; the lingering close reads (and drops) it
    assert conn.kinds() == ["pause_reading", "write", "write_eof", "resume_reading"]


def test_idle_connection_is_closed_at_once_at_a_stop(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.take()
    rig.stop_gracefully()
    assert conn.kinds() == ["write_eof"]


def test_new_connection_has_a_second_to_send_its_first_request_at_a_stop(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    rig.stop_gracefully()
    rig.advance(0.5)
    assert conn.kinds() == []
    conn.send(GET)  # the request the connection was opened for: served, and the last
    assert conn.output() == closing(b"hello", fast)
    assert conn.kinds() == ["write", "write_eof"]


def test_new_connection_that_sends_nothing_is_closed_a_second_into_a_stop(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    rig.stop_gracefully()
    rig.advance(0.5)
    assert conn.kinds() == []
    rig.advance(0.5)  # FIRST_REQUEST_GRACE
    assert conn.kinds() == ["write_eof"]


def test_connection_accepted_during_a_stop_gets_the_same_second(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    rig.stop_gracefully()
    conn = rig.connect()
    rig.advance(0.5)
    assert conn.kinds() == []
    rig.advance(0.5)
    assert conn.kinds() == ["write_eof"]


def test_body_of_a_request_in_flight_is_still_read_at_a_stop(make_rig, fast):
    received: list[bytes] = []
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        message = await receive()
        received.append(message["body"])
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(b"POST / HTTP/1.1\r\nHost: example.org\r\nContent-Length: 4\r\n\r\nab")
    rig.stop_gracefully()
    conn.send(b"cd")
    rig.call(gate.set)
    assert received == [b"abcd"]
    assert conn.output() == closing(b"hello", fast)
