"""WebSocket cases: the same tests/ws_apps.py routes under uvicorn (``--ws wsproto``) and pounce_worker.

Each case drives one session with the ``websockets`` client (sync API) and
observes what a client and the app can tell apart: the handshake status,
headers (minus Date, Server and the per-connection Sec-WebSocket-Accept) and
denial body, the accepted subprotocol and extensions, every message received,
the close frame received (or none), and the app's own report of its
``websocket.disconnect`` and scope, written to the record directory.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from .cases import Ctx, case
from .servers import WS_MAX_SIZE

HOST = "127.0.0.1"
#: Headers that differ per connection or per second, never per server behaviour.
_VOLATILE = frozenset({"date", "server", "sec-websocket-accept"})


def _headers(headers: Any) -> dict[str, list[str]]:
    """Header name -> values (a diff then names the header that differs)."""
    out: dict[str, list[str]] = {}
    for name, value in headers.raw_items():
        if name.lower() not in _VOLATILE:
            out.setdefault(name.lower(), []).append(value)
    return out


def _close_view(exc: ConnectionClosed) -> dict[str, Any] | None:
    rcvd = exc.rcvd
    return None if rcvd is None else {"code": int(rcvd.code), "reason": rcvd.reason}


def session(ctx: Ctx, path: str, script: Callable[[ClientConnection], list[Any]] | None = None,
            record: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Open ``path``, run ``script`` (returns what it received), close; the observation of it all."""
    token = ctx.token() if record else None
    if token:
        path += ("&" if "?" in path else "?") + f"report={token}"
    obs: dict[str, Any] = {}
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("close_timeout", 5)
    try:
        with connect(f"ws://{HOST}:{ctx.port}{path}", proxy=None, **kwargs) as ws:
            obs["handshake"] = {"status": ws.response.status_code, "headers": _headers(ws.response.headers),
                                "subprotocol": ws.subprotocol}
            received: list[Any] = []
            try:
                received = (script or (lambda _ws: []))(ws)
            except ConnectionClosed as exc:
                obs["closed_by_server"] = _close_view(exc)
            obs["received"] = [r if isinstance(r, str) else {"bytes": len(r)} for r in received]
    except InvalidStatus as exc:
        response = exc.response
        obs["handshake"] = {"status": response.status_code, "headers": _headers(response.headers),
                            "body": bytes(response.body or b"").decode("latin-1")}
    if token:
        report = ctx.record(token)
        if report is not None:
            report.pop("pid", None)
        obs["app"] = report
    return obs


def _until_closed(ws: ClientConnection) -> list[Any]:
    out = []
    while True:
        out.append(ws.recv(timeout=10))


@case("ws_echo")
def _ws_echo(ctx: Ctx) -> dict[str, Any]:
    """Text, binary, empty and fragmented messages echoed; the app sees the client's 1000."""
    def script(ws: ClientConnection) -> list[Any]:
        out = []
        for message in ("hello", b"\x00\x01", "", ["frag", "mented"], [b"ab", b"cd"], "é ☃"):
            ws.send(message)
            out.append(ws.recv(timeout=10))
        return out

    return session(ctx, "/echo", script)


@case("ws_echo_root_path", flavor="root")
def _ws_root(ctx: Ctx) -> dict[str, Any]:
    """Under root_path /api (a proxy stripped it): the path and root_path the app sees."""
    return session(ctx, "/echo", lambda ws: [ws.send("x"), ws.recv(timeout=10)][1:])


@case("ws_subprotocol")
def _ws_subprotocol(ctx: Ctx) -> dict[str, Any]:
    """The app picks the first offered subprotocol; scope["subprotocols"] lists the offer."""
    return session(ctx, "/echo?subprotocol=first", subprotocols=["chat", "superchat"])


@case("ws_accept_headers")
def _ws_headers(ctx: Ctx) -> dict[str, Any]:
    """websocket.accept with extra headers, then a message and a close from the app."""
    return session(ctx, "/headers", _until_closed)


@case("ws_permessage_deflate")
def _ws_deflate(ctx: Ctx) -> dict[str, Any]:
    """The client offers permessage-deflate: negotiated, and a compressible message round-trips."""
    return session(ctx, "/echo", lambda ws: [ws.send("deflate me " * 5000), ws.recv(timeout=10)][1:])


@case("ws_no_compression")
def _ws_plain(ctx: Ctx) -> dict[str, Any]:
    """The client offers no extension: none in the 101."""
    return session(ctx, "/echo", lambda ws: [ws.send("plain"), ws.recv(timeout=10)][1:], compression=None)


