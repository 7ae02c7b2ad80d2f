"""The ASGI request cycle, driven through the HTTP/1.1 connection in process (tests/inprocess.py).

What an app sees (the messages ``receive`` returns, what ``send`` raises) and
what the cycle does when the app misbehaves (the error policy: 500 before the
response started, a close after), each with the exact bytes on the wire and the
order of transport calls, on both request paths. tests/test_app_misbehaves.py
checks the same policy end to end; here each case is one precise assertion.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.http1.apps import GET, H11_CLOSE, SERVER_CLOSE, body, get, hello, ok, post, start


@pytest.fixture
def post_requests() -> list[tuple[int, int, str]]:
    """What Gunicorn's ``post_request`` hook saw, per request: (status, bytes sent, path)."""
    return []


@pytest.fixture(params=["bare", "hooked"])
def make_rig(request: pytest.FixtureRequest, make_rig: Any, post_requests: list[Any]) -> Any:
    """Each cycle test twice: the bare app call (no hooks, access log, compression, Server-Timing:
    RequestCycle.run's short branch) and the wrapped one (a ``post_request`` hook)."""
    if request.param == "bare":
        return make_rig

    def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
        post_requests.append((resp.status_code, resp.sent, environ["PATH_INFO"]))

    def make(app: Any, **options: Any) -> Any:
        return make_rig(app, post_request=post_request, **options)

    return make


def error_500(fast: bool) -> bytes:
    """The cycle's own 500 (Connection: close spelled by whichever path framed it)."""
    close = H11_CLOSE if fast else SERVER_CLOSE
    return (b"HTTP/1.1 500 Internal Server Error\r\nserver: pounce\r\ndate: DATE\r\n"
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n" + close
            + b"\r\nInternal Server Error")


# -- the error policy -------------------------------------------------------------------------------------


def test_app_raising_before_start_gets_a_500_and_a_close(make_rig, fast):
    async def app(scope, receive, send):
        raise ValueError("boom")

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == error_500(fast)
    assert conn.kinds() == ["write", "write_eof"]
    assert "Exception in ASGI application while handling GET /" in rig.log.text("exception")


def test_app_raising_after_start_gets_no_500_only_a_close_after_what_it_sent(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200))
        await send(body(b"part", more=True))
        raise ValueError("boom")

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == (b"HTTP/1.1 200 OK\r\nserver: pounce\r\ndate: DATE\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n4\r\npart\r\n")
    assert conn.kinds() == ["write", "write_eof"]  # no terminating chunk: the client sees it cut
    assert "Exception in ASGI application" in rig.log.text("exception")


def test_app_returning_without_a_response_gets_a_500(make_rig, fast):
    async def app(scope, receive, send):
        return None

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == error_500(fast)
    assert conn.kinds() == ["write", "write_eof"]
    assert "ASGI callable returned without starting a response" in rig.log.text("error")


def test_app_returning_with_its_response_incomplete_is_closed(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"10")]))
        await send(body(b"12345", more=True))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == ok(b"1234567890")[:-5]
    assert conn.kinds() == ["write", "write_eof"]
    assert "returned without completing the response" in rig.log.text("error")


def test_app_returning_a_value_is_logged_and_its_response_stands(make_rig, fast):
    async def app(scope, receive, send):
        await hello(scope, receive, send)
        return 42

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == ok(b"hello")
    assert conn.open
    assert "ASGI callable should return None, but returned 42" in rig.log.text("error")


def test_send_after_the_response_is_complete_raises_in_the_app(make_rig, fast):
    errors: list[str] = []

    async def app(scope, receive, send):
        await hello(scope, receive, send)
        try:
            await send(body(b"more"))
        except RuntimeError as exc:
            errors.append(str(exc))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert errors == ["ASGI: message 'http.response.body' sent after the response was complete"]
    assert conn.output() == ok(b"hello")
    conn.send(GET)  # the connection was not harmed
    assert conn.output() == ok(b"hello") * 2


