"""What one HTTP/2 stream must never do to the others, or to the connection's slot, on the in-process rig.

Each test here was a bug found in review (session 6): the windows of request
bodies (a connection that stopped taking uploads after 64 KiB; one app that had
not read its body yet starving every other upload into a 408), streams held
forever (a finished response stuck behind a closed window; a refusal sent
before any app ran), ``POUNCE_SEND_TIMEOUT`` cutting a client that reads
steadily, RST_STREAM(INTERNAL_ERROR) after a complete 413, a body sent in
answer to HEAD, a ``:method`` that killed the connection, a second
``receive()`` that stranded the first, and ``:scheme`` taken from any TLS
client. A real h2 client's frames go through the connection's Protocol
interface; the clock moves only when the test says so.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.errors
import h2.events

from tests.http2.rig_client import SETTINGS, Client
from tests.inprocess import FakeTransport, Rig


async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads its whole body, answers its size; ``/slow`` first waits for the test's gate."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await GATE.wait()
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        total += len(message["body"])
        if not message["more_body"]:
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % total})


async def ignorer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


GATE = asyncio.Event()


def upload(client: Client, size: int, path: str = "/") -> tuple[int, bool]:
    """A POST of ``size`` bytes, sent as far as the client's windows allow; (stream, all sent)."""
    stream = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "t")])
    n = min(size, client.h2.local_flow_control_window(stream))
    for start in range(0, n, 16384):
        part = min(16384, n - start)
        client.h2.send_data(stream, b"x" * part, end_stream=n == size and start + part == n)
    client.flush()
    return stream, n == size


def events_of(client: Client, stream: int) -> list[tuple[str, Any]]:
    client.flush()
    return [(type(e).__name__, getattr(e, "error_code", None)) for e in client.events
            if getattr(e, "stream_id", None) == stream]


# -- request bodies and the windows ----------------------------------------------------------------


def test_uploads_keep_flowing_on_one_connection(make_rig):
    """Twenty 10 kB uploads on one connection (200 kB, three connection windows' worth), read or ignored."""
    for app in (reader, ignorer):
        rig = make_rig(app, **SETTINGS)
        client = Client(rig)
        for _ in range(20):
            stream, whole = upload(client, 10_000)
            assert whole and client.status(stream) == 200


def test_an_app_that_has_not_read_its_body_blocks_no_other_upload(make_rig):
    GATE.clear()
    rig = make_rig(reader, env={"POUNCE_BODY_MIN_RATE": "0"}, **SETTINGS)
    client = Client(rig)
    slow, _ = upload(client, 100_000, "/slow")  # fills its own stream window, and no more
    fast, whole = upload(client, 1000)
    assert whole and client.status(fast) == 200 and client.body(fast) == b"1000"
    rig.call(GATE.set)
    client.flush()  # its window reopened as its app read
    for start in range(65_535, 100_000, 16384):
        part = min(16384, 100_000 - start)
        client.h2.send_data(slow, b"x" * part, end_stream=start + part == 100_000)
    assert client.status(slow) == 200 and client.body(slow) == b"100000"


# -- every stream ends ------------------------------------------------------------------------------


async def big_at_once(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 100_000})


def test_a_finished_response_behind_a_closed_window_has_the_send_deadline(make_rig):
    """The app's one body message is over the client's windows, which it never opens: at
    POUNCE_SEND_TIMEOUT the stream (here the connection, whose own window is shut) is let go."""
    rig = make_rig(big_at_once, env={"POUNCE_SEND_TIMEOUT": "60"}, keepalive=5, **SETTINGS)
    client = Client(rig)
    stream = client.post(method="GET", end=True)
    assert client.status(stream) == 200 and len(client.body(stream)) == 65_535
    rig.advance(59.9)
    assert client.conn.open
    rig.advance(0.1)
    assert not client.conn.open
    assert "stayed shut for POUNCE_SEND_TIMEOUT=60s" in rig.log.text()


async def never(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise AssertionError("the app is not called for a refused request")


def test_a_refusal_before_the_app_ends_the_stream(make_rig):
    """413 by Content-Length and 405 for CONNECT: sent whole, then RST_STREAM(NO_ERROR) for the body
    still coming (RFC 9113 §8.1), never a stream left half open with no deadline."""
    rig = make_rig(never, env={"POUNCE_MAX_BODY_SIZE": "10"}, keepalive=5, **SETTINGS)
    client = Client(rig)
    for head in ([(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "t"),
                  ("content-length", "1000")],
                 [(":method", "CONNECT"), (":authority", "example:443")]):
        stream = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream, head)
        client.flush()
        assert client.status(stream) in (413, 405)
        assert ("StreamReset", h2.errors.ErrorCodes.NO_ERROR) in events_of(client, stream)
    rig.advance(5)
    assert not client.conn.open  # idle, so closed after keepalive


