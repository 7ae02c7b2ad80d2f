"""What a user's app or config relies on under Gunicorn's ``-k asgi``, checked under pounce_worker.

Issue 15 item 3. Each test runs a real gunicorn master with pounce_worker and, where
the behaviour can be observed, the same requests against ``-k asgi`` (Gunicorn 27's own
ASGI worker), so the agreement, or the documented difference, is shown rather than
claimed. The findings are listed in docs/settings.rst, "Compared with Gunicorn's -k asgi".
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.conftest import MODES
from tests.harness import (
    HOST,
    Gunicorn,
    build_request,
    exchange,
    parse_response,
    read_until_close,
    running,
)
from tests.parity_apps import BODY
from tests.test_settings_logging import _drain_udp, _udp_listener
from tests.test_settings_tls import certs  # noqa: F401 - the module's certificate fixture

PROBE = "tests.parity_apps:scope_probe"
HINTS = "tests.parity_apps:early_hints"
LINK_LINES = (b"link: </style.css>; rel=preload; as=style\r\n"
              b"link: </app.js>; rel=preload; as=script\r\n")
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\n" + LINK_LINES + b"\r\n"


def gunicorn_asgi(app: str, *args: str, **kwargs: object) -> Gunicorn:
    """Gunicorn 27's ``-k asgi`` serving ``app``: the worker users migrate from."""
    return Gunicorn(app, *args, worker_class="asgi", mode=None, loops_expected=False, **kwargs)  # type: ignore[arg-type]


def raw(port: int, data: bytes, timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=HOST)
        sock.sendall(data)
        out, _ = read_until_close(sock, timeout)
    return out


# -- 1. scope keys and extensions ------------------------------------------------------------------


def _scope(port: int, target: str, tls: ssl.SSLContext | None = None) -> dict:
    out = raw(port, build_request(target), tls=tls)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out
    return json.loads(body)


def _ws_scope(port: int, target: str) -> dict:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    out = raw(port, request)
    head, _, frames = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), out
    length, offset = frames[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(frames[2:4], "big"), 4
    return json.loads(frames[offset:offset + length])


#: Scope keys whose value both workers must give alike for the same request.
SAME = ("type", "asgi", "http_version", "method", "scheme", "query_string", "headers", "root_path",
        "state", "subprotocols")


@pytest.fixture(scope="module")
def probes() -> Iterator[tuple[Gunicorn, Gunicorn]]:
    ours = Gunicorn(PROBE, "--root-path", "/mnt", mode="processes")
    theirs = gunicorn_asgi(PROBE, "--root-path", "/mnt")
    with running(ours, theirs):
        yield ours, theirs


@pytest.mark.parametrize("target", ["/plain", "/q?a=1&b=%20c", "/sp%20ace/x"])
def test_http_scope_matches_gunicorn_asgi(probes, target):
    ours, theirs = (_scope(server.port, target) for server in probes)
    # The same keys, of the same types, apart from the extensions -k asgi has none of on HTTP/1.1.
    assert set(ours) - {"extensions"} == set(theirs), (ours, theirs)
    assert {k: v for k, v in ours["_types"].items() if k != "extensions"} == theirs["_types"]
    for key in SAME:
        assert ours.get(key) == theirs.get(key), key
    assert ours["state"] == {"from_lifespan": "yes"}
    assert ours["client"][0] == theirs["client"][0] == HOST
    assert ours["server"] == [HOST, probes[0].port] and theirs["server"] == [HOST, probes[1].port]
    # Intended difference (README "From -k asgi"): root_path is prepended to path and raw_path,
    # the ASGI spec's reading (uvicorn's); -k asgi leaves them without it.
    assert ours["path"] == "/mnt" + theirs["path"] and ours["raw_path"] == "/mnt" + theirs["raw_path"]
    # Extensions: pounce_worker advertises what it implements; -k asgi advertises nothing on
    # HTTP/1.1, though it accepts http.response.informational.
    assert ours["extensions"] == {"http.response.pathsend": {}, "http.response.early_hint": {}}
    assert "extensions" not in theirs


def test_websocket_scope_matches_gunicorn_asgi(probes):
    ours, theirs = (_ws_scope(server.port, "/ws?x=1") for server in probes)
    assert set(ours) - {"extensions"} == set(theirs), (ours, theirs)
    for key in SAME:
        if key != "headers":  # the client's random Sec-WebSocket-Key differs
            assert ours.get(key) == theirs.get(key), key
    assert ours["scheme"] == "ws" and ours["subprotocols"] == []
    assert ours["extensions"] == {"websocket.http.response": {}}
    assert "extensions" not in theirs


def test_tls_scope_matches_gunicorn_asgi(certs):  # noqa: F811
    args = ("--certfile", str(certs["server.pem"]), "--keyfile", str(certs["server.key"]))
    ours, theirs = Gunicorn(PROBE, *args, mode="processes"), gunicorn_asgi(PROBE, *args)
    tls = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    with running(ours, theirs):
        scopes = [_scope(server.port, "/tls", tls=tls) for server in (ours, theirs)]
    assert scopes[0]["scheme"] == scopes[1]["scheme"] == "https"
    # Neither worker offers the ASGI "tls" extension (client certificate, cipher...).
    assert "tls" not in scopes[0]["extensions"] and "extensions" not in scopes[1]


# -- 2. 103 Early Hints ---------------------------------------------------------------------------

#: (mode, POUNCE_FAST_PATH, compression and Server-Timing on)
VARIANTS = [(m, fast, False) for m in MODES for fast in ("1", "0")] + [("threads", f, True) for f in ("1", "0")]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"{v[0]}-fast{v[1]}{'-gzip-timing' if v[2] else ''}")
def hints_server(request) -> Iterator[tuple[Gunicorn, bool]]:
    mode, fast, extras = request.param
    env = {"POUNCE_FAST_PATH": fast}
    if extras:
        env.update(POUNCE_COMPRESSION="gzip", POUNCE_SERVER_TIMING="1")
    with running(Gunicorn(HINTS, mode=mode, env=env)) as (server,):
        yield server, extras


