"""The HTTP/1.1 connection in process: exact bytes and the order of transport calls.

Driven through ``asyncio.Protocol`` only (tests/inprocess.py), on both request
paths: ``fast`` (the default: fastpath.py parses the head) and ``h11``
(``POUNCE_FAST_PATH=0``). What the end-to-end tests can only infer from a real
socket (when the head leaves, that a held response goes before anything else,
that a pipelined request waits) is asserted here call by call. Held writes, the
deferred head, pipelining and flow control are in test_connection_flow.py, the
deadlines in test_connection_deadlines.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.http1.apps import (
    GET,
    H11_CLOSE,
    SERVER_CLOSE,
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

# -- framing, keep-alive, close -------------------------------------------------------------------


def test_get_is_answered_in_one_write_and_the_connection_stays_open(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.kinds() == ["write"]
    assert conn.output() == ok(b"hello")
    assert conn.open


def test_keep_alive_serves_the_next_request_on_the_same_connection(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.send(get(b"/again"))
    assert conn.output() == ok(b"hello") * 2
    assert conn.kinds() == ["write", "write"]
    assert conn.open


def test_connection_close_request_is_answered_with_close_then_a_lingering_close(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(get(extra=b"Connection: close\r\n"))
    assert conn.output() == ok(b"hello", close=H11_CLOSE)
    assert conn.kinds() == ["write", "write_eof"]  # FIN after the response, not a close
    conn.send(GET)  # arrives while lingering: read and dropped
    assert conn.kinds() == ["write", "write_eof"]
    conn.send_eof()  # the client's FIN ends the linger at once
    assert conn.kinds() == ["write", "write_eof", "close"]
    assert conn.lost


def test_http10_request_without_keep_alive_is_closed_after_its_response(make_rig, fast):
    # The fast path takes HTTP/1.1 only: an HTTP/1.0 request goes to h11 on either rig.
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    assert conn.output() == ok(b"hello", close=H11_CLOSE)
    assert conn.kinds() == ["write", "write_eof"]


def test_keepalive_zero_answers_with_connection_close(make_rig, fast):
    rig = make_rig(hello, fast_path=fast, keepalive=0)
    conn = rig.connect()
    conn.send(GET)
    # The two paths spell the server's own close differently (the fast writer as h11 does for a
    # request that asked for it): case-insensitive, but pinned here so a change is seen.
    assert conn.output() == ok(b"hello", close=H11_CLOSE if fast else SERVER_CLOSE)
    assert conn.kinds() == ["write", "write_eof"]


def test_app_connection_close_header_closes_after_the_response(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"2"), (b"connection", b"close")]))
        await send(body(b"ok"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == (b"HTTP/1.1 200 OK\r\nserver: pounce\r\ndate: DATE\r\ncontent-length: 2\r\n"
                             b"connection: close\r\n\r\nok")
    assert conn.kinds() == ["write", "write_eof"]


def test_head_request_gets_the_head_without_the_body(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(b"HEAD / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert conn.output() == ok(b"hello")[: -len(b"hello")]
    conn.send(GET)  # the connection is in step: the next response is whole
    assert conn.output() == ok(b"hello")[: -len(b"hello")] + ok(b"hello")


def test_streamed_response_is_chunked_and_each_chunk_written_as_sent(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-type", b"text/plain")]))
        await send(body(b"one", more=True))
        await send(body(b"two", more=True))
        await send(body(b""))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.writes() == [
        b"HTTP/1.1 200 OK\r\nserver: pounce\r\ndate: DATE\r\ncontent-type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\none\r\n",
        b"3\r\ntwo\r\n",
        b"0\r\n\r\n",
    ]


def test_request_the_fast_path_cannot_parse_goes_to_h11_with_the_same_bytes(make_rig):
    """A chunked body is h11's; the fast rig then answers exactly as the h11 rig does."""
    request = (b"POST /echo HTTP/1.1\r\nHost: example.org\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    outputs = []
    for fast_path in (True, False):
        echo = Echo()
        rig = make_rig(echo, fast_path=fast_path)
        conn = rig.connect()
        conn.send(request + GET)
        outputs.append(conn.output())
        assert echo.paths == ["/echo", "/"]
    assert outputs[0] == outputs[1] == ok(b"hello world") + ok(b"")


def test_scope_from_the_fast_path_equals_the_scope_from_h11(make_rig):
    scopes: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        scopes.append({k: v for k, v in scope.items() if k != "state"})
        await hello(scope, receive, send)

    for fast_path in (True, False):
        rig = make_rig(app, fast_path=fast_path)
        conn = rig.connect()
        conn.send(b"GET /a%20b?x=1 HTTP/1.1\r\nHost: example.org\r\nX-Thing: 1\r\n\r\n")
    assert scopes[0] == scopes[1]
    assert scopes[0]["path"] == "/a b" and scopes[0]["query_string"] == b"x=1"
    assert scopes[0]["client"] == ("127.0.0.1", 50000) and scopes[0]["server"] == ("127.0.0.1", 8000)
    assert scopes[0]["headers"] == [(b"host", b"example.org"), (b"x-thing", b"1")]


def test_tls_transport_gives_https_scheme_and_closes_without_a_half_close(make_rig, fast):
    schemes = []

    async def app(scope, receive, send):
        schemes.append(scope["scheme"])
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect(tls=True)
    conn.send(get(extra=b"Connection: close\r\n"))
    assert schemes == ["https"]
    assert conn.kinds() == ["write", "close"]  # TLS cannot half-close: no write_eof


# -- bad requests ---------------------------------------------------------------------------------


def test_bad_request_gets_400_then_a_lingering_close_and_the_app_never_runs(make_rig, fast):
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: example.org\r\nBad Header: x\r\n\r\n")
    assert called == []
    out = conn.output()
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
                          b"connection: close\r\ncontent-length: ")
    assert conn.kinds() == ["write", "write_eof"]
    conn.send(GET)  # the rest of what the client sent: dropped, no second response
    assert conn.kinds() == ["write", "write_eof"]
    assert "Invalid request from ip=127.0.0.1" in rig.log.text("warning")
    assert rig.server.rejected == 1


