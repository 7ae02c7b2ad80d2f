"""h2c with prior knowledge behind a proxy that sends a PROXY header first (HAProxy's
``send-proxy`` with ``proto h2``), on the in-process rig.

The header is read as on HTTP/1.1 (http1/proxy.py: Gunicorn's rules), then the
preface decides: the client it names is every stream's ``scope["client"]``;
``forwarded_allow_ips`` is checked against the connecting peer (the proxy), as
for HTTP/1.1's forwarded headers.
"""

from __future__ import annotations

import json
from typing import Any

from tests.http2.rig_client import SETTINGS, Client

PROXY = {**SETTINGS, "proxy_protocol": "v1", "proxy_allow_ips": "127.0.0.1"}
HEADER = b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443\r\n"


async def whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"], "server": scope["server"], "version": scope["http_version"]})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


def test_a_proxy_header_then_the_preface_is_http2_for_the_client_it_names(make_rig):
    rig = make_rig(whoami, **PROXY)
    # With the preface in one read; alone, then the preface; in two reads, the second with the preface.
    for before in ((HEADER,), (HEADER, b""), (HEADER[:10], HEADER[10:])):
        client = Client(rig, before)
        stream = client.post(method="GET", end=True)
        assert client.status(stream) == 200, before
        assert json.loads(client.body(stream)) == {
            "client": ["203.0.113.7", 40000], "server": ["198.51.100.1", 443], "version": "2"}


def test_a_proxy_header_from_a_peer_not_allowed_is_403_over_http1(make_rig):
    rig = make_rig(whoami, **{**PROXY, "proxy_allow_ips": "10.0.0.1", "forwarded_allow_ips": "127.0.0.1"})
    conn = rig.connect()
    conn.send(HEADER)
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 403 ") and b"not in proxy_allow_ips" in out
    assert "not in proxy_allow_ips" in rig.log.text()


def test_a_proxy_header_then_http1_under_both_is_served_as_http1(make_rig):
    rig = make_rig(whoami, **{**PROXY, "http2_cleartext": "both"})
    conn = rig.connect()
    conn.send(HEADER + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 200 ") and b'"client": ["203.0.113.7", 40000]' in out
