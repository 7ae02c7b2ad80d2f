"""``protocol = "uwsgi"`` (pounce_worker/uwsgi.py): raw uwsgi packets, Gunicorn's ``-k asgi``, a real nginx.

The raw-packet tests run against pounce_worker in both forced modes and, where
Gunicorn 27's ``-k asgi --protocol uwsgi`` behaves the same, against it too
(``server`` is parametrized over all three). The nginx tests run
``conf/nginx/pounce-uwsgi.conf`` in front of the worker, the way
tests/test_conf_nginx.py runs conf/nginx/pounce.conf.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apps import echo
from tests.conftest import MODES
from tests.harness import CONF, HOST, Gunicorn, parse_response, raw_request, require_tool, reserve_port

APP = "tests.http1.test_uwsgi:app"
SITE = CONF / "nginx" / "pounce-uwsgi.conf"
GUNICORN_ASGI = "gunicorn -k asgi"


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    """tests.apps:echo, plus ``/crash``, which raises before responding."""
    if scope["type"] == "http" and scope["path"] == "/crash":
        raise RuntimeError("crash on purpose")
    await echo(scope, receive, send)


def packet(env: dict[str, str] | dict[bytes, bytes], body: bytes = b"", modifier1: int = 0) -> bytes:
    block = b""
    for key, value in env.items():
        k = key.encode("latin-1") if isinstance(key, str) else key
        v = value.encode("latin-1") if isinstance(value, str) else value
        block += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return struct.pack("<BHB", modifier1, len(block), 0) + block + body


def nginx_like(method: str = "GET", uri: str = "/", body: bytes = b"", **extra: str) -> dict[str, str]:
    """The vars nginx's stock uwsgi_params sends (seen on the wire from Debian's nginx 1.22)."""
    path, _, query = uri.partition("?")
    env = {
        "QUERY_STRING": query, "REQUEST_METHOD": method, "CONTENT_TYPE": "",
        "CONTENT_LENGTH": str(len(body)) if body else "", "REQUEST_URI": uri, "PATH_INFO": path,
        "DOCUMENT_ROOT": "/var/www/html", "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http",
        "REMOTE_ADDR": "198.51.100.7", "REMOTE_PORT": "51234", "SERVER_PORT": "80",
        "SERVER_NAME": "pounce.example.com", "HTTP_HOST": "pounce.example.com", "HTTP_USER_AGENT": "curl/7.88.1",
    }
    env.update(extra)
    return env


def exchange(port: int, chunks: bytes | list[bytes], pause: float = 0.0) -> tuple[int, dict[str, str], bytes]:
    """Send the chunks (``pause`` apart, so they arrive as separate reads), read to EOF, parse."""
    parts = [chunks] if isinstance(chunks, bytes) else chunks
    with socket.create_connection((HOST, port), timeout=10) as sock:
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            sock.sendall(part)
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not piece:
                break
            data += piece
    status, headers, body = parse_response(data)
    if status and "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body


def headers_of(data: dict[str, object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in data["headers"]:  # type: ignore[attr-defined]
        out.setdefault(name, []).append(value)
    return out


def start(kind: str, *args: str) -> Gunicorn:
    if kind == GUNICORN_ASGI:
        server = Gunicorn(APP, "--protocol", "uwsgi", *args, worker_class="asgi", mode=None, loops_expected=False)
    else:
        server = Gunicorn(APP, "--protocol", "uwsgi", *args, mode=kind)
    return server.start()


@pytest.fixture(scope="module", params=[*MODES, GUNICORN_ASGI])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """A worker with protocol=uwsgi and the default uwsgi_allow_ips (127.0.0.1, ::1)."""
    started = start(request.param, "--limit-request-fields", "20", "--limit-request-field_size", "1000")
    started.kind = request.param  # type: ignore[attr-defined]
    try:
        yield started
    finally:
        started.stop()


def is_pounce(server: Gunicorn) -> bool:
    return server.kind != GUNICORN_ASGI  # type: ignore[attr-defined]


# -- raw packets ---------------------------------------------------------------------------------


def test_get_with_query(server: Gunicorn) -> None:
    status, _headers, body = exchange(server.port, packet(nginx_like("GET", "/hello/w%C3%B6rld?x=1&y=%20")
                                                          | {"PATH_INFO": "/hello/w\xc3\xb6rld"}))
    assert status == 200, server.output()
    data = json.loads(body)
    assert data["method"] == "GET"
    assert data["query_string"] == "x=1&y=%20"
    assert data["raw_path"] == "/hello/w%C3%B6rld", "REQUEST_URI's spelling, as Gunicorn"
    if is_pounce(server):
        assert data["path"] == "/hello/wörld", "decoded as UTF-8, as over HTTP"
    else:
        assert data["path"] == "/hello/w\xc3\xb6rld", "Gunicorn: PATH_INFO's bytes as latin-1"


def test_path_is_what_nginx_routed(server: Gunicorn) -> None:
    """PATH_INFO (after nginx's normalisation or a rewrite) is the path, as in Gunicorn."""
    status, _headers, body = exchange(server.port, packet(nginx_like("GET", "/a/../admin?q") | {"PATH_INFO": "/admin"}))
    assert status == 200
    data = json.loads(body)
    assert (data["path"], data["query_string"]) == ("/admin", "q")


def test_post_body_in_one_read(server: Gunicorn) -> None:
    body = b"name=pounce&x=" + b"y" * 5000
    env = nginx_like("POST", "/form", body, CONTENT_TYPE="application/x-www-form-urlencoded")
    status, _headers, reply = exchange(server.port, packet(env, body))
    assert status == 200, server.output()
    data = json.loads(reply)
    assert (data["method"], data["body_len"], data["body"]) == ("POST", len(body), body[:64].decode())
    assert headers_of(data)["content-type"] == ["application/x-www-form-urlencoded"]
    assert headers_of(data)["content-length"] == [str(len(body))]


def test_post_split_across_reads(server: Gunicorn) -> None:
    body = b"0123456789" * 30
    raw = packet(nginx_like("POST", "/split", body), body)
    # Inside the 4-byte header, inside a key, inside a value, at the head/body boundary, inside the body.
    head_size = len(raw) - len(body)
    cuts = [2, 9, 40, head_size, head_size + 100]
    parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    status, _headers, reply = exchange(server.port, parts, pause=0.05)
    assert status == 200, server.output()
    data = json.loads(reply)
    assert (data["path"], data["body_len"], data["body"]) == ("/split", len(body), body[:64].decode())


def test_headers_mapped(server: Gunicorn) -> None:
    env = nginx_like("GET", "/h", HTTP_X_REQUEST_ID="abc-123", HTTP_ACCEPT_LANGUAGE="fr", HTTP_COOKIE="a=1; b=2")
    status, _headers, reply = exchange(server.port, packet(env))
    assert status == 200
    headers = headers_of(json.loads(reply))
    assert headers["x-request-id"] == ["abc-123"]
    assert headers["accept-language"] == ["fr"]
    assert headers["cookie"] == ["a=1; b=2"]
    assert headers["host"] == ["pounce.example.com"]
    assert "content-length" not in headers or headers["content-length"] == [""]


def test_framing_vars_nginx_passes_through_are_dropped(server: Gunicorn) -> None:
    """nginx forwards the client's Transfer-Encoding and Expect with a CONTENT_LENGTH body (seen on the wire)."""
    body = b"abc"
    env = nginx_like("POST", "/te", body, CONTENT_TYPE="text/x", HTTP_TRANSFER_ENCODING="chunked",
                     HTTP_EXPECT="100-continue", HTTP_CONTENT_TYPE="text/x")
    status, _headers, reply = exchange(server.port, packet(env, body))
    assert status == 200, server.output()
    data = json.loads(reply)
    assert data["body"] == "abc"
    if is_pounce(server):
        headers = headers_of(data)
        assert headers["content-type"] == ["text/x"], "one Content-Type"
        assert "transfer-encoding" not in headers and "expect" not in headers


def test_remote_addr_from_an_allowed_peer(server: Gunicorn) -> None:
    status, _headers, reply = exchange(server.port, packet(nginx_like("GET", "/who")))
    assert status == 200
    client = json.loads(reply)["client"]
    if is_pounce(server):
        assert client == ["198.51.100.7", 51234]
    else:
        assert client[0] == "127.0.0.1", "Gunicorn keeps nginx's address"


def test_https_var_sets_the_scheme(server: Gunicorn) -> None:
    for extra, scheme in (({"HTTPS": "on"}, "https"), ({}, "http"), ({"wsgi.url_scheme": "https"}, "https")):
        status, _headers, reply = exchange(server.port, packet(nginx_like("GET", "/s", **extra)))
        assert status == 200
        assert json.loads(reply)["scheme"] == scheme, extra
    if is_pounce(server):
        status, _headers, reply = exchange(server.port, packet(nginx_like("GET", "/s", UWSGI_SCHEME="https")))
        assert json.loads(reply)["scheme"] == "https"
        status, _headers, reply = exchange(server.port, packet(nginx_like("GET", "/s", **{"wsgi.url_scheme": "ftp"})))
        assert json.loads(reply)["scheme"] == "http", "only http or https"


def test_app_crash_is_500(server: Gunicorn) -> None:
    status, _headers, _body = exchange(server.port, packet(nginx_like("GET", "/crash")))
    assert status == 500


def test_response_closes_the_connection(server: Gunicorn) -> None:
    """nginx's uwsgi module never reuses the connection; pounce says so and closes (Gunicorn keeps it)."""
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(packet(nginx_like("GET", "/one")))
        time.sleep(0.5)
        sock.settimeout(3)
        data = b""
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        except TimeoutError:
            pass
    status, headers, _body = parse_response(data)
    assert status == 200
    if is_pounce(server):
        assert headers.get("connection") == "close"
        assert "transfer-encoding" not in headers


BAD_PACKETS = {
    "unknown modifier1": (packet(nginx_like("GET", "/"), modifier1=5), 501, "modifier1=5"),
    "truncated vars": (struct.pack("<BHB", 0, 6, 0) + b"\x05\x00ab\x00\x00", 400, "truncated key"),
    "value with CRLF": (packet(nginx_like("GET", "/", HTTP_X_A="1\r\nTransfer-Encoding: chunked")), 400, "CR, LF"),
    "too many fields": (packet(nginx_like("GET", "/", **{f"HTTP_X_{i}": "v" for i in range(30)})), 431,
                        "limit_request_fields"),
    "field too long": (packet(nginx_like("GET", "/", HTTP_X_LONG="v" * 2000)), 431, "limit_request_field_size"),
}


GUNICORN_REFUSES = ("unknown modifier1", "truncated vars")


@pytest.mark.parametrize("case", list(BAD_PACKETS))
def test_bad_packet_closes_with_one_log_line(server: Gunicorn, case: str) -> None:
    raw, status, words = BAD_PACKETS[case]
    before = server.log().count("Invalid request from")
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR) if case == "truncated vars" else None
        sock.settimeout(3)
        data = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):  # Gunicorn keeps what it served open
            while piece := sock.recv(65536):
                data += piece
    if is_pounce(server):
        assert parse_response(data)[0] == status, data
        server.wait_for_log(re.escape(words), timeout=5)
        time.sleep(0.2)
        assert server.log().count("Invalid request from") == before + 1
    elif case in GUNICORN_REFUSES:
        assert data == b"", "Gunicorn closes without answering"
    else:
        assert parse_response(data)[0] == 200, "Gunicorn serves it: no limits, CR/LF in a header value"
    # The worker goes on serving.
    assert exchange(server.port, packet(nginx_like("GET", "/after")))[0] == 200


