"""One WebSocket session: the ASGI receive/send pair, backpressure, pings and the close.

The package docstring (websocket/__init__.py) says what a session adds around wsproto
and why; its handshake is in handshake.py and its frames in frames.py.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..asgi import ASGI_VERSION, ClientDisconnected, Message
from ..asgi.hooks import RequestView, ResponseView, access_environ
from ..io import wakeup
from ..io.flow import WriteFlow
from ..log import other_loop_hint
from . import deflate, frames, handshake
from .frames import MAX_QUEUE, QUEUE_HIGH_WATER

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        BytesMessage,
        CloseConnection,
        Ping,
        Pong,
        TextMessage,
    )
    from wsproto.events import Message as WSMessage
    from wsproto.extensions import PerMessageDeflate

    AVAILABLE = True
except ImportError:  # pragma: no cover - wsproto is a dependency; a broken install serves HTTP only
    AVAILABLE = False

if TYPE_CHECKING:
    from ..http1.connection import HTTPConnection
    from ..loop.server import LoopServer

WEBSOCKET_SPEC_VERSION = "2.4"
#: Bytes a client may send before the handshake is decided; reading pauses beyond.
EARLY_HIGH_WATER = 65536
#: Seconds to wait for the peer's answer to our close frame (uvicorn's close_timeout).
CLOSE_TIMEOUT = 10.0


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
        #: The app's receive() waiting for a message, and any waiting beside it (io/wakeup.py).
        self.waiter: asyncio.Future[None] | None = None
        self.waiters: list[asyncio.Future[None]] | None = None
        # Flow control.
        self.read_paused = False
        # Write flow control (io/flow.py), as the connection's was: resume_writing now comes here.
        self.flow = WriteFlow()
        if connection.flow.paused:
            self.flow.pause()
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
        self.fast_out = False  # our messages framed here: set at the accept
        self.out_deflate: PerMessageDeflate | None = None  # the extension our frames are compressed with

    # -- start -----------------------------------------------------------------------

    start = handshake.start

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
        self.flow.close()
        self._wake()
        self._maybe_finished()

    def pause_writing(self) -> None:
        """The peer is not reading: stop reading it too, or the pongs its pings ask for pile up here."""
        self.flow.pause()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.flow.resume()
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

    _feed = frames.feed

    _feed_wsproto = frames.feed_wsproto

    _on_fast_data = frames.on_fast_data

    _enqueue = frames.enqueue

    _handle_events = frames.handle_events

    _on_data = frames.on_data

    _on_close = frames.on_close

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

    def _send_stalled(self) -> None:
        if self.flow.paused and not self.lost:
            self.log.info("Closing WebSocket connection from ip=%s: it read nothing for POUNCE_SEND_TIMEOUT=%gs",
                          self.client[0] if self.client else "-", self.config.send_timeout)
            self.transport.abort()

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

    def _wake(self) -> None:
        wakeup.wake(self)

    # -- ASGI receive ------------------------------------------------------------------

    async def receive(self) -> Message:
        queue = self.queue
        while not queue and self.disconnect is None:
            await wakeup.wait(self, self.loop)
        if not queue:
            assert self.disconnect is not None
            return dict(self.disconnect)
        message, size = queue.popleft()
        self.queued_bytes -= size
        if self.read_paused:
            self._queue_has_room()
        return message

    def _queue_has_room(self) -> None:
        """Read again once the app has taken enough queued messages (before the close, after which
        ``_close`` keeps reading for the peer's answer)."""
        if self.read_paused and len(self.queue) < MAX_QUEUE and self.queued_bytes < QUEUE_HIGH_WATER \
                and not self.close_sent and not self.flow.paused and self.accepted:
            self._resume_reading()

    # -- ASGI send ---------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.flow.paused:
            # As for HTTP: a peer that takes nothing of our buffer for POUNCE_SEND_TIMEOUT is let go
            # (before an accept, a denial's body has no pings to end it otherwise).
            await self.flow.wait(self.loop, self.config.send_timeout, self._send_stalled,
                                 self.transport.get_write_buffer_size)
        kind = message.get("type")
        if kind == "websocket.send" and self.fast_out and not self.close_sent and not self.app_closed:
            # The common case first: fast_out means accepted (handshake done, not denying),
            # and while our close is not out wsproto's state is OPEN.
            data = message.get("bytes")
            if data is None:
                text = message.get("text")
                if isinstance(text, str):
                    payload = text.encode("utf-8")
                    self.sent += len(payload)
                    self._send_frame(0x81, payload)
                    self.server.request_done()
                    return
            elif isinstance(data, (bytes, bytearray, memoryview)):
                payload = bytes(data)
                self.sent += len(payload)
                self._send_frame(0x82, payload)
                self.server.request_done()
                return
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
                event: WSMessage[Any] = TextMessage(data=text)
                self.sent += len(text) if text.isascii() else len(text.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                event = BytesMessage(data=bytes(data))
                self.sent += len(event.data)
            else:
                raise TypeError(f"ASGI: 'websocket.send' bytes must be bytes, got {type(data).__name__}")
            if self.deflate is not None and deflate.USABLE and self.deflate.enabled():
                deflate.compressor(self.deflate)  # ours, not wsproto's default: both paths alike
            self._write(self.ws.send(event))
            self.server.request_done()
        elif kind == "websocket.close":
            self.app_closed = True
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            self._close(1000 if code is None else int(code), str(reason))
        else:
            raise RuntimeError(f"ASGI: expected 'websocket.send' or 'websocket.close', got {kind!r}")

    _send_frame = frames.send_frame

    _default_headers = handshake.default_headers

    _accept = handshake.accept

    _refuse = handshake.refuse

    _deny = handshake.deny

    _deny_body = handshake.deny_body

    _send_500 = handshake.send_500

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
                log.exception("Exception in ASGI application while handling WebSocket %s%s", path,
                              other_loop_hint(exc, self.config.loops))
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
                log.access(response, request, access_environ(scope, self.client, self.target), duration)
            except Exception:
                log.exception("Exception in access log")
        self.server.connection_closed(self)


