"""Gunicorn's ``header_map`` (found by the settings review, session 7): it was not read.

A name with an underscore and one with a hyphen are different fields, but anything that
maps headers to WSGI-style keys (an ASGI-to-WSGI adapter, an app reading ``HTTP_X_AUTH``)
reads ``X_Auth`` as ``X-Auth``: a client could pass one for the other past a proxy that
sets only the hyphenated one. Gunicorn's ``-k asgi`` drops such headers by default, answers
400 with ``refuse``, passes them with ``dangerous``, and keeps a name listed in
``forwarder_headers`` from a peer in ``forwarded_allow_ips``. The same rule applies here to
every scope: HTTP/1.1 on both parsing paths, HTTP/2, WebSocket handshakes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.http2.rig_client import SETTINGS, Client

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nX_Auth_User: admin\r\nX-Auth-User: real\r\n\r\n"


async def names(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps([[n.decode(), v.decode()] for n, v in scope["headers"]]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def _headers(out: bytes) -> list[list[str]]:
    assert out.startswith(b"HTTP/1.1 200 "), out
    return json.loads(out.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("mapping", [None, "drop"])
def test_drop_is_the_default_on_both_parsing_paths(make_rig, fast, mapping):
    settings = {"header_map": mapping} if mapping else {}
    rig = make_rig(names, env={"POUNCE_FAST_PATH": "1" if fast else "0"}, **settings)
    conn = rig.connect()
    conn.send(REQUEST)
    assert _headers(conn.output()) == [["host", "t"], ["x-auth-user", "real"]]


def test_refuse_answers_400_and_logs_one_line(make_rig):
    rig = make_rig(names, header_map="refuse")
    conn = rig.connect()
    conn.send(REQUEST)
    out = conn.output()
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert b"x_auth_user" in out and b"header_map='refuse'" in out
    assert rig.log.text().count("header_map='refuse'") == 1


def test_dangerous_passes_them(make_rig):
    rig = make_rig(names, header_map="dangerous")
    conn = rig.connect()
    conn.send(REQUEST)
    assert _headers(conn.output()) == [["host", "t"], ["x_auth_user", "admin"], ["x-auth-user", "real"]]


@pytest.mark.parametrize(("peer", "kept"), [("127.0.0.1", True), ("203.0.113.9", False)])
def test_a_forwarder_header_from_a_trusted_peer_is_kept(make_rig, peer, kept):
    rig = make_rig(names, forwarder_headers="SCRIPT_NAME,X_TENANT", forwarded_allow_ips="127.0.0.1")
    conn = rig.connect(peername=(peer, 40000))
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nX_Tenant: blue\r\nX_Other: x\r\n\r\n")
    expected = [["host", "t"], ["x_tenant", "blue"]] if kept else [["host", "t"]]
    assert _headers(conn.output()) == expected


def test_trust_is_the_peers_address_alone(make_rig):
    """Gunicorn trusts a forwarder_headers name by the peer's address: with no
    secure_scheme_headers (nothing else to forward) a trusted peer's REMOTE_USER is kept."""
    rig = make_rig(names, secure_scheme_headers={}, forwarder_headers="REMOTE_USER", forwarded_allow_ips="127.0.0.1")
    conn = rig.connect()
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nRemote_User: alice\r\n\r\n")
    assert _headers(conn.output()) == [["host", "t"], ["remote_user", "alice"]]


def test_http2_drops_them_too(make_rig):
    rig = make_rig(names, **SETTINGS)
    client = Client(rig)
    stream = client.h2.get_next_available_stream_id()
    client.h2.send_headers(stream, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "t"),
                                    ("x_auth_user", "admin"), ("x-auth-user", "real")], end_stream=True)
    assert client.status(stream) == 200
    assert json.loads(client.body(stream)) == [["host", "t"], ["x-auth-user", "real"]]