def test_peer_outside_uwsgi_allow_ips_is_refused(mode: str) -> None:
    server = start(mode, "--uwsgi-allow-from", "10.9.9.9")
    try:
        status, _headers, body = exchange(server.port, packet(nginx_like("GET", "/x")))
        assert status == 403, body
        server.wait_for_log(r"uwsgi request from 127\.0\.0\.1, not in uwsgi_allow_ips")
        assert server.log().count("Invalid request from") == 1
    finally:
        server.stop()


def test_gunicorn_also_refuses_a_peer_outside_uwsgi_allow_ips() -> None:
    """Gunicorn closes without answering (and logs at debug): same refusal, no status."""
    server = start(GUNICORN_ASGI, "--uwsgi-allow-from", "10.9.9.9")
    try:
        assert raw_request(server.port, packet(nginx_like("GET", "/x"))) == b""
        server.wait_for_log("not allowed")
    finally:
        server.stop()


def test_other_protocols_still_fail_the_boot() -> None:
    server = Gunicorn(APP, "--protocol", "fastcgi")
    assert server.boot_failure() != 0
    assert "protocol='fastcgi' is not supported" in server.output()
    server = Gunicorn(APP, "--protocol", "uwsgi", "--proxy-protocol", "v1")
    assert server.boot_failure() != 0
    assert "protocol='uwsgi' cannot be combined with proxy_protocol='v1'" in server.output()