def test_a_refusal_behind_a_shut_window_waits_for_it_instead_of_being_cut(make_rig):
    """A client whose streams start with no window (SETTINGS_INITIAL_WINDOW_SIZE 0) gets the
    413's head at once and its body as the window opens, then RST_STREAM(NO_ERROR) for the
    request body; it was RST_STREAM(CANCEL) at once, the status line's reason lost. A window
    never opened lets the stream go at POUNCE_SEND_TIMEOUT."""
    import h2.settings

    rig = make_rig(never, env={"POUNCE_MAX_BODY_SIZE": "10", "POUNCE_SEND_TIMEOUT": "60"}, keepalive=5, **SETTINGS)
    client = Client(rig)
    client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.flush()
    head = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "t"), ("content-length", "1000")]
    opened = client.h2.get_next_available_stream_id()
    client.h2.send_headers(opened, head)
    client.flush()
    shut = client.h2.get_next_available_stream_id()
    client.h2.send_headers(shut, head)
    client.flush()
    for stream in (opened, shut):
        assert client.status(stream) == 413
        assert client.body(stream) == b""
        assert ("StreamReset", h2.errors.ErrorCodes.CANCEL) not in events_of(client, stream)
    client.h2.increment_flow_control_window(4096, opened)
    client.flush()
    assert client.body(opened) == b"Request body of 1000 bytes exceeds POUNCE_MAX_BODY_SIZE=10\n"
    assert ("StreamEnded", None) in events_of(client, opened)
    assert ("StreamReset", h2.errors.ErrorCodes.NO_ERROR) in events_of(client, opened)
    rig.advance(59.9)
    assert ("StreamReset", h2.errors.ErrorCodes.NO_ERROR) not in events_of(client, shut)
    rig.advance(0.2)
    assert any(kind == "StreamReset" for kind, _ in events_of(client, shut))
    assert client.conn.open  # one stream's shut window: that stream goes, not the connection


def test_a_refusal_mid_body_behind_a_shut_window_is_not_reset_when_the_app_returns(make_rig):
    """413 once the body passes the limit, the client's window shut: the app hears the
    disconnect and returns while the 413 waits for the window; that return must not reset the
    stream with INTERNAL_ERROR (found reviewing the fix above)."""
    import h2.settings

    rig = make_rig(reader, env={"POUNCE_MAX_BODY_SIZE": "10", "POUNCE_SEND_TIMEOUT": "60"}, **SETTINGS)
    client = Client(rig)
    client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.flush()
    stream = client.post(b"x" * 100)
    rig.advance(1)
    assert client.status(stream) == 413
    assert events_of(client, stream) == [("ResponseReceived", None)]
    client.h2.increment_flow_control_window(4096, stream)
    client.flush()
    assert client.body(stream) == b"Request body exceeds POUNCE_MAX_BODY_SIZE=10\n"
    assert events_of(client, stream)[-2:] == [("StreamEnded", None), ("StreamReset", h2.errors.ErrorCodes.NO_ERROR)]


def test_with_no_send_timeout_a_refusal_behind_a_shut_window_is_not_kept_open(make_rig):
    """POUNCE_SEND_TIMEOUT=0 leaves nothing to bound the wait for the window: the stream is reset
    at once, as before, instead of counting against the connection's streams forever."""
    import h2.settings

    rig = make_rig(never, env={"POUNCE_MAX_BODY_SIZE": "10", "POUNCE_SEND_TIMEOUT": "0"}, keepalive=5, **SETTINGS)
    client = Client(rig)
    client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.flush()
    stream = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "t"),
                                    ("content-length", "1000")])
    client.flush()
    assert client.status(stream) == 413
    assert ("StreamReset", h2.errors.ErrorCodes.CANCEL) in events_of(client, stream)
    rig.advance(5)
    assert not client.conn.open  # idle, so closed after keepalive


def test_a_complete_refusal_is_not_followed_by_internal_error(make_rig):
    """413 mid-body and 408: the app hears http.disconnect and returns; the stream is not then reset
    with INTERNAL_ERROR (curl reports that as a failed transfer and hides the status)."""
    rig = make_rig(reader, env={"POUNCE_MAX_BODY_SIZE": "10", "POUNCE_BODY_MIN_RATE": "0"}, **SETTINGS)
    client = Client(rig)
    too_big = client.post(b"x" * 100)
    stalled = client.post(b"abc")
    rig.advance(30)
    for stream, status in ((too_big, 413), (stalled, 408)):
        assert client.status(stream) == status
        assert ("StreamReset", h2.errors.ErrorCodes.INTERNAL_ERROR) not in events_of(client, stream)


