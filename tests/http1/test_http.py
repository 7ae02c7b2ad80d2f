"""HTTP/1.1 behaviour and the ASGI ``http`` scope, end to end, in both forced modes.

Servers are module-scoped per mode (booting a gunicorn master costs about a second),
so every test here must leave its server as it found it: no signals, no config changes.
Raw sockets are used wherever framing matters; ``RawConnection`` parses what comes
back with h11, so a response with a wrong framing breaks the parse of the next one.
"""

from __future__ import annotations

import email.utils
import json
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODES
from tests.harness import Gunicorn, RawConnection, http_request, raw_request, serve, wait_until

LIMIT_ARGS = (
    "--keep-alive", "1",
    "--limit-request-line", "200",
    "--limit-request-fields", "10",
    "--limit-request-field_size", "100",
)


def _boot(app: str, mode: str, *args: str, env: dict[str, str] | None = None) -> Gunicorn:
    """Thread mode runs asyncio loops, as on a free-threaded build (where uvloop is never used);
    process mode keeps asgi_loop=auto, so it runs uvloop when that is installed, as on GIL builds."""
    if mode == "threads":
        args = ("--asgi-loop", "asyncio", *args)
    return Gunicorn(app, *args, mode=mode, threads=2, workers=1, env=env).start()


@pytest.fixture(scope="module", params=MODES)
def echo(request: pytest.FixtureRequest):
    """tests.apps:echo with keepalive=1s and small request limits."""
    server = _boot("tests.apps:echo", request.param, *LIMIT_ARGS)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=MODES)
def features(request: pytest.FixtureRequest):
    server = _boot("tests.apps:features", request.param, "--keep-alive", "1")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=MODES)
def crash(request: pytest.FixtureRequest):
    server = _boot("tests.apps:crash", request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=MODES)