# -- a real nginx with conf/nginx/pounce-uwsgi.conf ----------------------------------------------


def render_site(upstream: int, http_port: int) -> str:
    text = SITE.read_text()
    swaps = [("server 127.0.0.1:8000 ", f"server {HOST}:{upstream} "), ("listen 80;", f"listen {HOST}:{http_port};"),
             ("include uwsgi_params;", "include /etc/nginx/uwsgi_params;")]
    for old, new in swaps:
        assert text.count(old) == 1, f"{SITE} should contain {old!r} exactly once"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def nginx_in_front(upstream: int, directory: Path) -> Iterator[str]:
    binary = require_tool("nginx", "nginx-light", "/usr/sbin/nginx")
    directory.mkdir(parents=True, exist_ok=True)
    # nginx takes its port by number: reserved here until it stopped (nginx binds with
    # SO_REUSEADDR, so it can; nothing else takes the port meanwhile). See harness.reserve_port.
    reservation = reserve_port()
    port = reservation.getsockname()[1]
    (directory / "site.conf").write_text(render_site(upstream, port))
    (directory / "temp").mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    temp = directory / "temp"
    conf.write_text(
        f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log info;\nevents {{ worker_connections 64; }}\nhttp {{\n"
        f"    access_log {directory}/access.log;\n    client_body_temp_path {temp}/body;\n"
        f"    proxy_temp_path {temp}/proxy;\n    fastcgi_temp_path {temp}/fastcgi;\n"
        f"    uwsgi_temp_path {temp}/uwsgi;\n    scgi_temp_path {temp}/scgi;\n"
        f"    include {directory / 'site.conf'};\n}}\n"
    )
    import subprocess

    with open(directory / "stdout.log", "wb") as out:
        proc = subprocess.Popen([binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)],
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while True:
                assert proc.poll() is None, (directory / "error.log").read_text()
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "nginx did not listen"
                    time.sleep(0.05)
            yield f"http://{HOST}:{port}"
        finally:
            proc.terminate()
            proc.wait(10)
            reservation.close()


def test_behind_nginx_uwsgi_pass(mode: str, tmp_path: Path) -> None:
    server = start(mode)
    try:
        with nginx_in_front(server.port, tmp_path / "nginx") as url, httpx.Client(base_url=url, timeout=10) as client:
            r = client.get("/hello?x=1", headers={"Host": "pounce.example.com", "X-Custom": "yes"})
            assert r.status_code == 200, server.output()
            data = r.json()
            assert (data["method"], data["path"], data["query_string"]) == ("GET", "/hello", "x=1")
            headers = headers_of(data)
            assert headers["host"] == ["pounce.example.com"] and headers["x-custom"] == ["yes"]
            assert data["client"][0] == "127.0.0.1"  # REMOTE_ADDR: the client nginx served
            assert data["scheme"] == "http"
            # uwsgi_param in the site: a fixed var the worker maps like any HTTP_* var.
            assert headers["x-via-uwsgi"] == ["1"]

            body = b"p" * 200_000
            r = client.post("/upload", content=body, headers={"Content-Type": "application/octet-stream"})
            data = r.json()
            assert (r.status_code, data["body_len"]) == (200, len(body))
            assert headers_of(data)["content-type"] == ["application/octet-stream"]

            # Several in a row on one client connection; a streamed response without Content-Length.
            for i in range(5):
                r = client.get(f"/k/{i}")
                assert (r.status_code, r.json()["path"]) == (200, f"/k/{i}")
            r = client.get("/stream/3")
            assert r.text == "chunk 0\nchunk 1\nchunk 2\n", "no chunk markers: the close ends the body"
            assert client.get("/crash").status_code == 500
    except BaseException:
        print(server.output())
        raise
    finally:
        server.stop()