async def big_in_two(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 1_000_000, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})


def test_the_send_deadline_counts_from_the_clients_last_progress(make_rig):
    """A client that opens its window 16 KiB every 5 s takes 5 minutes over 1 MB: never cut at 60 s."""
    rig = make_rig(big_in_two, env={"POUNCE_SEND_TIMEOUT": "60"}, **SETTINGS)
    client = Client(rig)
    stream = client.post(method="GET", end=True)
    acked = 0
    for _ in range(80):
        got = len(client.body(stream))
        if got == 1_000_003:
            return
        assert client.conn.open and ("StreamReset", h2.errors.ErrorCodes.CANCEL) not in events_of(client, stream)
        if got > acked:
            client.h2.acknowledge_received_data(got - acked, stream)
            acked = got
            client.flush()
        rig.advance(5)
    raise AssertionError(f"only {len(client.body(stream))} bytes came")


# -- what a stream's request or response may not do ---------------------------------------------------


async def head_fails(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.pathsend", "path": "/nonexistent/file"})


def test_head_gets_no_body_from_a_500_or_a_refusal(make_rig):
    rig = make_rig(head_fails, env={"POUNCE_MAX_BODY_SIZE": "10"}, **SETTINGS)
    client = Client(rig)
    failed = client.post(method="HEAD", end=True)
    refused = client.h2.get_next_available_stream_id()
    client.h2.send_headers(refused, [(":method", "HEAD"), (":path", "/"), (":scheme", "http"), (":authority", "t"),
                                     ("content-length", "1000")])
    client.flush()
    assert client.status(failed) == 500 and client.status(refused) == 413
    assert client.body(failed) == client.body(refused) == b""  # h2's client raises on a body to HEAD


def test_a_malformed_method_resets_its_stream_only(make_rig):
    rig = make_rig(ignorer, **SETTINGS)
    client = Client(rig)
    bad = client.h2.get_next_available_stream_id()
    client.h2.send_headers(bad, [(b":method", b"G\xffT"), (b":path", b"/"), (b":scheme", b"http"),
                                 (b":authority", b"t")], end_stream=True)
    client.flush()
    assert ("StreamReset", h2.errors.ErrorCodes.PROTOCOL_ERROR) in events_of(client, bad)
    good = client.post(method="GET", end=True)
    assert client.status(good) == 200


HEARD: list[Any] = []


async def two_receivers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A disconnect listener, then Starlette's is_disconnected(): receive() in a cancelled scope."""
    if scope["type"] != "http":
        return
    await receive()  # the (empty) body

    async def listener() -> None:
        HEARD.append(await receive())

    task = asyncio.ensure_future(listener())
    await asyncio.sleep(0)
    poll = asyncio.ensure_future(receive())
    await asyncio.sleep(0)
    poll.cancel()
    await asyncio.gather(poll, return_exceptions=True)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"tick", "more_body": True})
    await task


def test_a_cancelled_receive_does_not_strand_another(make_rig):
    HEARD.clear()
    rig = make_rig(two_receivers, **SETTINGS)
    client = Client(rig)
    stream = client.post(method="GET", end=True)
    client.h2.reset_stream(stream)
    client.flush()
    assert HEARD == [{"type": "http.disconnect"}]


class ALPN:
    @staticmethod
    def selected_alpn_protocol() -> str:
        return "h2"


def test_scheme_comes_from_the_transport_unless_the_peer_is_trusted(make_rig, monkeypatch):
    """Over TLS, ``:scheme: http`` from a client outside forwarded_allow_ips is ignored (as Gunicorn 27)."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["scheme"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    extra = FakeTransport.get_extra_info
    monkeypatch.setattr(FakeTransport, "get_extra_info",
                        lambda self, name, default=None: ALPN() if name == "ssl_object" else extra(self, name, default))
    rig: Rig = make_rig(app, http_protocols="h2,h1", forwarded_allow_ips="127.0.0.1")
    for peer in ("203.0.113.5", "127.0.0.1"):
        client = Client(rig, tls=True, peername=(peer, 40000))
        stream = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                        (":authority", "t")], end_stream=True)
        assert client.status(stream) == 204
    assert seen == ["https", "http"]
