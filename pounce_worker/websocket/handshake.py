"""The WebSocket handshake as the app decides it: accept, refuse (403) or an HTTP denial response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..asgi import ClientDisconnected, Message, defaults
from ..http1.errors import error_page
from . import deflate

try:
    from wsproto.events import (
        AcceptConnection,
        RejectConnection,
        RejectData,
        Request,
    )
    from wsproto.extensions import PerMessageDeflate
    from wsproto.utilities import RemoteProtocolError
except ImportError:  # pragma: no cover - session.AVAILABLE tells the worker
    pass

if TYPE_CHECKING:
    from .session import WebSocketSession


def start(self: WebSocketSession, raw_headers: list[tuple[bytes, bytes]], pending: bytes) -> None:
    """Check the handshake with wsproto and start the app, or answer 400/426 and close."""
    transport = self.transport
    if not transport.is_reading():
        transport.resume_reading()  # the HTTP side may have paused it; the session decides now
    try:
        if self.method != "GET":
            # wsproto's upgrade entry point assumes GET; its own parser would refuse this.
            raise RemoteProtocolError("Request method must be GET", event_hint=RejectConnection())
        self.ws.initiate_upgrade_connection(raw_headers, self.target)
        request = next(event for event in self.ws.events() if isinstance(event, Request))
    except RemoteProtocolError as exc:
        self.log.warning(
            "Invalid WebSocket handshake from ip=%s: %s", self.client[0] if self.client else "-", exc
        )
        self.server.request_rejected()
        self.handshake_done = True
        self._write(self.ws.send(exc.event_hint))  # type: ignore[arg-type]
        self._close_transport()
        return
    self.scope["subprotocols"] = list(request.subprotocols)
    self.early += pending
    self.app_done = False
    self.server.spawn(self.run())


def default_headers(self: WebSocketSession, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The app's headers, lower-cased, after Server and Date unless the app set them."""
    own = [(bytes(name).lower(), bytes(value)) for name, value in headers]
    return defaults.default_headers(self.server, own) + own


def accept(self: WebSocketSession, message: Message) -> None:
    subprotocol = message.get("subprotocol")
    if subprotocol is not None and subprotocol not in self.scope["subprotocols"]:
        raise RuntimeError(
            f"ASGI: 'websocket.accept' subprotocol {subprotocol!r} was not offered by the client "
            f"(offered: {self.scope['subprotocols']!r})"
        )
    headers = self._default_headers(list(message.get("headers") or ()))
    extensions = []
    if self.config.ws_per_message_deflate:
        self.deflate = PerMessageDeflate()
        extensions.append(self.deflate)
    data = self.ws.send(
        AcceptConnection(subprotocol=subprotocol, extensions=extensions, extra_headers=headers)  # type: ignore[arg-type]
    )
    self.handshake_done = self.accepted = True
    ext = self.deflate
    if ext is not None and ext.enabled():  # our frames compressed here too (deflate.py), when it can
        self.fast_out = self.fast and deflate.USABLE
        self.out_deflate = ext if self.fast_out else None
    else:
        self.fast_out = self.fast
    self.status = 101
    self.response_headers = headers
    self.server.request_done()
    self._write(data)
    early, self.early = bytes(self.early), bytearray()
    if self.stopping:
        self._close(1012, "")
        return
    self._schedule_ping()
    if early:
        self._feed(early)
    self._queue_has_room()


def refuse(self: WebSocketSession) -> None:
    """``websocket.close`` before accepting: 403, as the spec asks and uvicorn answers."""
    self.handshake_done = True
    self.close_sent = True
    self.status = 403
    self.response_headers = self._default_headers([])
    self.server.request_done()
    self._disconnected(1006, "")
    self._write(self.ws.send(RejectConnection(status_code=403, headers=self.response_headers)))
    self._close_transport()


def deny(self: WebSocketSession, message: Message) -> None:
    status = message.get("status")
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise TypeError(f"ASGI: 'websocket.http.response.start' status must be an int 100-599, got {status!r}")
    headers = self._default_headers(list(message.get("headers") or ()))
    data = self.ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
    self.handshake_done = self.denying = True
    self.status = status
    self.response_headers = headers
    self.server.request_done()
    self._write(data)


def deny_body(self: WebSocketSession, message: Message) -> None:
    body = message.get("body", b"")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"ASGI: 'websocket.http.response.body' body must be bytes, got {type(body).__name__}")
    more = bool(message.get("more_body", False))
    if self.lost:
        raise ClientDisconnected("the client disconnected")
    self.sent += len(body)
    self._write(self.ws.send(RejectData(data=bytes(body), body_finished=not more)))
    if not more:
        self.denying = False
        self.close_sent = True
        self._disconnected(1006, "")
        self._close_transport()


def send_500(self: WebSocketSession) -> None:
    """The app failed before deciding the handshake: a plain 500, as for HTTP.

    Written by hand rather than through wsproto: an accept that h11 refused
    (an invalid header from the app) leaves wsproto past the state where it
    could still reject.
    """
    self.handshake_done = True
    if self.lost:
        return
    body = b"Internal Server Error"
    server_fields = defaults.default_headers(self.server, [])
    self.status = 500
    self.response_headers = [
        *server_fields,
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"connection", b"close"),
        (b"content-length", b"%d" % len(body)),
    ]
    self.sent = len(body)
    self._write(error_page(500, body, b"".join(b"%s: %s\r\n" % pair for pair in server_fields)))
    self._close_transport()