def test_missing_host_gets_400_with_its_reason(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(b"GET / HTTP/1.1\r\n\r\n")
    assert conn.output() == refusal(b"400 Bad Request", b"Invalid HTTP request: Missing mandatory Host: header")
    assert conn.kinds() == ["write", "write_eof"]


def test_connect_is_refused_with_405_and_allow(make_rig, fast):
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
    assert called == []
    assert conn.output() == refusal(
        b"405 Method Not Allowed", b"CONNECT is not served: an ASGI app cannot open a tunnel",
        b"allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n",
    )
    assert conn.kinds() == ["write", "write_eof"]


def test_bad_request_behind_a_good_one_is_answered_after_its_response(make_rig, fast):
    rig = make_rig(hello, fast_path=fast)
    conn = rig.connect()
    conn.send(GET + b"GET / HTTP/1.1\r\n\r\n")
    assert conn.output() == ok(b"hello") + refusal(
        b"400 Bad Request", b"Invalid HTTP request: Missing mandatory Host: header")
    assert conn.kinds()[-1] == "write_eof"


def test_body_over_max_body_size_gets_413_before_the_app(make_rig, fast):
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    rig = make_rig(app, fast_path=fast, env={"POUNCE_MAX_BODY_SIZE": "10"})
    conn = rig.connect()
    conn.send(post(b"x" * 11))
    assert called == []
    assert conn.output() == refusal(
        b"413 Content Too Large", b"Request body of 11 bytes exceeds POUNCE_MAX_BODY_SIZE=10")
    assert conn.kinds() == ["write", "write_eof"]


CHUNKED = b"POST / HTTP/1.1\r\nHost: example.org\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunked_body_growing_over_max_body_size_gets_413_mid_body(make_rig, fast):
    echo = Echo()
    rig = make_rig(echo, fast_path=fast, env={"POUNCE_MAX_BODY_SIZE": "10"})
    conn = rig.connect()
    conn.send(CHUNKED + b"5\r\nhello\r\n")
    assert conn.kinds() == []
    conn.send(b"6\r\n world\r\n")  # 11 bytes: one too many
    assert conn.output() == refusal(b"413 Content Too Large", b"Request body exceeds POUNCE_MAX_BODY_SIZE=10")
    assert conn.kinds() == ["write", "write_eof"]
    assert [m["type"] for m in echo.messages] == ["http.request", "http.disconnect"]


def test_malformed_chunk_gets_400_before_h11_parses_it(make_rig, fast):
    echo = Echo()
    rig = make_rig(echo, fast_path=fast)
    conn = rig.connect()
    conn.send(CHUNKED + b"5\r\nhello\r\nzz\r\n")
    assert conn.output() == refusal(b"400 Bad Request", b"Invalid chunk size 'zz'")
    assert conn.kinds() == ["write", "write_eof"]


# -- 100-continue ----------------------------------------------------------------------------------------


EXPECT = b"Expect: 100-continue\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def test_100_continue_is_sent_when_the_app_asks_for_the_body(make_rig, fast):
    echo = Echo()
    rig = make_rig(echo, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"", length=5, extra=EXPECT))
    assert conn.output() == CONTINUE  # the app called receive(): the client is invited
    conn.send(b"hello")
    assert conn.output() == CONTINUE + ok(b"hello")


