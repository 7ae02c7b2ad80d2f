"""Taking over an HTTP/1.1 connection whose request asks for a WebSocket."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .session import AVAILABLE, WebSocketSession

if TYPE_CHECKING:
    from ..http1.connection import HTTPConnection


def wants_upgrade(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request asks for a WebSocket, by uvicorn's rule.

    ``Connection`` lists ``upgrade`` and ``Upgrade`` is ``websocket``; wsproto
    then checks the rest (GET, ``Sec-WebSocket-Key``, version 13, Host) and
    answers 400 or 426 itself, as it does under uvicorn. Names are lower-case
    (scope headers).
    """
    upgrade = connection = False
    for name, value in headers:
        if name == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
        elif name == b"connection":
            connection = connection or b"upgrade" in (t.strip().lower() for t in value.split(b","))
    return upgrade and connection


def upgrade(connection: HTTPConnection, scope: dict[str, Any], target: bytes,
            raw_headers: list[tuple[bytes, bytes]]) -> bool:
    """Take over ``connection``'s transport for a WebSocket handshake; False when not one.

    ``scope`` is the HTTP scope ``start_request`` built (limits, path,
    root_path and trusted forwarding already applied); bytes the client sent
    after the request head are still in h11's buffer and become the session's.
    """
    if not AVAILABLE or not wants_upgrade(scope["headers"]):
        return False
    connection.release()  # responses to requests pipelined before the handshake go first
    session = WebSocketSession(connection, scope, target)
    # HTTP is over on this connection: its methods become no-ops (h11 is left mid-request,
    # and its pause/resume must not touch the transport the session now drives).
    connection.closed = True
    connection.server.connection_upgraded(connection, session)
    connection.transport.set_protocol(session)
    session.start(raw_headers, connection.conn.trailing_data[0])
    return True