@case("ws_server_close")
def _ws_server_close(ctx: Ctx) -> dict[str, Any]:
    """The app closes with 4001 and a reason; its next receive() is the disconnect."""
    return session(ctx, "/close?code=4001&reason=bye", _until_closed)


@case("ws_client_close")
def _ws_client_close(ctx: Ctx) -> dict[str, Any]:
    """The client closes with 4002 and a reason: the app's disconnect carries both."""
    def script(ws: ClientConnection) -> list[Any]:
        ws.send("one")
        out = [ws.recv(timeout=10)]
        ws.close(4002, "client bye")
        return out

    return session(ctx, "/echo", script)


@case("ws_push")
def _ws_push(ctx: Ctx) -> dict[str, Any]:
    """The app sends 20 messages without reading."""
    return session(ctx, "/push?n=20", lambda ws: [ws.recv(timeout=10) for _ in range(20)])


@case("ws_deny")
def _ws_deny(ctx: Ctx) -> dict[str, Any]:
    """websocket.http.response: 401 with headers and a body in two parts."""
    return session(ctx, "/deny", record=False)


@case("ws_deny_chunked")
def _ws_deny_chunked(ctx: Ctx) -> dict[str, Any]:
    """A denial without Content-Length."""
    return session(ctx, "/deny-chunked", record=False)


@case("ws_refuse_403")
def _ws_refuse(ctx: Ctx) -> dict[str, Any]:
    """websocket.close before accept: 403."""
    return session(ctx, "/refuse", record=False)


@case("ws_error_before_accept")
def _ws_error(ctx: Ctx) -> dict[str, Any]:
    """The app raises before deciding the handshake: 500."""
    return session(ctx, "/fail-before-accept", record=False)


@case("ws_max_size")
def _ws_max_size(ctx: Ctx) -> dict[str, Any]:
    """A message one byte over the limit: close 1009, the app's disconnect says 1009."""
    def script(ws: ClientConnection) -> list[Any]:
        ws.send(b"x" * WS_MAX_SIZE)
        out = [ws.recv(timeout=10)]
        ws.send(b"y" * (WS_MAX_SIZE + 1))
        out.append(ws.recv(timeout=10))
        return out

    return session(ctx, "/echo", script, compression=None, max_size=None)


@case("ws_app_returns")
def _ws_app_returns(ctx: Ctx) -> dict[str, Any]:
    """The app returns after accepting without sending websocket.close."""
    return session(ctx, "/return", _until_closed, record=False)


@case("ws_app_error_after_accept")
def _ws_app_error(ctx: Ctx) -> dict[str, Any]:
    """The app raises after accepting."""
    return session(ctx, "/fail-after-accept", _until_closed, record=False)


@case("ws_bad_version")
def _ws_bad_version(ctx: Ctx) -> dict[str, Any]:
    """Sec-WebSocket-Version 8: wsproto answers 426 with the version it speaks."""
    return _raw_handshake(ctx, ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 8"])


@case("ws_missing_key")
def _ws_missing_key(ctx: Ctx) -> dict[str, Any]:
    """No Sec-WebSocket-Key: 400."""
    return _raw_handshake(ctx, ["Sec-WebSocket-Version: 13"])


@case("ws_abrupt_close")
def _ws_abrupt(ctx: Ctx) -> dict[str, Any]:
    """The client's TCP connection ends without a close frame: the code the app's disconnect carries."""
    token = ctx.token()
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with socket.create_connection((HOST, ctx.port), timeout=10) as sock:
        sock.sendall((f"GET /echo?report={token} HTTP/1.1\r\nHost: compat.test\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                      ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            part = sock.recv(4096)
            if not part:
                break
            head += part
    report = ctx.record(token)
    if report is not None:
        report.pop("pid", None)
    return {"status_line": head.split(b"\r\n", 1)[0].decode("latin-1"), "app": report}


def _raw_handshake(ctx: Ctx, headers: list[str]) -> dict[str, Any]:
    from .client import Conn

    lines = ["GET /echo HTTP/1.1", "Host: compat.test", "Upgrade: websocket", "Connection: Upgrade", *headers]
    with Conn(ctx.port, 10) as conn:
        conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        resp = conn.try_response("GET", 10)
        open_after = conn.still_open()
    from .cases import norm

    return {"responses": [norm(resp)], "open_after": open_after}