def test_100_continue_is_not_sent_when_the_app_answers_without_the_body(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(401, [(b"content-length", b"0")]))
        await send(body(b""))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"", length=5, extra=EXPECT))
    assert CONTINUE not in conn.output()
    assert conn.output().startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    # No Connection: close: the client may still send the body it announced, and the unread
    # body's deadline (keepalive) closes the connection if it does not.
    assert b"close" not in conn.output()
    rig.advance(1.5)
    conn.send(b"hello")
    conn.send(GET)
    assert conn.output().count(b"HTTP/1.1 401 Unauthorized\r\n") == 2


def test_100_continue_waits_for_an_app_that_reads_late(make_rig, fast):
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        data = await read_all(receive)
        await send(start(200, [(b"content-length", b"%d" % len(data))]))
        await send(body(data))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"", length=5, extra=EXPECT))
    assert conn.output() == b""
    rig.call(gate.set)
    assert conn.output() == CONTINUE
    conn.send(b"hello")
    assert conn.output() == CONTINUE + ok(b"hello")


# -- disconnects ----------------------------------------------------------------------------------------


def test_client_leaving_gives_the_waiting_app_http_disconnect(make_rig, fast):
    messages: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        messages.append(await receive())
        messages.append(await receive())

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]
    conn.reset()
    assert messages[1:] == [{"type": "http.disconnect"}]
    assert conn.writes() == []


def test_client_fin_is_a_disconnect(make_rig, fast):
    messages: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        messages.append(await receive())
        messages.append(await receive())

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.send_eof()
    assert messages[1:] == [{"type": "http.disconnect"}]
    assert set(conn.kinds()) == {"close"}  # the transport's own close on EOF, and the cycle's
    assert conn.lost


def test_client_fin_is_a_disconnect_at_once_even_while_our_buffer_is_full(make_rig, fast):
    """The transport's close waits for the buffer to drain; the app must not wait with it."""
    messages: list[str] = []

    async def app(scope, receive, send):
        await send(start(200))
        await send(body(b"a", more=True))  # fills the buffer of a client that reads nothing
        await receive()
        messages.append((await receive())["type"])

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.stop_reading()
    conn.read_buffered()  # one write's room
    conn.send(GET)
    assert messages == []
    conn.send_eof()
    assert messages == ["http.disconnect"]
    assert not conn.lost  # the transport still holds what it could not send


def test_client_leaving_mid_body_gives_http_disconnect_not_a_short_body(make_rig, fast):
    messages: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"abc", length=10))
    conn.reset()
    assert messages == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]


def test_streaming_app_that_does_not_listen_is_stopped_by_its_next_send(make_rig, fast):
    errors: list[BaseException] = []
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await send(start(200))
        await send(body(b"a", more=True))
        await gate.wait()
        try:
            await send(body(b"b", more=True))
        except Exception as exc:
            errors.append(exc)
            raise

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.reset()
    rig.call(gate.set)
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    assert type(errors[0]).__name__ == "ClientDisconnected"


def test_app_ignoring_a_disconnect_is_cancelled_after_the_grace_period(make_rig, fast):
    outcome: list[str] = []
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await send(start(200))
        await send(body(b"a", more=True))
        try:
            await gate.wait()  # never set: an app busy with something else
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.reset()
    rig.advance(2.5)
    assert outcome == []
    rig.advance(0.5)  # asgi_disconnect_grace_period: 3 s
    assert outcome == ["cancelled"]
    assert "asgi_disconnect_grace_period" in rig.log.text("info")
