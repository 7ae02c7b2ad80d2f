"""WebSocket sessions (the ASGI ``websocket`` scope, spec 2.4), spoken with wsproto.

wsproto is to WebSockets what h11 is to HTTP/1.1: a sans-I/O state machine
that parses frames and builds them, and nothing else. This module wires it to
the asyncio transport an ``HTTPConnection`` already owns. The HTTP side only
recognises the handshake request (``wants_upgrade``) and calls ``upgrade``,
which swaps the transport's protocol for a ``WebSocketSession``: from then on
the bytes go to wsproto and never back to h11.

What a session adds around wsproto, and why:

* the ASGI ``receive``/``send`` pair, with the handshake decided by the app
  (``websocket.accept`` with a subprotocol and headers, ``websocket.close``
  before accepting: 403, or a full HTTP denial response through the
  ``websocket.http.response`` extension), as uvicorn's wsproto implementation
  does;
* whole messages: fragments are joined here, and a message larger than
  Gunicorn's ``websocket_max_message_size`` closes the socket with 1009 while
  it is still arriving, so memory stays bounded;
* backpressure both ways: reading stops while the app has not consumed
  ``MAX_QUEUE`` messages (or ``QUEUE_HIGH_WATER`` bytes) and while the peer
  does not read what we write (a ping flood from a client that never reads
  its pongs would otherwise grow our write buffer without bound), and
  ``send`` waits while the transport's write buffer is full;
* keep-alive pings with a timeout, so a peer that vanished without a FIN is
  noticed and its slot freed;
* ``max_requests``: the handshake and every message (received or sent) is
  spent from the worker's budget, so a worker that only holds long-lived
  sockets still recycles;
* graceful stop: open sockets get close code 1012 (service restart) and the
  app its ``websocket.disconnect``, within ``graceful_timeout``.

A session lives on one loop thread and shares nothing with other sessions; it
holds its connection slot until the socket is closed *and* the app returned,
so ``worker_connections`` bounds running WebSocket apps, and a graceful stop
waits for them.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .asgi import ASGI_VERSION, ClientDisconnected, Message
from .hooks import RequestView, ResponseView, access_environ

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Ping,
        Pong,
        RejectConnection,
        RejectData,
        Request,
        TextMessage,
    )
    from wsproto.events import Message as WSMessage
    from wsproto.extensions import PerMessageDeflate
    from wsproto.utilities import RemoteProtocolError

    AVAILABLE = True
except ImportError:  # pragma: no cover - wsproto is a dependency; a broken install serves HTTP only
    AVAILABLE = False

if TYPE_CHECKING:
    from .protocol import HTTPConnection
    from .server import LoopServer

WEBSOCKET_SPEC_VERSION = "2.4"
#: Messages the app may leave unconsumed before the session stops reading (uvicorn's ws_max_queue).
MAX_QUEUE = 32
#: Bytes of unconsumed messages above which the session stops reading, whatever their number.
QUEUE_HIGH_WATER = 65536
#: Bytes a client may send before the handshake is decided; reading pauses beyond.
EARLY_HIGH_WATER = 65536
#: Seconds to wait for the peer's answer to our close frame (uvicorn's close_timeout).
CLOSE_TIMEOUT = 10.0
#: With permessage-deflate, input is fed to wsproto in slices of this size: wsproto inflates
#: a slice at once, and deflate expands up to ~1000x, so a slice bounds what one step allocates
#: before the size check runs (a 256 KiB read could otherwise inflate to 256 MiB).
DEFLATE_SLICE = 4096
#: XOR tables, one per mask byte: ``_XOR[k]`` maps every byte b to b ^ k (as wsproto unmasks).
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask``: one big-int XOR for small payloads (fewer
    steps), four ``translate`` passes over the strided slices for large ones (linear in size)."""
    n = len(payload)
    if n <= 256:
        if not n:
            return b""
        return (int.from_bytes(payload, "little")
                ^ int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
    out = bytearray(payload)
    out[0::4] = out[0::4].translate(_XOR[mask[0]])
    out[1::4] = out[1::4].translate(_XOR[mask[1]])
    out[2::4] = out[2::4].translate(_XOR[mask[2]])
    out[3::4] = out[3::4].translate(_XOR[mask[3]])
    return bytes(out)


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


class WebSocketSession(asyncio.Protocol):
    """One WebSocket connection: wsproto state, the message queue, the app's receive/send."""

    #: Whether sessions use the fast path for common frames (``_feed``, ``_send_frame``); the
    #: differential test turns it off to compare with wsproto alone.
    FAST_PATH = True

    def __init__(self, connection: HTTPConnection, http_scope: dict[str, Any], target: bytes) -> None:
        self.server: LoopServer = connection.server
        self.config = connection.config
        self.log = connection.log
        self.loop = connection.loop
        self.transport: asyncio.Transport = connection.transport
        self.client = connection.client
        self.target = target
        scope = dict(http_scope)
        self.method = scope.pop("method")
        scope["type"] = "websocket"
        scope["asgi"] = {"version": ASGI_VERSION, "spec_version": WEBSOCKET_SPEC_VERSION}
        scope["scheme"] = "wss" if scope["scheme"] in ("https", "wss") else "ws"
        scope["subprotocols"] = []
        scope["extensions"] = {"websocket.http.response": {}}
        self.scope = scope
        self.ws = WSConnection(ConnectionType.SERVER)
        # LoopServer.sweep reads every connection's deadline; a session keeps its own timers.
        self.deadline = 0.0
        self.deflate: PerMessageDeflate | None = None
        # Handshake and close progress.
        self.handshake_done = False  # accepted, denied or refused: the app decided
        self.accepted = False
        self.denying = False  # a websocket.http.response is being sent
        self.close_sent = False  # our close frame is out (or the socket is being torn down)
        self.app_closed = False  # the app itself sent websocket.close
        self.stopping = False
        self.lost = False
        self.app_done = True  # until the app task starts
        self.finished = False
        self.status = 0
        self.sent = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.start_time = time.monotonic()
        # Incoming: bytes before the handshake is decided, the message being assembled,
        # and whole messages waiting for the app.
        self.early = bytearray()
        self.parts: list[Any] = []
        self.part_size = 0
        # (message, its size in bytes) pairs, the size kept so taking one needs no re-encoding.
        self.queue: deque[tuple[Message, int]] = deque([({"type": "websocket.connect"}, 0)])
        self.queued_bytes = 0
        self.disconnect: Message | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Flow control.
        self.read_paused = False
        self.write_paused = connection.write_paused  # resume_writing now comes here
        self._drain_waiters: list[asyncio.Future[None]] = []
        # Keep-alive and close timers.
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        self.ping_payload: bytes | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        # Fast path (see _feed): on until the close starts; where the stream is between frames.
        self.fast = self.FAST_PATH
        self._fp_head = b""  # a frame header split over reads (already given to wsproto)
        self._fp_owed = 0  # bytes of a frame wsproto has started that are still to come
        self._fp_fragmented = False  # wsproto is inside a fragmented message
        self.fast_out = False  # our messages framed here: set at the accept, when no deflate was agreed

    # -- start -----------------------------------------------------------------------

    def start(self, raw_headers: list[tuple[bytes, bytes]], pending: bytes) -> None:
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

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        """Never called: the session takes over a transport that is already connected."""

    def data_received(self, data: bytes) -> None:
        if not self.accepted:
            if not self.handshake_done:
                # Frames sent before our 101 (a client must wait, but may not): kept for
                # wsproto until the app accepts, within a bound.
                self.early += data
                if len(self.early) > EARLY_HIGH_WATER:
                    self._pause_reading()
            return  # after a denial, input is ignored until the close
        self._feed(data)

    def eof_received(self) -> bool | None:
        return None  # asyncio closes the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.close_sent = True
        self._cancel_timers()
        self._disconnected(1006, "")  # no-op when a close frame already gave the code
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._wake()
        self._maybe_finished()

    def pause_writing(self) -> None:
        """The peer is not reading: stop reading it too, or the pongs its pings ask for pile up here."""
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._queue_has_room()

    # -- LoopServer's connection interface ---------------------------------------------

    def on_deadline(self) -> None:  # pragma: no cover - deadline stays 0
        """Never due: pings and the close handshake use their own timers."""

    def shutdown(self) -> None:
        """Graceful stop: close open sockets with 1012 (service restart); the app gets its disconnect.

        A handshake the app has not decided yet is left to it: an accepted
        socket is then closed with 1012 at once, a denial is sent as usual.
        """
        self.stopping = True
        if self.accepted and not self.close_sent:
            self._close(1012, "")

    # -- incoming frames ---------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Frames the fast path handles are handled here; every other byte goes to wsproto, whole frames.

        The fast path takes an unfragmented, masked text or binary frame with
        no RSV bit and a minimal length, complete in this chunk, while the
        connection is open and wsproto is not inside a fragmented message: it
        unmasks it and delivers the message as wsproto would have. Anything
        else (control frames, fragments, compressed or malformed frames, a frame
        that is not all here) is passed to wsproto from its first byte, with the
        same chunk boundaries it would have had, so wsproto sees a stream of
        whole frames and decides everything it decides today.
        ``tests/test_ws_fastpath.py`` proves the two paths equal.
        """
        if not self.fast:
            self._feed_wsproto(data)
            return
        pending = self._fp_head
        if pending:
            # A frame header split over reads: its first bytes already went to wsproto.
            data = pending + data
            self._fp_head = b""
        pos = len(pending)  # bytes of data wsproto has already been given
        start = 0  # the frame being looked at starts here
        n = len(data)
        ws = self.ws
        while start < n or pending:
            if self.close_sent or ws.state is not ConnectionState.OPEN or self.transport.is_closing():
                self.fast = False  # closing: wsproto alone from here, to the end
                if pos < n:
                    self._feed_wsproto(data[pos:])
                return
            owed = self._fp_owed
            if owed:  # the rest of a frame wsproto has started
                end = n if n - pos < owed else pos + owed
                self._fp_owed = owed - (end - pos)
                chunk = data[pos:end]
                pos = start = end
                self._feed_wsproto(chunk)
                continue
            pending = b""
            avail = n - start
            if avail < 2:
                self._fp_head = data[start:]
                if pos < n:
                    self._feed_wsproto(data[pos:])
                return
            b0 = data[start]
            b1 = data[start + 1]
            length = b1 & 0x7F
            head = 2 if length < 126 else 4 if length == 126 else 10
            if b1 & 0x80:
                head += 4
            if avail < head:
                self._fp_head = data[start:]
                if pos < n:
                    self._feed_wsproto(data[pos:])
                return
            minimal = True
            if length == 126:
                length = int.from_bytes(data[start + 2:start + 4], "big")
                minimal = length > 125
            elif length == 127:
                length = int.from_bytes(data[start + 2:start + 10], "big")
                minimal = 0xFFFF < length < 1 << 63
            total = head + length
            opcode = b0 & 0x0F
            if (b0 & 0xF0) == 0x80 and b1 & 0x80 and (opcode == 1 or opcode == 2) and minimal \
                    and not self._fp_fragmented and total <= avail and pos == start:
                end = start + total
                mask = data[end - length - 4:end - length]
                payload = _unmask(data[end - length:end], mask)
                if opcode == 1:
                    try:
                        text = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        text = None
                    if text is not None:
                        pos = start = end
                        self._on_fast_data(text, length)
                        continue
                else:
                    pos = start = end
                    self._on_fast_data(payload, length)
                    continue
            # wsproto's frame: from its first byte (pos may be past it when its header was split).
            if opcode == 0 and b0 & 0x80:
                self._fp_fragmented = False
            elif opcode in (1, 2):
                self._fp_fragmented = not b0 & 0x80
            end = start + total
            if end > n:
                self._fp_owed = end - n
                end = n
            chunk = data[pos:end]
            pos = start = end
            self._feed_wsproto(chunk)

    def _feed_wsproto(self, data: bytes) -> None:
        ws = self.ws
        step = DEFLATE_SLICE if self.deflate is not None and self.deflate.enabled() else len(data)
        for start in range(0, len(data), max(step, 1)):
            if ws.state is ConnectionState.CLOSED or self.transport.is_closing():
                return  # after the close handshake, anything more is ignored
            ws.receive_data(data[start:start + step] if step < len(data) else data)
            self._handle_events()

    def _on_fast_data(self, data: str | bytes, size: int) -> None:
        """A whole message from the fast path: ``_on_data`` for a message in one frame."""
        limit = self.config.ws_max_size
        if limit and size > limit:
            self._fail(1009, f"Message exceeds the maximum size ({limit} bytes)")
            return
        if isinstance(data, str):
            self._enqueue({"type": "websocket.receive", "text": data}, size)
        else:
            self._enqueue({"type": "websocket.receive", "bytes": data}, size)

    def _enqueue(self, message: Message, size: int) -> None:
        """A whole message for the app (either path); reading pauses while the app is behind."""
        self.queue.append((message, size))
        self.queued_bytes += size
        self.server.request_done()
        if len(self.queue) >= MAX_QUEUE or self.queued_bytes >= QUEUE_HIGH_WATER:
            self._pause_reading()
        self._wake()

    def _handle_events(self) -> None:
        for event in self.ws.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                self._on_data(event)  # type: ignore[arg-type]
            elif kind is Ping:
                if self.ws.state is ConnectionState.OPEN:
                    self._write(self.ws.send(event.response()))  # type: ignore[attr-defined]
            elif kind is Pong:
                self._on_pong(event)  # type: ignore[arg-type]
            elif kind is CloseConnection:
                self._on_close(event)  # type: ignore[arg-type]
                return

    def _on_data(self, event: WSMessage[Any]) -> None:
        if self.close_sent:
            return  # data after our close frame is discarded (RFC 6455 §5.5.1)
        data = event.data
        if isinstance(data, str):
            self.part_size += len(data) if data.isascii() else len(data.encode("utf-8"))
        else:
            self.part_size += len(data)
        limit = self.config.ws_max_size
        if limit and self.part_size > limit:
            self.parts.clear()
            self._fail(1009, f"Message exceeds the maximum size ({limit} bytes)")
            return
        self.parts.append(data)
        if not event.message_finished:
            return
        parts, size = self.parts, self.part_size
        self.parts, self.part_size = [], 0
        if isinstance(data, str):
            self._enqueue({"type": "websocket.receive", "text": parts[0] if len(parts) == 1 else "".join(parts)}, size)
        else:
            self._enqueue({"type": "websocket.receive", "bytes": b"".join(parts)}, size)

    def _on_close(self, event: CloseConnection) -> None:
        if self.close_sent:
            # The peer answered our close frame: the closing handshake is complete.
            self._close_transport()
            return
        if self.ws.state is ConnectionState.REMOTE_CLOSING:
            self._write(self.ws.send(event.response()))  # wsproto leaves the echo to us
        elif self.ws.state is ConnectionState.OPEN:
            # wsproto reports a frame it could not parse (1002, 1007...) as a close
            # event without closing: the close frame naming the error is ours to send.
            self._write(self.ws.send(CloseConnection(code=event.code, reason=event.reason)))
        self.close_sent = True
        self._disconnected(event.code, event.reason or "")
        self._close_transport()

    # -- keep-alive --------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self.config.ws_ping_interval
        if interval > 0 and not self.close_sent:
            self.ping_timer = self.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self.ping_timer = None
        if self.close_sent or self.ws.state is not ConnectionState.OPEN:
            return
        # A random payload tells the answer to this ping from stale or unsolicited pongs.
        self.ping_payload = os.urandom(4)
        self._write(self.ws.send(Ping(payload=self.ping_payload)))
        timeout = self.config.ws_ping_timeout
        if timeout > 0:
            self.pong_timer = self.loop.call_later(timeout, self._pong_missing)
        else:
            self._schedule_ping()

    def _on_pong(self, event: Pong) -> None:
        if self.ping_payload is None or bytes(event.payload) != self.ping_payload:
            return
        self.ping_payload = None
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
            self._schedule_ping()

    def _pong_missing(self) -> None:
        self.pong_timer = None
        self.log.info(
            "WebSocket peer ip=%s did not answer a ping within POUNCE_WS_PING_TIMEOUT=%ss; closing",
            self.client[0] if self.client else "-", self.config.ws_ping_timeout,
        )
        self._fail(1011, "keepalive ping timeout")

    # -- closing -----------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake: our close frame, then the peer's answer or a timeout."""
        self.close_sent = True
        self._cancel_ping()
        self._disconnected(code, reason)
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        if self.ws.state is ConnectionState.CLOSED:
            self._close_transport()
            return
        self._resume_reading()  # the answer must be read even if the app stopped consuming
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_transport)

    def _fail(self, code: int, reason: str) -> None:
        """Close at once with ``code``: no answer is awaited from a peer that broke the rules or vanished."""
        self.close_sent = True
        self._cancel_ping()
        self._disconnected(code, reason)
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        self._close_transport()

    def _close_transport(self) -> None:
        """Close after flushing; abort if the peer does not read the rest within CLOSE_TIMEOUT."""
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if self.lost:
            return
        transport = self.transport
        if not transport.is_closing():
            transport.close()
        if transport.get_write_buffer_size():
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def _disconnected(self, code: int, reason: str) -> None:
        """Queue the app's ``websocket.disconnect`` (once: the first cause wins)."""
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._wake()

    def _cancel_ping(self) -> None:
        for timer in (self.ping_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = None
        self.ping_payload = None

    def _cancel_timers(self) -> None:
        self._cancel_ping()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    # -- flow control ------------------------------------------------------------------

    def _write(self, data: bytes | bytearray) -> None:
        if data and not self.lost and not self.transport.is_closing():
            self.transport.write(data)

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.lost:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.lost:
            self.read_paused = False
            self.transport.resume_reading()

    async def _drain(self) -> None:
        while self.write_paused and not self.lost:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- ASGI receive ------------------------------------------------------------------

    async def receive(self) -> Message:
        while not self.queue and self.disconnect is None:
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not self.queue:
            assert self.disconnect is not None
            return dict(self.disconnect)
        message, size = self.queue.popleft()
        self.queued_bytes -= size
        self._queue_has_room()
        return message

    def _queue_has_room(self) -> None:
        """Read again once the app has taken enough queued messages (before the close, after which
        ``_close`` keeps reading for the peer's answer)."""
        if self.read_paused and len(self.queue) < MAX_QUEUE and self.queued_bytes < QUEUE_HIGH_WATER \
                and not self.close_sent and not self.write_paused and self.accepted:
            self._resume_reading()

    # -- ASGI send ---------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.write_paused:
            await self._drain()
        kind = message.get("type")
        if not self.handshake_done:
            if self.lost:
                raise ClientDisconnected("the client disconnected")
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._refuse()
            elif kind == "websocket.http.response.start":
                self._deny(message)
            else:
                raise RuntimeError(
                    "ASGI: expected 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' first, got {kind!r}"
                )
            return
        if self.denying:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"ASGI: expected 'websocket.http.response.body', got {kind!r}")
            self._deny_body(message)
            return
        if self.app_closed:
            raise RuntimeError(f"ASGI: message {kind!r} sent after 'websocket.close'")
        if self.close_sent or not self.accepted:
            raise ClientDisconnected("the WebSocket is closed")
        if kind == "websocket.send":
            data = message.get("bytes")
            if data is None:
                text = message.get("text")
                if not isinstance(text, str):
                    raise TypeError("ASGI: 'websocket.send' needs 'bytes' or 'text'")
                if self.fast_out and self.ws.state is ConnectionState.OPEN:
                    payload = text.encode("utf-8")
                    self.sent += len(payload)
                    self._send_frame(0x81, payload)
                    self.server.request_done()
                    return
                event: WSMessage[Any] = TextMessage(data=text)
                self.sent += len(text) if text.isascii() else len(text.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                if self.fast_out and self.ws.state is ConnectionState.OPEN:
                    payload = bytes(data)
                    self.sent += len(payload)
                    self._send_frame(0x82, payload)
                    self.server.request_done()
                    return
                event = BytesMessage(data=bytes(data))
                self.sent += len(event.data)
            else:
                raise TypeError(f"ASGI: 'websocket.send' bytes must be bytes, got {type(data).__name__}")
            self._write(self.ws.send(event))
            self.server.request_done()
        elif kind == "websocket.close":
            self.app_closed = True
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            self._close(1000 if code is None else int(code), str(reason))
        else:
            raise RuntimeError(f"ASGI: expected 'websocket.send' or 'websocket.close', got {kind!r}")

    def _send_frame(self, first: int, payload: bytes) -> None:
        """One unfragmented frame of ours, unmasked and uncompressed: what wsproto's send writes for it.

        Only while the connection is open (``fast``: our close frame is not out, so wsproto
        would accept the message) and without permessage-deflate.
        """
        n = len(payload)
        if n < 126:
            head = bytes((first, n))
        elif n < 65536:
            head = bytes((first, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((first, 127)) + n.to_bytes(8, "big")
        self._write(head + payload)

    def _default_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The app's headers, lower-cased, after Server and Date unless the app set them."""
        own = [(bytes(name).lower(), bytes(value)) for name, value in headers]
        names = {name for name, _ in own}
        defaults = []
        if b"server" not in names:
            defaults.append((b"server", self.config.server_header))
        if b"date" not in names:
            defaults.append((b"date", self.server.date_header))
        return defaults + own

    def _accept(self, message: Message) -> None:
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
        self.fast_out = self.fast and not (self.deflate is not None and self.deflate.enabled())
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

    def _refuse(self) -> None:
        """``websocket.close`` before accepting: 403, as the spec asks and uvicorn answers."""
        self.handshake_done = True
        self.close_sent = True
        self.status = 403
        self.response_headers = self._default_headers([])
        self.server.request_done()
        self._disconnected(1006, "")
        self._write(self.ws.send(RejectConnection(status_code=403, headers=self.response_headers)))
        self._close_transport()

    def _deny(self, message: Message) -> None:
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

    def _deny_body(self, message: Message) -> None:
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

    def _send_500(self) -> None:
        """The app failed before deciding the handshake: a plain 500, as for HTTP.

        Written by hand rather than through wsproto: an accept that h11 refused
        (an invalid header from the app) leaves wsproto past the state where it
        could still reject.
        """
        self.handshake_done = True
        if self.lost:
            return
        body = b"Internal Server Error"
        headers = self._default_headers([
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"connection", b"close"),
            (b"content-length", b"%d" % len(body)),
        ])
        self.status = 500
        self.response_headers = headers
        self.sent = len(body)
        head = b"HTTP/1.1 500 Internal Server Error\r\n" + b"".join(b"%s: %s\r\n" % pair for pair in headers)
        self._write(head + b"\r\n" + body)
        self._close_transport()

    # -- running the app -------------------------------------------------------------------

    async def run(self) -> None:
        log = self.log
        path = self.scope["path"]
        try:
            app: Any = self.server.app
            result = await app(self.scope, self.receive, self.send)
            if result is not None:
                log.error("ASGI callable should return None, but returned %r", result)
            if not self.handshake_done:
                if not self.lost:
                    log.error("ASGI callable returned without accepting or denying the WebSocket %s", path)
                self._send_500()
            elif self.denying:
                log.error("ASGI callable returned without completing the WebSocket denial response for %s", path)
                self._close_transport()
            elif self.accepted and not self.close_sent:
                # Returning ends the session: a normal closure, not a dropped connection.
                self._close(1000, "")
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, (asyncio.CancelledError, ClientDisconnected)) or self.lost:
                log.debug("WebSocket %s ended by the socket closing (%s)", path, type(exc).__name__)
                self._close_transport()
            else:
                log.exception("Exception in ASGI application while handling WebSocket %s", path)
                if not self.handshake_done:
                    self._send_500()
                elif self.accepted and not self.close_sent:
                    self._close(1011, "")  # internal error
                else:
                    self._close_transport()
        finally:
            self.app_done = True
            self._maybe_finished()

    def _maybe_finished(self) -> None:
        """Release the connection slot once the socket is closed and the app has returned."""
        if self.finished or not self.lost or not self.app_done:
            return
        self.finished = True
        log = self.log
        if log.access_wanted and self.status:
            try:
                scope = {**self.scope, "method": "GET"}
                request = RequestView(scope, self.client, self.target)
                duration = datetime.timedelta(seconds=time.monotonic() - self.start_time)
                response = ResponseView(self.status, self.response_headers, self.sent)
                log.access(response, request, access_environ(scope, self.client), duration)
            except Exception:
                log.exception("Exception in access log")
        self.server.connection_closed(self)