def test_body_shorter_than_its_content_length_shows_what_was_valid_then_closes(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"10")]))
        await send(body(b"short"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == ok(b"1234567890")[:-10] + b"short"
    assert conn.kinds()[-1] == "write_eof"
    assert conn.kinds().count("write_eof") == 1


def test_body_longer_than_its_content_length_is_refused_before_a_byte_of_it(make_rig, fast):
    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"2")]))
        await send(body(b"too long"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.output() == ok(b"12")[:-2]
    assert conn.kinds()[-1] == "write_eof"


# -- message checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "error"),
    [
        (body(b"x"), "ASGI: expected 'http.response.start' as the first message, got 'http.response.body'"),
        ({"type": "http.response.start", "status": "200"},
         "ASGI: 'http.response.start' status must be an int 100-599, got '200'"),
        ({"type": "http.response.start", "status": 600},
         "ASGI: 'http.response.start' status must be an int 100-599, got 600"),
        ({"type": "http.response.start", "status": 103},
         "ASGI: informational (1xx) statuses cannot be sent with http.response.start"),
    ],
    ids=["body-first", "status-str", "status-600", "status-1xx"],
)
def test_invalid_first_message_raises_in_the_app_and_the_client_gets_a_500(make_rig, fast, first, error):
    errors: list[str] = []

    async def app(scope, receive, send):
        try:
            await send(first)
        except (RuntimeError, TypeError) as exc:
            errors.append(str(exc))
            raise

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert errors == [error]
    assert conn.output() == error_500(fast)


@pytest.mark.parametrize(
    ("second", "error"),
    [
        (start(200), "ASGI: expected 'http.response.body' after 'http.response.start', got 'http.response.start'"),
        (body("text"), "ASGI: 'http.response.body' body must be bytes, got str"),  # type: ignore[arg-type]
        ({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]},
         "ASGI: 'http.response.early_hint' sent after 'http.response.start': "
         "an informational (1xx) response must come before the final one"),
    ],
    ids=["start-twice", "body-str", "hint-after-start"],
)
def test_invalid_message_after_start_raises_and_the_started_response_is_cut(make_rig, fast, second, error):
    errors: list[str] = []

    async def app(scope, receive, send):
        await send(start(200, [(b"content-length", b"5")]))
        try:
            await send(second)
        except (RuntimeError, TypeError) as exc:
            errors.append(str(exc))
            raise

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert errors == [error]
    assert conn.output() == ok(b"hello")[:-5]  # the head the app started, then the close
    assert conn.kinds() == ["write", "write_eof"]


def test_early_hints_go_out_before_the_response(make_rig, fast):
    async def app(scope, receive, send):
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
        await send({"type": "http.response.informational", "status": 103, "headers": [(b"link", b"</a.js>")]})
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.writes() == [
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.js>\r\n\r\n",
        ok(b"hello"),
    ]


def test_early_hints_are_not_sent_to_an_http10_client(make_rig, fast):
    async def app(scope, receive, send):
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    assert conn.output() == ok(b"hello", close=H11_CLOSE)


def test_head_and_no_body_statuses_send_no_body_whatever_the_app_sends(make_rig, fast):
    async def app(scope, receive, send):
        status = 204 if scope["path"] == "/204" else 200
        await send(start(status, [(b"content-length", b"5")] if status == 200 else []))
        await send(body(b"hello"))

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(b"HEAD / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    conn.send(get(b"/204"))
    assert conn.output() == ok(b"hello")[:-5] + b"HTTP/1.1 204 No Content\r\nserver: pounce\r\ndate: DATE\r\n\r\n"
    assert conn.open


# -- receive(): the request body and the disconnect -----------------------------------------------------------


def test_body_arrives_as_it_is_read_with_more_body_until_the_last_byte(make_rig, fast):
    messages: list[dict[str, Any]] = []
    gate = asyncio.Event()

    async def app(scope, receive, send):
        while True:
            message = await receive()
            messages.append(message)
            if not message.get("more_body"):
                break
        await gate.wait()
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"ab", length=5))
    conn.send(b"cd")
    conn.send(b"e")
    assert messages == [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"e", "more_body": False},
    ]


def test_request_without_a_body_is_one_empty_message(make_rig, fast):
    messages: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        messages.append(await receive())
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]