def _split(out: bytes) -> tuple[list[bytes], bytes]:
    """The 1xx heads (each with its CRLF CRLF) before the final response, and that response."""
    informational = []
    while re.match(rb"HTTP/1\.1 1\d\d ", out):
        end = out.index(b"\r\n\r\n") + 4
        informational.append(out[:end])
        out = out[end:]
    return informational, out


def test_early_hints_before_the_response(hints_server):
    server, extras = hints_server
    informational, final = _split(raw(server.port, build_request("/")))
    assert informational == [EARLY_HINTS]
    assert final.startswith(b"HTTP/1.1 200 OK\r\n"), final
    assert parse_response(final)[2] == BODY
    if extras:  # Server-Timing goes on the final response only
        assert b"server-timing:" in final.lower()


def test_two_early_hints_and_the_spec_message(hints_server):
    server, _ = hints_server
    informational, final = _split(raw(server.port, build_request("/two")))
    second = b"HTTP/1.1 103 Early Hints\r\nlink: </app.js>; rel=preload; as=script\r\n\r\n"
    assert informational == [EARLY_HINTS, second]
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    # The ASGI spec's http.response.early_hint: its links become Link headers.
    informational, final = _split(raw(server.port, build_request("/spec")))
    assert informational == [EARLY_HINTS] and final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert parse_response(raw(server.port, build_request("/advertised")))[2] == b"yes"


def test_early_hints_on_a_keepalive_connection_and_head(hints_server):
    server, _ = hints_server
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(build_request("/stream", close=False))
        out = b""
        while not out.endswith(b"0\r\n\r\n"):
            out += sock.recv(65536)
        informational, final = _split(out)
        assert informational == [EARLY_HINTS] and b"transfer-encoding: chunked" in final.lower()
        sock.sendall(build_request("/", method="HEAD"))
        out, _ = read_until_close(sock, 10)
    informational, final = _split(out)
    assert informational == [EARLY_HINTS]
    head, _, body = final.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b""


def test_no_early_hints_to_an_http10_client(hints_server):
    server, _ = hints_server
    request = build_request("/").replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    out = raw(server.port, request)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b" 103 " not in out, out


def test_early_hints_after_the_response_started_is_refused(hints_server):
    server, _ = hints_server
    informational, final = _split(raw(server.port, build_request("/after-start")))
    assert informational == [] and b" 103 " not in final
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert parse_response(final)[2] == (b"refused: ASGI: 'http.response.informational' sent after "
                                        b"'http.response.start': an informational (1xx) response must "
                                        b"come before the final one"), final


def test_compressed_response_after_early_hints():
    with running(Gunicorn(HINTS, mode="processes", env={"POUNCE_COMPRESSION": "gzip"})) as (server,):
        out = raw(server.port, build_request("/", headers=[("Accept-Encoding", "gzip")]))
    informational, final = _split(out)
    assert informational == [EARLY_HINTS]
    status, headers, body = parse_response(final)
    assert status == 200 and headers["content-encoding"] == "gzip", final
    assert gzip.decompress(body) == BODY


