"""One HTTP/2 connection: h2's state machine over an asyncio transport, one ASGI cycle per stream.

It holds one ``worker_connections`` slot however many streams it carries, and
speaks to its ``LoopServer`` through the interface every connection has
(``deadline``/``on_deadline`` swept per tick, ``shutdown``, ``closed``,
``connection_opened``/``connection_closed``), so the loop treats it as it treats
an HTTP/1.1 connection or a WebSocket session.

Writes: h2 frames into its own buffer; ``flush_soon`` asks the loop to call
``release`` once at the end of the iteration (``LoopServer.hold``), so the
frames of every stream answered in one iteration leave in one write.

Graceful stop: a GOAWAY naming the last stream we saw, built here rather than
with h2's ``close_connection``, which would close h2's state machine and fail
the in-flight streams we promise to finish; streams the client opens after it
are refused (REFUSED_STREAM, safe to retry). The connection closes once they
are all done, or when the loop's drain runs out of ``graceful_timeout``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from ..asgi import Rejection
from ..asgi.cycle import RequestCycle
from ..asgi.scope import http_scope
from . import headers as _headers
from .exchange import StreamExchange
from .fastpath import FastMachine
from .guard import Flood, FloodGuard
from .lifecycle import ConnectionLifecycle
from .machine import error_code

if TYPE_CHECKING:
    from ..loop.server import LoopServer

#: The request target of a refused method, as HTTP/1.1 refuses it (CONNECT: no tunnels).
#: The ASGI extension for response trailers, advertised in HTTP/2 scopes.
TRAILERS = "http.response.trailers"
REFUSED_METHODS = {b"CONNECT": (405, "CONNECT is not served: an ASGI app cannot open a tunnel")}
#: Streams a client may open past http2_max_concurrent_streams before the connection ends: each
#: is refused (REFUSED_STREAM, RFC 9113 §5.1.2: safe to retry), as a client may have opened them
#: before it read our SETTINGS; past the margin h2 ends the connection (PROTOCOL_ERROR).
OVER_LIMIT_FACTOR = 2


class H2Connection(ConnectionLifecycle, asyncio.Protocol):
    """asyncio protocol for one client connection that speaks HTTP/2."""

    def __init__(self, server: LoopServer, transport: asyncio.Transport, client: tuple[str, int] | None,
                 local: tuple[str, int] | None, scheme: str, trusted: bool) -> None:
        self.server = server
        self.config = config = server.config
        self.log = server.log
        self.loop = server.loop
        self.transport = transport
        self.client = client
        self.local = local
        self.scheme = scheme
        self.trusted = trusted
        # A client's ``:scheme`` is honoured only from a peer allowed to speak for the connection,
        # as Gunicorn 27 does: every h2c peer is one (http2/takeover.py lets no other speak
        # it), a TLS client only when it is in forwarded_allow_ips; for others, the transport's.
        self.scheme_trusted = scheme == "http" or trusted
        self.h2 = FastMachine()
        header_list = config.http2_max_header_list_size
        values: dict[int, int] = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: config.http2_max_concurrent_streams,
            # A window smaller than the default applies only once the client has our SETTINGS
            # (RFC 9113 §6.9.2: until then it may send 65,535 bytes): start there (start_h2).
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: max(config.http2_initial_window_size, 65535),
            h2.settings.SettingCodes.MAX_FRAME_SIZE: config.http2_max_frame_size,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        }
        if header_list:
            values[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = header_list
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=values)  # type: ignore[arg-type]
        # h2 read these from its default settings when it was built; ours apply from the start.
        self.h2.max_inbound_frame_size = config.http2_max_frame_size
        self.h2.decoder.max_header_list_size = header_list or 2**32
        # Header block bytes h2 may hold while CONTINUATION frames arrive (machine.check_buffered).
        self.block_limit = (header_list or 2**20) + 16384
        #: True until the client's SETTINGS arrived: RFC 9113 §3.4, its first frame.
        self.awaiting_settings = True
        self.streams: dict[int, StreamExchange] = {}
        self.heads: list[StreamExchange] = []
        #: The app's response header lists checked before on this connection (headers.ResponseCache).
        self.response_cache = _headers.ResponseCache()
        self.blocked: dict[int, StreamExchange] = {}
        self.guard = FloodGuard(config.http2_max_concurrent_streams, server.last_tick)
        #: Streams reset in the read being handled (not started), and the last stream we acted on.
        self.doomed: set[int] = set()
        self.processed = 0
        self.closed = False
        self.write_paused = False
        self.read_paused = False
        self.holding = False
        self.goaway_sent = False
        self.last_stream_id = 2**31 - 1
        self.lingering = False
        self.deadline = 0.0
        #: When an idle connection (no stream) gets its GOAWAY (keepalive); 0 while streams are open.
        self.idle_until = 0.0
        self.requests = 0
        #: The h11 parser of an ``Upgrade: h2c`` request whose body still arrives as HTTP/1.1.
        self.upgrade_h11: Any = None

    # -- start ------------------------------------------------------------------

    def start(self, data: bytes = b"", replacing: Any = None) -> None:
        """Become the transport's protocol (ALPN or prior knowledge): SETTINGS out, ``data`` in.

        ``replacing``: the protocol that held the connection's slot until now (the preface sniffer).
        """
        self.h2.initiate_connection()
        self._open_window()
        if replacing is not None:
            self.server.connection_upgraded(replacing, self)  # type: ignore[arg-type]
        else:
            self.server.connection_opened(self)  # type: ignore[arg-type]
        timeout = self.config.header_timeout or self.config.keepalive
        self.idle_until = self.server.deadline_base + timeout
        self.arm(self.idle_until)
        self.flush_soon()
        if data:
            self.data_received(data)

    def start_upgraded(self, settings: bytes) -> None:
        """Become the protocol after a ``101 Switching Protocols`` to h2c; stream 1 is the request."""
        self.h2.initiate_upgrade_connection(settings)
        self._open_window()
        self.flush_soon()

    def _open_window(self) -> None:
        """After our SETTINGS went into h2: what applies from now on, beyond what was announced."""
        config = self.config
        # h2 ends the connection past its own stream limit: ours is enforced per stream (_request).
        announced = self.h2.local_settings
        hard = dict(announced.items())
        hard[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = min(
            2**31 - 1, config.http2_max_concurrent_streams * OVER_LIMIT_FACTOR)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=hard)  # type: ignore[arg-type]
        window = self.config.http2_initial_window_size
        if window < 65535:
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})  # h2 applies it on ACK
        # The connection's receive window starts at 65,535 whatever SETTINGS says (RFC 9113
        # §6.9.2): open it to every stream's window at once, so that an app that has not read
        # its body yet never blocks another stream's upload (whose app would wait for bytes
        # its client cannot send). Memory stays bounded by the stream windows: each reopens
        # only as its app reads (StreamExchange.consumed).
        extra = min(2**31 - 1, window * self.config.http2_max_concurrent_streams) - 65535
        if extra > 0:
            self.h2.increment_flow_control_window(extra)

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover - taken over
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.closed:
            return
        if self.upgrade_h11 is not None:
            self.upgrade_body(data)
            return
        h2conn = self.h2
        if self.awaiting_settings:
            pending = h2conn.data_to_send()  # our SETTINGS go before anything h2 answers
            if pending:
                self.transport.write(pending)
        try:
            events = h2conn.receive_data(data)
            h2conn.check_buffered(self.block_limit)
        except h2.exceptions.ProtocolError as exc:
            code = error_code(exc)
            self._fail(f"HTTP/2 protocol error, GOAWAY {code.name}: {exc}", code)
            return
        if self.awaiting_settings and events:
            if type(events[0]) is not h2.events.RemoteSettingsChanged:
                h2conn.data_to_send()  # nothing is answered to a bad preface (a PING ACK...)
                self._fail("the connection preface was not followed by SETTINGS (RFC 9113 section 3.4)",
                           ErrorCodes.PROTOCOL_ERROR)
                return
            self.awaiting_settings = False
        try:
            if h2conn.resets:
                self.guard.reset(2 * h2conn.resets)
                h2conn.resets = 0
                # A stream reset in the same read as its HEADERS is never started (Rapid Reset).
                self.doomed = {e.stream_id for e in events if type(e) is h2.events.StreamReset}
            for event in events:
                self._event(event)
            self.doomed.clear()
        except Flood as exc:
            self._fail(f"HTTP/2 flood: {exc}", ErrorCodes.ENHANCE_YOUR_CALM)
            return
        self.flush_soon()

    def eof_received(self) -> bool | None:
        self._all_gone()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = 0.0
        self._all_gone()
        self.server.streams -= len(self.streams)
        self.streams.clear()
        self.server.connection_closed(self)  # type: ignore[arg-type]

    def pause_writing(self) -> None:
        self.write_paused = True
        for exchange in self.streams.values():
            exchange.flow.paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for exchange in list(self.streams.values()):
            exchange.wake()

    # -- events -----------------------------------------------------------------

    def _event(self, event: Any) -> None:
        kind = type(event)
        if kind is h2.events.RequestReceived:
            self._request(event)
        elif kind is h2.events.DataReceived:
            self._data(event)
        elif kind is h2.events.StreamEnded:
            exchange = self.streams.get(event.stream_id)
            if exchange is not None:
                self._request_ended(exchange)
        elif kind is h2.events.WindowUpdated or kind is h2.events.RemoteSettingsChanged:
            if kind is h2.events.RemoteSettingsChanged:
                self.guard.setting(self.server.last_tick)
            self._unblock()
        elif kind is h2.events.StreamReset:
            self._stream_reset(event)
        elif kind is h2.events.PingReceived:
            self.guard.ping(self.server.last_tick)
        elif kind is h2.events.PriorityUpdated:
            self.guard.priority(self.server.last_tick)
        elif kind is h2.events.ConnectionTerminated:
            self._all_gone()
            self.close()
        elif kind is h2.events.TrailersReceived:
            pass  # ASGI has no request trailers; the StreamEnded that follows ends the body
        elif kind is h2.events.UnknownFrameReceived:
            self.guard.priority(self.server.last_tick)

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self.doomed and stream_id in self.doomed:
            return
        self.processed = stream_id
        if self.goaway_sent and stream_id > self.last_stream_id:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= self.config.http2_max_concurrent_streams:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self.guard.reset(1)
            return
        self.idle_until = 0.0
        try:
            request = _headers.request(event.headers or ())
        except ValueError as exc:
            self.log.info("Refusing HTTP/2 stream %d from ip=%s: %s", stream_id, self._ip(), exc)
            self.h2.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        ended = event.stream_ended is not None
        exchange = StreamExchange(self, stream_id, request.method == b"HEAD", request.expect_100)
        exchange.request_ended = ended
        self.add_stream(exchange)
        refused = REFUSED_METHODS.get(request.method)
        if refused is not None:
            self.refuse(exchange, *refused)
            return
        scheme = self.scheme
        if self.scheme_trusted and request.scheme in (b"http", b"https"):
            scheme = request.scheme.decode("ascii")
        self.serve(exchange, request.method, request.target, request.headers, scheme, not ended)

    def serve(self, exchange: StreamExchange, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
              scheme: str, more_body: bool) -> None:
        """Build the scope and start the app for one stream (a request, or the h2c upgrade's stream 1)."""
        server = self.server
        try:
            scope = http_scope(server, method, target, "2", headers, self.client, self.local, scheme, self.trusted)
        except Rejection as exc:
            self.refuse(exchange, exc.status, str(exc))
            return
        scope["extensions"][TRAILERS] = {}  # HTTP/2 carries them (StreamExchange.trailers)
        cycle = RequestCycle(server, exchange, scope, target, more_body, 0.0)
        exchange.cycle = cycle
        server.spawn_request(cycle)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        size = event.flow_controlled_length or 0
        data = event.data or b""
        if not data and event.stream_ended is None:
            self.guard.empty(self.server.last_tick)
        exchange = self.streams.get(stream_id)
        if exchange is None or exchange.cycle is None or exchange.app_done:
            # Nobody reads it (refused, answered already): give the window back at once.
            if size:
                self._acknowledge(stream_id, size)
            return
        if size > len(data):  # padding is flow-controlled but never reaches the app
            self._acknowledge(stream_id, size - len(data))
        if data:
            exchange.held += len(data)  # acknowledged as the app reads them, or when the stream goes
            if exchange.body_clock:
                self._body_arrived(exchange, len(data))
            self._feed(exchange, data, True)

    def _feed(self, exchange: StreamExchange, data: bytes, more: bool) -> None:
        try:
            exchange.cycle.feed(data, more)
        except Rejection as exc:
            self.refuse(exchange, exc.status, str(exc))

    def _request_ended(self, exchange: StreamExchange) -> None:
        exchange.request_ended = True
        exchange.body_deadline = 0.0
        if exchange.cycle is not None and not exchange.app_done:
            self._feed(exchange, b"", False)
        if exchange.end_sent:
            self._forget(exchange)

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        exchange = self.streams.get(event.stream_id)
        if exchange is None:
            return
        self._drop(exchange)
        exchange.closed = True
        exchange.request_ended = True
        self._gone(exchange)
        self._maybe_idle()

    def _gone(self, exchange: StreamExchange) -> None:
        cycle = exchange.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.client_gone()
        exchange.wake()

    def _all_gone(self) -> None:
        for exchange in list(self.streams.values()):
            exchange.closed = True
            self._gone(exchange)

    # -- called by the exchanges --------------------------------------------------

    def head_pending(self, exchange: StreamExchange) -> None:
        self.heads.append(exchange)
        self.flush_soon()

    def send_headers(self, stream_id: int, block: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_headers(stream_id, block, end_stream=end)
        except h2.exceptions.ProtocolError:  # the stream was reset meanwhile: nothing to send
            exchange = self.streams.get(stream_id)
            if exchange is not None:
                self._forget(exchange)
                self._gone(exchange)
            return
        self.flush_soon()

    def pump(self, exchange: StreamExchange) -> None:
        exchange.pump()

    def _unblock(self) -> None:
        for exchange in list(self.blocked.values()):
            exchange.pump()

    def stream_sent(self, exchange: StreamExchange) -> None:
        """The response's END_STREAM is out: the stream closes once the request has ended too."""
        if exchange.request_ended:
            self._forget(exchange)
        elif exchange.app_done:
            # RFC 9113 §8.1: a complete response may end a request body the app no longer reads.
            self._reset_stream(exchange, ErrorCodes.NO_ERROR)

    def stream_done(self, exchange: StreamExchange) -> None:
        """The response is complete (for max_requests: RequestCycle._finish counts the others)."""
        self._count(exchange)
        self.guard.answered()
        if exchange.end_sent:
            self.stream_sent(exchange)

    def reset(self, exchange: StreamExchange, code: str) -> None:
        """End a stream abnormally (an app failure mid-response): RST_STREAM, never the connection."""
        if not exchange.closed:
            self._reset_stream(exchange, ErrorCodes[code])
        self._gone(exchange)

    def acknowledge(self, stream_id: int, size: int) -> None:
        if self.upgrade_h11 is not None:
            return  # the h2c upgrade's body is HTTP/1.1, outside HTTP/2's windows
        self._acknowledge(stream_id, size)
        self.flush_soon()

    def _acknowledge(self, stream_id: int, size: int) -> None:
        # A stream already gone still has its bytes counted in the connection's window: h2
        # opens that one and skips the stream's.
        self.h2.acknowledge_received_data(size, stream_id)

    def refuse(self, exchange: StreamExchange, status: int, message: str) -> None:
        """Answer a stream we cannot serve (a limit, a malformed target) with ``status``, one log line."""
        self.log.warning("Invalid request from ip=%s: %s", self._ip(), message)
        self.server.request_rejected()
        cycle = exchange.cycle
        if exchange.closed:
            return
        exchange.app_done = True  # (first: a refusal sent whole then ends a request body still coming)
        if exchange.replace(status, [(b"content-type", b"text/plain; charset=utf-8")],
                            (message + "\n").encode("utf-8", "replace")):
            if not exchange.end_sent:
                if self.config.send_timeout:
                    # Behind a shut window: sent whole as it opens (stream_sent then ends the request
                    # body still coming), or let go at the send deadline; a reset now would cut it.
                    exchange.await_end()
                else:
                    # No deadline would bound the wait (POUNCE_SEND_TIMEOUT=0): not kept open for it.
                    self._reset_stream(exchange, ErrorCodes.CANCEL)
        else:
            self._reset_stream(exchange, ErrorCodes.PROTOCOL_ERROR)
        if cycle is None:
            self._count(exchange)  # no cycle will count it (RequestCycle._finish does, for its own)
        else:
            cycle.client_gone()
        exchange.wake()

    def _reset_stream(self, exchange: StreamExchange, code: ErrorCodes) -> None:
        exchange.closed = True
        exchange.out.clear()
        try:
            self.h2.reset_stream(exchange.stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self._forget(exchange)
        self.flush_soon()

    def add_stream(self, exchange: StreamExchange) -> None:
        self.streams[exchange.stream_id] = exchange
        self.requests += 1
        self.server.streams += 1

    def _drop(self, exchange: StreamExchange) -> None:
        if self.streams.pop(exchange.stream_id, None) is not None:
            self.server.streams -= 1
        self.blocked.pop(exchange.stream_id, None)
        if exchange.held:
            # Body bytes no app will read now: the connection's window gets them back (h2 skips
            # the stream's, which is closed), or every upload would shrink it for good.
            self._acknowledge(exchange.stream_id, exchange.held)
            exchange.held = 0
            self.flush_soon()

    def _forget(self, exchange: StreamExchange) -> None:
        exchange.closed = True
        self._drop(exchange)
        self._maybe_idle()

    def _count(self, exchange: StreamExchange) -> None:
        if not exchange.counted:
            exchange.counted = True
            self.server.request_done()

    # -- writes -------------------------------------------------------------------

    def flush_soon(self) -> None:
        if not self.holding and not self.closed:
            self.holding = True
            self.server.hold(self)  # type: ignore[arg-type]

    def release(self) -> None:
        """Write what h2 framed this iteration, held heads first (the end of the iteration)."""
        self.holding = False
        heads, self.heads = self.heads, []
        for exchange in heads:
            if exchange.head is not None and not exchange.closed:
                exchange.flush_head()
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def _ip(self) -> str:
        return self.client[0] if self.client else "-"
