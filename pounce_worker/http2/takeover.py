"""Turning an HTTP/1.1 connection into HTTP/2: ALPN, prior knowledge, ``Upgrade: h2c``.

Gunicorn 27's rules (``gunicorn/http2/negotiation.py``): over TLS, ALPN
decides; over cleartext, ``http2_cleartext`` names the mechanisms, and only
peers in ``forwarded_allow_ips`` (the TLS-terminating proxy) may use them:
everyone else is served HTTP/1.1 as if it were ``off``. With ``prior-knowledge``
alone, a trusted peer that does not open with the preface gets 400 (it is
expected to speak HTTP/2; a silent downgrade would hide a misconfiguration);
with ``both``, its HTTP/1.1 request may be an upgrade and is served.

The HTTP/1.1 connection calls ``take`` once from ``connection_made`` and
``upgrade`` for a parsed request that may be an h2c upgrade (h11 path only:
the fast path hands every ``Upgrade`` request to h11). Its hot path pays
nothing else: a prior-knowledge peer's first bytes are read here, by
``PrefaceSniffer``, before HTTPConnection sees any, and h2 itself is imported
only once a connection turns to HTTP/2.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any

from ..asgi import Rejection
from .headers import CONNECTION_SPECIFIC

if TYPE_CHECKING:
    from ..http1.connection import HTTPConnection
    from .connection import H2Connection

#: RFC 9113 §3.4: what a prior-knowledge client sends first.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
UPGRADE_101 = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
#: Largest request body an h2c upgrade request may carry (Gunicorn's H2C_UPGRADE_BODY_LIMIT).
UPGRADE_BODY_LIMIT = 65536


def take(connection: HTTPConnection) -> bool:
    """At ``connection_made``: hand the transport to HTTP/2 (ALPN) or to the preface sniffer.

    False when the connection stays HTTP/1.1 (then it registers itself as usual).
    """
    config = connection.config
    transport = connection.transport
    if connection.scheme == "https":
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            return False
        _become_h2(connection, b"")
        return True
    if not config.h2c_prior_knowledge or not connection.trusted:
        return False
    sniffer = PrefaceSniffer(connection)
    transport.set_protocol(sniffer)
    connection.server.connection_opened(sniffer)  # type: ignore[arg-type]
    return True


def _become_h2(connection: HTTPConnection, data: bytes, replacing: Any = None) -> H2Connection:
    from .connection import H2Connection  # imports h2: only once a connection speaks HTTP/2

    h2conn = H2Connection(connection.server, connection.transport, connection.client, connection.local,
                          connection.scheme, connection.trusted)
    connection.closed = True
    connection.transport.set_protocol(h2conn)
    h2conn.start(data, replacing)
    return h2conn


class PrefaceSniffer(asyncio.Protocol):
    """A trusted cleartext peer's first bytes: the HTTP/2 preface, or HTTP/1.1 (or a 400)."""

    def __init__(self, connection: HTTPConnection) -> None:
        self.connection = connection
        self.buffer = b""
        self.closed = False
        timeout = connection.config.header_timeout or connection.config.keepalive
        self.deadline = connection.server.deadline_base + timeout
        self.transport = connection.transport

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection.proxy_buffer is not None:
            # proxy_protocol: the proxy's PROXY header comes first, whatever protocol follows
            # (HAProxy's ``send-proxy`` with ``proto h2``); the client it names is the stream's.
            try:
                data = connection.strip_proxy_header(data)
            except Rejection as exc:
                self._hand_over(h2=False, rejection=exc)
                return
            if not data:
                return
        buffer = self.buffer = self.buffer + data
        if len(buffer) < len(PREFACE) and PREFACE.startswith(buffer):
            return  # a prefix of the preface so far: wait for the rest (the deadline bounds it)
        if buffer.startswith(PREFACE):
            self._hand_over(h2=True)
        else:
            self._hand_over(h2=False)

    def _hand_over(self, h2: bool, rejection: Rejection | None = None) -> None:
        connection = self.connection
        server = connection.server
        self.closed = True
        self.deadline = 0.0
        if h2:
            _become_h2(connection, self.buffer, replacing=self)
            return
        server.connection_upgraded(self, connection)  # type: ignore[arg-type]
        self.transport.set_protocol(connection)
        if rejection is not None:
            connection.reject(rejection.status, str(rejection))
            return
        if connection.config.http2_cleartext == "prior-knowledge":
            connection.reject(400, "expected the HTTP/2 connection preface (http2_cleartext='prior-knowledge')")
            return
        connection._arm_header_timer()
        if self.buffer:
            connection.data_received(self.buffer)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.connection.server.connection_closed(self)  # type: ignore[arg-type]

    def on_deadline(self) -> None:
        self.deadline = 0.0
        if self.buffer:
            self._hand_over(h2=False)  # an incomplete preface or request: HTTP/1.1's 400/408 rules
        else:
            self.closed = True
            self.connection.server.connection_closed(self)  # type: ignore[arg-type]
            self.transport.close()

    def shutdown(self) -> None:
        if not self.buffer:
            self.on_deadline()