def test_early_hints_agree_with_gunicorn_asgi():
    """The same client reads the same 103 then 200 from both; the differences are stated."""
    with running(Gunicorn(HINTS, mode="processes"), gunicorn_asgi(HINTS)) as servers:
        results = []
        for server in servers:
            plain = _split(raw(server.port, build_request("/")))
            old = raw(server.port, build_request("/").replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1))
            advertised = parse_response(raw(server.port, build_request("/advertised")))[2]
            late = _split(raw(server.port, build_request("/after-start")))
            results.append((plain, old, advertised, late))
    (ours, ours_10, ours_ad, ours_late), (theirs, theirs_10, theirs_ad, theirs_late) = results
    assert ours[0] == [EARLY_HINTS]
    assert theirs[0] == [EARLY_HINTS]
    assert ours[1].startswith(b"HTTP/1.1 200") and theirs[1].startswith(b"HTTP/1.1 200")
    # Neither sends a 1xx to an HTTP/1.0 client (RFC 9110 §15.2).
    assert b" 103 " not in ours_10 and b" 103 " not in theirs_10
    # Difference: -k asgi does not advertise the extension; pounce_worker advertises the spec's.
    assert (ours_ad, theirs_ad) == (b"yes", b"no")
    # After the start neither writes the 1xx; pounce_worker raises in send() (the app may catch it),
    # -k asgi lets send() return and raises once the app returns.
    assert ours_late[0] == theirs_late[0] == []
    assert parse_response(ours_late[1])[2].endswith(b"must come before the final one")
    assert parse_response(theirs_late[1])[2] == b"accepted"


# -- 3. lifespan ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("app", "args"), [("tests.apps:startup_fails", ()),
                                           ("tests.apps:no_lifespan", ("--asgi-lifespan", "on"))])
def test_lifespan_startup_failure_is_a_boot_error_in_both(app, args):
    """startup.failed (any mode), or no lifespan support under 'on': both exit with the boot-error code."""
    codes = []
    for server in (Gunicorn(app, *args, mode="processes"), gunicorn_asgi(app, *args)):
        codes.append(server.boot_failure(30))
    assert codes == [3, 3], codes


# -- 4. http_parser ---------------------------------------------------------------------------------


def test_http_parser_fast_is_reported_not_silently_ignored():
    """pounce_worker parses with its own fast path and h11: gunicorn_h1c is never used."""
    with running(Gunicorn(PROBE, "--http-parser", "fast", mode="processes")) as (server,):
        assert exchange(server.port, build_request("/"))[0] == 200
        server.wait_for_log(r"http_parser='fast' ignored")
    with running(Gunicorn(PROBE, "--http-parser", "python", mode="processes")) as (server,):
        assert exchange(server.port, build_request("/"))[0] == 200
        assert "http_parser='" not in server.log()


# -- 5. statsd ----------------------------------------------------------------------------------------


def test_statsd_request_metrics_compared_with_gunicorn_asgi():
    """pounce_worker sends the request metrics with or without an access log; -k asgi only with one."""
    got = {}
    makers = {"pounce": lambda *a: Gunicorn(PROBE, *a, mode="processes"), "asgi": lambda *a: gunicorn_asgi(PROBE, *a)}
    for name, make in makers.items():
        for accesslog in (False, True):
            with _udp_listener() as udp:
                args = ["--statsd-host", f"{HOST}:{udp.getsockname()[1]}", "--statsd-prefix", "pfx"]
                if accesslog:
                    args += ["--access-logfile", os.devnull]
                with running(make(*args)) as (server,):
                    for _ in range(2):
                        assert exchange(server.port, build_request("/"))[0] == 200
                    lines = _drain_udp(udp, lambda lines: sum(
                        line.startswith("pfx.gunicorn.request.status.200") for line in lines) >= 2, timeout=3)
            got[name, accesslog] = sorted({line.split(":")[0] for line in lines if ".request" in line})
    metrics = ["pfx.gunicorn.request.duration", "pfx.gunicorn.request.status.200", "pfx.gunicorn.requests"]
    assert got["pounce", True] == got["asgi", True] == metrics, got
    assert got["pounce", False] == metrics, got
    assert got["asgi", False] == [], got  # Gunicorn's ASGI worker calls access() only with an access log