def disconnect(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    marker = tmp_path_factory.mktemp("disconnect") / "marker.txt"
    marker.touch()
    server = _boot("tests.apps:disconnect_watch", request.param, env={"POUNCE_TEST_DISCONNECT_FILE": str(marker)})
    server.marker = marker  # type: ignore[attr-defined]
    yield server
    server.stop()


def _json(body: bytes) -> dict:
    return json.loads(body.decode("utf-8"))


# -- keep-alive ------------------------------------------------------------------------------


def test_keepalive_serves_several_requests_on_one_connection(echo):
    with RawConnection(echo.port) as conn:
        seen = []
        for path in ("/one", "/two", "/three"):
            conn.send(http_request("GET", path))
            response = conn.read_response()
            assert response.status == 200
            assert (response.header(b"connection") or b"").lower() != b"close"
            seen.append(_json(response.body))
    assert [d["path"] for d in seen] == ["/one", "/two", "/three"]
    # Same client port for all three: the one TCP connection carried them.
    assert {d["client"][1] for d in seen} == {conn.local_port}


@pytest.mark.serial  # wall-clock window around the 1 s keep-alive
def test_keepalive_idle_timeout_closes_connection(echo):
    with RawConnection(echo.port) as conn:
        conn.send(http_request("GET", "/"))
        assert conn.read_response().status == 200
        started = time.monotonic()
        assert not conn.closed_by_server(0.6), "closed before keepalive=1s expired"
        assert conn.closed_by_server(2.0), "idle connection still open well after keepalive=1s"
        assert 0.9 <= time.monotonic() - started <= 2.6


@pytest.mark.serial  # wall-clock window around the 1 s keep-alive
def test_request_sent_just_before_keepalive_expires_is_served(echo):
    with RawConnection(echo.port) as conn:
        conn.send(http_request("GET", "/first"))
        assert conn.read_response().status == 200
        time.sleep(0.8)  # keepalive is 1s
        conn.send(http_request("GET", "/second"))
        response = conn.read_response()
        assert response.status == 200
        assert _json(response.body)["path"] == "/second"


def test_pipelined_requests_are_answered_in_order(echo):
    batch = b"".join([
        http_request("GET", "/sleep/0.3"),
        http_request("GET", "/b?x=1"),
        http_request("POST", "/c", [("Content-Length", "5")], b"hello"),
        http_request("PATCH", "/d", [("Transfer-Encoding", "chunked")], b"3\r\nabc\r\n0\r\n\r\n"),
        http_request("GET", "/e"),
    ])
    with RawConnection(echo.port) as conn:
        conn.send(batch)
        answers = [_json(conn.read_response().body) for _ in range(5)]
    assert [(a["method"], a["path"]) for a in answers] == [
        ("GET", "/sleep/0.3"), ("GET", "/b"), ("POST", "/c"), ("PATCH", "/d"), ("GET", "/e"),
    ]
    assert answers[1]["query_string"] == "x=1"
    assert (answers[2]["body"], answers[3]["body"]) == ("hello", "abc")


def test_held_responses_stay_in_order_with_streams_and_close(echo):
    """Small complete responses wait for the end of the loop iteration (HTTPConnection.hold);
    a streamed response, a 204 and the close that follows must still come in request order,
    every byte before the FIN."""
    batch = b"".join([
        http_request("GET", "/a"),
        http_request("GET", "/stream/3"),
        http_request("GET", "/b"),
        http_request("GET", "/status/204"),
        http_request("GET", "/c", [("Connection", "close")]),
    ])
    with RawConnection(echo.port) as conn:
        conn.send(batch)
        responses = [conn.read_response() for _ in range(5)]
        assert conn.closed_by_server(5.0)
    assert [r.status for r in responses] == [200, 200, 200, 204, 200]
    assert [_json(responses[i].body)["path"] for i in (0, 2, 4)] == ["/a", "/b", "/c"]
    assert responses[1].body == b"chunk 0\nchunk 1\nchunk 2\n"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_request_followed_by_the_clients_fin_is_answered(loop):
    """A client that half-closes right after its request (HTTP/1.0 tools, ``nc -N``) gets the
    whole response: a held response joins the transport's buffer before the FIN closes it
    (uvloop can hand over the request and the FIN in one read callback)."""
    pytest.importorskip(loop)
    with Gunicorn("tests.apps:echo", "--asgi-loop", loop, mode="processes", workers=1).start() as server:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(http_request("GET", "/fin"))
                sock.shutdown(socket.SHUT_WR)
                data = b""
                while part := sock.recv(65536):
                    data += part
            assert data.startswith(b"HTTP/1.1 200 "), data
            assert b'"path": "/fin"' in data, data


# -- bodies both ways ----------------------------------------------------------------------------


def test_request_body_with_content_length(echo):
    body = bytes(range(65, 91)) * 4000  # 104000 bytes
    with RawConnection(echo.port) as conn:
        conn.send(http_request("POST", "/upload", [("Content-Length", str(len(body)))], body))
        data = _json(conn.read_response().body)
    assert data["body_len"] == len(body)
    assert data["body"] == body[:64].decode()


def test_request_body_chunked(echo):
    chunks = b"5\r\nhello\r\n6;ext=1\r\n world\r\n1000\r\n" + b"z" * 4096 + b"\r\n0\r\n\r\n"
    with RawConnection(echo.port) as conn:
        conn.send(http_request("POST", "/chunked", [("Transfer-Encoding", "chunked")], chunks))
        data = _json(conn.read_response().body)
    assert data["body_len"] == 11 + 4096
    assert data["body"].startswith("hello worldzzz")


def test_response_with_content_length(features):
    raw = raw_request(features.port, http_request("GET", "/fixed", [("Connection", "close")]))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert re.search(rb"(?im)^content-length: 11\r?$", head)
    assert b"transfer-encoding" not in head.lower()
    assert body == b"hello world"


def test_response_streamed_with_chunked_encoding(echo):
    raw = raw_request(echo.port, http_request("GET", "/stream/3", [("Connection", "close")]))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert re.search(rb"(?im)^transfer-encoding: chunked\r?$", head)
    assert b"content-length" not in head.lower()
    assert body == b"8\r\nchunk 0\n\r\n8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n0\r\n\r\n"


def test_response_streamed_to_http10_client_is_close_delimited(echo):
    raw = raw_request(echo.port, http_request("GET", "/stream/3", version="HTTP/1.0"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.")
    assert b"chunked" not in head.lower()
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"


# -- HEAD ------------------------------------------------------------------------------------------


def test_head_has_same_headers_and_no_body(features):
    with RawConnection(features.port) as conn:
        # Pipelined: a body sent after the HEAD response would be parsed as the next response.
        conn.send(http_request("HEAD", "/fixed") + http_request("GET", "/fixed") + http_request("HEAD", "/fixed"))
        head1 = conn.read_response(b"HEAD")
        full = conn.read_response(b"GET")
        head2 = conn.read_response(b"HEAD")
        assert conn.recv_raw(0.3) == b"", "bytes after the last HEAD response"

    def comparable(response):
        return [(k.lower(), v) for k, v in response.headers if k.lower() != b"date"]

    assert full.body == b"hello world"
    assert head1.body == head2.body == b""
    assert comparable(head1) == comparable(full) == comparable(head2)
    assert head1.header(b"content-length") == b"11"
    assert head1.header(b"x-custom") == b"yes"


def test_head_raw_bytes_end_with_the_header_block(features):
    raw = raw_request(features.port, http_request("HEAD", "/fixed", [("Connection", "close")]))
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"\r\n\r\n")
    assert b"hello world" not in raw


# -- Expect: 100-continue -------------------------------------------------------------------------


def test_expect_100_continue_sent_when_app_reads_body(echo):
    with RawConnection(echo.port) as conn:
        # echo sleeps 0.5s before reading the body: no 100 may come before that.
        conn.send(http_request("POST", "/sleep/0.5", [("Content-Length", "5"), ("Expect", "100-continue")]))
        early = conn.recv_raw(0.3)
        assert early == b"", f"100 Continue sent before the app read the body: {early!r}"
        interim = conn.recv_raw(2.0)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        conn.send(b"hello")
        conn.conn.receive_data(interim)
        response = conn.read_response()
    assert response.informational == [100]
    assert response.status == 200
    assert _json(response.body)["body"] == "hello"


def test_expect_100_continue_not_sent_when_app_answers_without_reading(features):
    with RawConnection(features.port) as conn:
        conn.send(http_request("POST", "/noread", [("Content-Length", "5"), ("Expect", "100-continue")]))
        response = conn.read_response()
        assert response.status == 200
        assert response.informational == []
        assert response.body == b"not reading"
        # A client may still send the announced body; the connection stays usable.
        conn.send(b"hello" + http_request("GET", "/fixed"))
        again = conn.read_response()
    assert again.informational == []
    assert again.body == b"hello world"


# -- HTTP/1.0 ----------------------------------------------------------------------------------------


def test_http10_closes_by_default(echo):
    with RawConnection(echo.port) as conn:
        conn.send(http_request("GET", "/old", version="HTTP/1.0"))
        response = conn.read_response()
        assert response.status == 200
        assert _json(response.body)["http_version"] == "1.0"
        # keepalive is 1s: a close within 0.5s is HTTP/1.0's default, not the idle timer.
        assert conn.closed_by_server(0.5)


def test_http10_keepalive_request_is_answered_then_closed(echo):
    """HTTP/1.0 persistent connections are not offered, as in uvicorn's h11 mode.

    h11 implements HTTP/1.0 without keep-alive; RFC 9112 lets a server close after any
    response (for HTTP/1.0 the default, so no header is needed). The known difference from Gunicorn's
    own workers is listed in README.rst.
    """
    with RawConnection(echo.port) as conn:
        conn.send(http_request("GET", "/first", [("Connection", "keep-alive")], version="HTTP/1.0"))
        first = conn.read_response()
        assert first.status == 200
        # HTTP/1.0 closes by default: no header, or an explicit close; never keep-alive.
        assert (first.header(b"connection") or b"close").lower() == b"close"
        assert conn.closed_by_server(2.0)


# -- Date and Server -----------------------------------------------------------------------------------


def test_date_and_server_headers(echo):
    with RawConnection(echo.port) as conn:
        conn.send(http_request("GET", "/"))
        response = conn.read_response()
    names = [k.lower() for k, _ in response.headers]
    assert names.count(b"date") == 1
    assert names.count(b"server") == 1
    assert response.header(b"server")
    when = email.utils.parsedate_to_datetime(response.header(b"date").decode())
    assert abs(when.timestamp() - time.time()) < 5


def test_app_supplied_date_and_server_are_not_duplicated(features):
    with RawConnection(features.port) as conn:
        conn.send(http_request("GET", "/server-header"))
        response = conn.read_response()
    assert [v for k, v in response.headers if k.lower() == b"server"] == [b"custom/1.0"]
    assert [v for k, v in response.headers if k.lower() == b"date"] == [b"Thu, 01 Jan 2015 00:00:00 GMT"]


# -- request body flow control -----------------------------------------------------------------------


def test_large_upload_to_slow_reader_is_not_buffered_whole(features):
    size = 16 * 1024 * 1024
    with RawConnection(features.port, timeout=20) as conn:
        conn.send(http_request("POST", "/slowread", [("Content-Length", str(size))]))
        sender = threading.Thread(target=conn.sock.sendall, args=(b"u" * size,), daemon=True)
        sender.start()
        response = conn.read_response(timeout=20)
        sender.join(5)
    data = _json(response.body)
    assert data["total"] == size
    # The app sleeps 1s over its first receives while loopback could deliver all 16 MiB:
    # only flow control keeps a single receive() well below that.
    assert data["largest"] < 2 * 1024 * 1024, data
    assert data["receives"] > 8


# -- http.disconnect -----------------------------------------------------------------------------------


def _lines(path: Path, prefix: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith(prefix)]


def test_disconnect_delivered_while_streaming(disconnect):
    before = len(_lines(disconnect.marker, "stream"))
    with RawConnection(disconnect.port) as conn:
        conn.send(http_request("GET", "/stream"))
        got = b""
        while b"x" * 100 not in got:
            got += conn.recv_raw(2.0) or b""
    # The app waits in receive() until http.disconnect arrives, then writes the marker.
    assert wait_until(lambda: len(_lines(disconnect.marker, "stream")) > before, timeout=5)
    assert _lines(disconnect.marker, "stream")[-1] == "stream http.disconnect"


def test_disconnect_delivered_during_upload(disconnect):
    before = len(_lines(disconnect.marker, "upload"))
    with RawConnection(disconnect.port) as conn:
        conn.send(http_request("POST", "/upload", [("Content-Length", "100000")], b"0123456789"))
        time.sleep(0.2)
    assert wait_until(lambda: len(_lines(disconnect.marker, "upload")) > before, timeout=5)
    line = _lines(disconnect.marker, "upload")[-1]
    assert line.startswith("upload disconnected=True"), line


# -- request limits ---------------------------------------------------------------------------------------


def test_request_line_over_limit_gets_414(echo):
    ok = raw_request(echo.port, http_request("GET", "/" + "a" * 150, [("Connection", "close")]))
    assert ok.startswith(b"HTTP/1.1 200 ")
    too_long = raw_request(echo.port, http_request("GET", "/" + "a" * 250))
    assert too_long.startswith(b"HTTP/1.1 414 ")


def test_request_line_limit_boundary_matches_gunicorn(echo):
    # Gunicorn refuses a request line (without CRLF) longer than limit_request_line=200.
    line_200 = http_request("GET", "/" + "a" * 186, [("Connection", "close")])  # 4 + 187 + 9 = 200
    assert line_200.index(b"\r\n") == 200
    assert raw_request(echo.port, line_200).startswith(b"HTTP/1.1 200 ")
    assert raw_request(echo.port, http_request("GET", "/" + "a" * 187)).startswith(b"HTTP/1.1 414 ")


@pytest.mark.serial  # answer within 3 s
def test_incomplete_request_line_over_limit_gets_414_without_waiting(echo):
    started = time.monotonic()
    answer = raw_request(echo.port, b"GET /" + b"a" * 1000, timeout=5)
    assert answer.startswith(b"HTTP/1.1 414 ")
    assert time.monotonic() - started < 3


def test_too_many_header_fields_gets_431(echo):
    nine = [(f"X-H{i}", "v") for i in range(9)]  # + Host = 10 = the limit
    ok = raw_request(echo.port, http_request("GET", "/", [*nine[:8], ("Connection", "close")]))
    assert ok.startswith(b"HTTP/1.1 200 ")
    too_many = raw_request(echo.port, http_request("GET", "/", [*nine, ("X-Eleventh", "v")]))
    assert too_many.startswith(b"HTTP/1.1 431 ")


def test_header_field_over_size_limit_gets_431(echo):
    ok = raw_request(echo.port, http_request("GET", "/", [("X-Big", "v" * 80), ("Connection", "close")]))
    assert ok.startswith(b"HTTP/1.1 200 ")
    too_big = raw_request(echo.port, http_request("GET", "/", [("X-Big", "v" * 150)]))
    assert too_big.startswith(b"HTTP/1.1 431 ")


def test_header_field_size_boundary_matches_gunicorn(echo):
    # Gunicorn: len(b"X-Big: " + value) + len(b"\r\n") must not exceed limit_request_field_size=100.
    fits = raw_request(echo.port, http_request("GET", "/", [("X-Big", "v" * 91), ("Connection", "close")]))
    assert fits.startswith(b"HTTP/1.1 200 ")  # 7 + 91 + 2 = 100
    over = raw_request(echo.port, http_request("GET", "/", [("X-Big", "v" * 92)]))
    assert over.startswith(b"HTTP/1.1 431 ")  # 101


def test_server_keeps_serving_after_rejections(echo):
    raw_request(echo.port, http_request("GET", "/" + "a" * 250))
    raw_request(echo.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert httpx.get(echo.url + "/still-here").json()["path"] == "/still-here"


# -- application errors ----------------------------------------------------------------------------------


def test_exception_before_response_start_gives_500_and_traceback(crash):
    response = httpx.get(crash.url + "/before")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    log = crash.wait_for_log(r"Exception in ASGI application while handling GET /before")
    assert log
    text = crash.log()
    tail = text[text.index("while handling GET /before"):]
    assert "Traceback (most recent call last)" in tail
    assert "RuntimeError: boom before start" in tail


def test_exception_after_response_start_truncates_response(crash):
    raw = raw_request(crash.port, http_request("GET", "/after"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in body
    assert not body.endswith(b"0\r\n\r\n"), "a truncated response must not look complete"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(crash.url + "/after")
    crash.wait_for_log(r"RuntimeError: boom after start")


def test_app_returning_without_response_gives_500(crash):
    response = httpx.get(crash.url + "/silent")
    assert response.status_code == 500
    crash.wait_for_log(r"ASGI callable returned without starting a response")


def test_server_keeps_serving_after_app_errors(crash):
    for path in ("/before", "/silent"):
        httpx.get(crash.url + path)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(crash.url + "/after")
    response = httpx.get(crash.url + "/ok")
    assert (response.status_code, response.text) == (200, "fine")


# -- the ASGI scope -----------------------------------------------------------------------------------------


def test_scope_is_complete(echo):
    with RawConnection(echo.port) as conn:
        conn.send(http_request("GET", "/caf%C3%A9/a%2Fb?x=1&y=%20z", [("X-Mixed-Case", "Some Value")]))
        data = _json(conn.read_response().body)
    assert data["asgi"]["version"] == "3.0"
    assert re.fullmatch(r"2\.\d+", data["asgi"]["spec_version"])
    assert data["http_version"] == "1.1"
    assert data["method"] == "GET"
    assert data["scheme"] == "http"
    assert data["path"] == "/café/a/b"
    assert data["raw_path"] == "/caf%C3%A9/a%2Fb"
    assert data["query_string"] == "x=1&y=%20z"
    assert data["root_path"] == ""
    assert ["x-mixed-case", "Some Value"] in data["headers"]
    assert ["host", "test"] in data["headers"]
    assert all(name == name.lower() for name, _ in data["headers"])
    assert data["client"] == ["127.0.0.1", conn.local_port]
    assert data["server"] == ["127.0.0.1", echo.port]
    assert data["state_loop_id"] == data["loop_id"]


def test_scope_repeated_headers_kept_in_order(echo):
    with RawConnection(echo.port) as conn:
        conn.send(http_request("GET", "/", [("X-Dup", "1"), ("Accept", "a"), ("X-Dup", "2")]))
        headers = _json(conn.read_response().body)["headers"]
    assert [v for k, v in headers if k == "x-dup"] == ["1", "2"]


def test_scope_root_path(mode):
    server = _boot("tests.apps:echo", mode, "--root-path", "/api/")
    try:
        data = httpx.get(server.url + "/hello%20there?q=1").json()
    finally:
        server.stop()
    assert data["root_path"] == "/api"
    # As uvicorn does (and Starlette's routing expects): path and raw_path include root_path.
    assert data["path"] == "/api/hello there"
    assert data["raw_path"] == "/api/hello%20there"
    assert data["query_string"] == "q=1"


def test_connection_refused_never_happens_under_burst(echo):
    """Forty simultaneous connections on a 2-loop worker: every one is served."""
    results: list[int] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", echo.port), timeout=10) as s:
                s.sendall(http_request("GET", f"/burst/{i}", [("Connection", "close")]))
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            results.append(int(data.split(b" ", 2)[1]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert results == [200] * 40


# -- regressions from the code review -------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_idle_deadline_starts_once_an_unread_body_has_arrived(fast_path):
    """A body that arrives after the response (discarded) must not leave the connection without a deadline."""
    with serve("tests.apps:echo", "--keep-alive", "1", mode="threads", env={"POUNCE_FAST_PATH": fast_path}) as server:
        with RawConnection(server.port) as conn:
            conn.send(b"POST /status/200 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
            assert conn.read_response().status == 200
            conn.send(b"hello")
            assert conn.closed_by_server(4.0), "idle connection kept open past keepalive"


def test_error_after_the_response_does_not_break_the_next_request(mode):
    """A background task failing after the response must not close the request now on that connection."""
    with serve("tests.apps:background_raises", mode=mode) as server:
        with RawConnection(server.port) as conn:
            conn.send(http_request("GET", "/bg"))
            assert conn.read_response().body == b"bg"
            conn.send(http_request("GET", "/slow"))
            response = conn.read_response(timeout=5)
            assert (response.status, response.body) == (200, b"slow done")
        assert "background task failed after the response" in server.log()
