"""Who may speak for a connection, on the in-process rig: found in review (session 6).

- Over uwsgi the ``HTTP_*`` values are the client's own headers, which nginx
  passes on as they came: a client's ``X-Forwarded-Proto`` must not set (nor
  downgrade) its scheme; the scheme comes from ``HTTPS`` alone, as in Gunicorn.
- h2c by ``Upgrade`` is for the connecting peer in ``forwarded_allow_ips`` (the
  proxy), never for the client a PROXY header names.
- Gunicorn's hooks and access log see ``req.path``, ``RAW_URI`` and ``PATH_INFO``
  as Gunicorn computes them: ``req.path`` is the path of an absolute-form target,
  without a fragment (a hook that gates on the path must not be bypassed by
  ``GET http://host/admin``); ``RAW_URI`` is the target as sent; ``PATH_INFO``
  is below ``SCRIPT_NAME``.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest


async def echo_scope(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"scheme": scope["scheme"], "path": scope["path"], "version": scope["http_version"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def uwsgi_packet(**extra: str) -> bytes:
    env = {"QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
           "REQUEST_URI": "/", "PATH_INFO": "/", "REQUEST_SCHEME": "http", "REMOTE_ADDR": "198.51.100.7",
           "REMOTE_PORT": "51234", "SERVER_PORT": "80", "HTTP_HOST": "example.com", **extra}
    block = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
                     for k, v in env.items())
    return struct.pack("<BHB", 0, len(block), 0) + block


@pytest.mark.parametrize("extra, scheme", [({"HTTP_X_FORWARDED_PROTO": "https"}, "http"),
                                           ({"HTTPS": "on", "HTTP_X_FORWARDED_PROTO": "http"}, "https")])
def test_a_uwsgi_clients_own_forwarded_proto_does_not_set_its_scheme(make_rig, extra, scheme):
    rig = make_rig(echo_scope, protocol="uwsgi")
    conn = rig.connect()  # 127.0.0.1: nginx, in uwsgi_allow_ips and forwarded_allow_ips
    conn.send(uwsgi_packet(**extra))
    assert json.loads(conn.output().split(b"\r\n\r\n", 1)[1])["scheme"] == scheme


UPGRADE = (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: " + base64.urlsafe_b64encode(b"").rstrip(b"=") + b"\r\n\r\n")


@pytest.mark.parametrize("header", [b"", b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\n"])
def test_h2c_upgrade_trust_is_the_connecting_peers(make_rig, header):
    rig = make_rig(echo_scope, http_protocols="h2,h1", http2_cleartext="upgrade", forwarded_allow_ips="127.0.0.1",
                   proxy_protocol="v1", proxy_allow_ips="127.0.0.1")
    conn = rig.connect()  # the proxy, at 127.0.0.1
    conn.send(header + UPGRADE)
    assert conn.output().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


@pytest.mark.parametrize("target", [b"http://x/admin?a=1", b"/admin#frag"])
def test_hooks_see_gunicorns_req_path(make_rig, fast, target):
    seen: list[tuple[str, str]] = []
    rig = make_rig(echo_scope, fast_path=fast, pre_request=lambda worker, req: seen.append((req.path, req.fragment)))
    conn = rig.connect()
    conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(conn.output().split(b"\r\n\r\n", 1)[1])["path"] == "/admin"
    assert seen == [("/admin", "frag" if b"#" in target else "")]


@pytest.mark.parametrize("target, env, want", [
    # As Gunicorn's sync worker: RAW_URI is the target as sent, PATH_INFO the path below SCRIPT_NAME.
    (b"http://x/a?b=1", {}, {"RAW_URI": "http://x/a?b=1", "PATH_INFO": "/a", "SCRIPT_NAME": ""}),
    (b"/app/a", {"SCRIPT_NAME": "/app"}, {"RAW_URI": "/app/a", "PATH_INFO": "/a", "SCRIPT_NAME": "/app"}),
])
def test_post_request_and_the_access_log_see_gunicorns_environ(make_rig, target, env, want):
    seen: list[dict[str, str]] = []

    def post_request(worker: Any, req: Any, environ: dict[str, str], resp: Any) -> None:
        seen.append({key: environ[key] for key in want})

    rig = make_rig(echo_scope, env=env, post_request=post_request)
    conn = rig.connect()
    conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 200 " in conn.output()
    assert seen == [want]