def _settings(headers: list[tuple[bytes, bytes]], http_version: str) -> bytes | None:
    """The HTTP2-Settings payload of a well-formed h2c upgrade request (RFC 7540 §3.2), else None."""
    if http_version != "1.1":
        return None
    upgrade = b""
    connection: set[bytes] = set()
    settings = []
    for name, value in headers:
        if name == b"upgrade":
            upgrade = value.strip().lower()
        elif name == b"connection":
            connection.update(token.strip().lower() for token in value.split(b","))
        elif name == b"http2-settings":
            settings.append(value.strip())
        elif name == b"transfer-encoding":
            return None
        elif name == b"content-length":
            if not value.isdigit() or int(value) > UPGRADE_BODY_LIMIT:
                return None
    if upgrade != b"h2c" or len(settings) != 1 or not {b"upgrade", b"http2-settings"} <= connection:
        return None
    payload = settings[0]
    try:
        raw = base64.b64decode(payload + b"=" * (-len(payload) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % 6:
        return None
    for i in range(0, len(raw), 6):
        code = int.from_bytes(raw[i:i + 2], "big")
        number = int.from_bytes(raw[i + 2:i + 6], "big")
        if (code == 2 and number > 1) or (code == 4 and number > 2**31 - 1) or (
                code == 5 and not 16384 <= number <= 16777215):
            return None
    return payload


def upgrade(connection: HTTPConnection, scope: dict[str, Any], target: bytes) -> bool:
    """Serve an ``Upgrade: h2c`` request as stream 1 of a new HTTP/2 connection; False when not one.

    ``scope`` is the HTTP/1.1 scope ``start_request`` built (limits checked); the
    body, if any, still arrives in HTTP/1.1 framing after our 101 and reaches the
    app through h11 (``H2Connection.upgrade_body``), then the client's preface follows.
    """
    config = connection.config
    if not config.h2c_upgrade:
        return False
    settings = _settings(scope["headers"], scope["http_version"])
    if settings is None or not connection.trusted:
        return False
    from .connection import H2Connection
    from .exchange import StreamExchange

    connection.release()
    server = connection.server
    transport = connection.transport
    transport.write(UPGRADE_101)
    h2conn = H2Connection(server, transport, connection.client, connection.local,
                          connection.scheme, connection.trusted)
    connection.closed = True
    connection.deadline = 0.0
    server.connection_upgraded(connection, h2conn)  # type: ignore[arg-type]
    transport.set_protocol(h2conn)
    h2conn.start_upgraded(settings)
    method = scope["method"].encode("ascii")
    exchange = StreamExchange(h2conn, 1, method == b"HEAD", False)
    h2conn.add_stream(exchange)
    headers = [(n, v) for n, v in scope["headers"] if n not in CONNECTION_SPECIFIC and n != b"http2-settings"]
    h2conn.upgrade_h11 = connection.conn
    h2conn.serve(exchange, method, target, headers, connection.scheme, True)
    h2conn.upgrade_body(b"")
    return True