def test_receive_after_the_whole_body_waits_for_the_client_to_leave(make_rig, fast):
    messages: list[str] = []

    async def app(scope, receive, send):
        messages.append((await receive())["type"])
        messages.append((await receive())["type"])

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"abc"))
    rig.advance(1000.0)  # the app waits on its receive(), with no deadline on the connection
    assert messages == ["http.request"]
    conn.send_eof()
    assert messages == ["http.request", "http.disconnect"]


def test_receive_after_the_response_is_complete_is_a_disconnect_at_once(make_rig, fast):
    messages: list[str] = []

    async def app(scope, receive, send):
        await receive()
        await hello(scope, receive, send)
        messages.append((await receive())["type"])

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert messages == ["http.disconnect"]
    assert conn.open  # the connection serves on: the disconnect is only the cycle's end


def test_receive_during_an_unread_body_after_the_response_is_a_disconnect(make_rig, fast):
    messages: list[str] = []

    async def app(scope, receive, send):
        await hello(scope, receive, send)
        messages.append((await receive())["type"])

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(post(b"abc", length=10))
    assert messages == ["http.disconnect"]


def test_send_after_a_disconnect_is_silent_for_an_app_that_listens(make_rig, fast):
    """Django races a disconnect listener against its view: the view's send must not raise."""
    outcome: list[str] = []
    gate = asyncio.Event()

    async def listener(receive):
        while (await receive())["type"] != "http.disconnect":
            pass
        outcome.append("heard")

    async def app(scope, receive, send):
        task = asyncio.ensure_future(listener(receive))
        await gate.wait()
        await send(start(200, [(b"content-length", b"5")]))
        await send(body(b"hello"))
        outcome.append("sent")
        await task

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.reset()
    rig.call(gate.set)
    assert outcome == ["heard", "sent"]
    assert conn.writes() == []


def test_send_after_a_disconnect_raises_for_an_app_that_does_not_listen(make_rig, fast):
    errors: list[str] = []
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        try:
            await send(start(200))
        except OSError as exc:
            errors.append(type(exc).__name__)
            raise

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.reset()
    rig.call(gate.set)
    assert errors == ["ClientDisconnected"]
    assert conn.writes() == []
    # the app's exception is the disconnect's echo: logged at debug, not as an app error
    assert rig.log.text("exception") == ""
    assert "Request ended by the client disconnecting (ClientDisconnected): GET /" in rig.log.text("debug")


# -- the wrapped call: what post_request sees ------------------------------------------------------------


@pytest.mark.parametrize("make_rig", ["hooked"], indirect=True)
def test_post_request_sees_each_response_as_sent(make_rig, fast, post_requests):
    async def app(scope, receive, send):
        if scope["path"] == "/fail":
            raise ValueError("boom")
        if scope["path"] == "/cut":
            await send(start(200, [(b"content-length", b"10")]))
            await send(body(b"12345", more=True))
            return
        await hello(scope, receive, send)

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    conn.send(b"HEAD / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    conn.send(get(b"/fail"))
    for path in (b"/cut",):
        rig.connect().send(get(path))
    assert post_requests == [(200, 5, "/"), (200, 0, "/"), (500, 21, "/fail"), (200, 5, "/cut")]


@pytest.mark.parametrize("make_rig", ["bare"], indirect=True)
def test_server_timing_measures_the_app_on_the_test_clock(make_rig, fast):
    """POUNCE_SERVER_TIMING: the app's time is the clock's between its call and its start message."""
    gate = asyncio.Event()

    async def app(scope, receive, send):
        await gate.wait()
        await send(start(200, [(b"content-length", b"2"), (b"server-timing", b"db;dur=1")]))
        await send(body(b"ok"))

    rig = make_rig(app, fast_path=fast, env={"POUNCE_SERVER_TIMING": "1"})
    conn = rig.connect()
    conn.send(GET)
    rig.advance(0.25)
    rig.call(gate.set)
    assert conn.output() == (b"HTTP/1.1 200 OK\r\nserver: pounce\r\ndate: DATE\r\ncontent-length: 2\r\n"
                             b"server-timing: db;dur=1, parse;dur=0.000, queue;dur=0.000, app;dur=250.000\r\n\r\nok")
