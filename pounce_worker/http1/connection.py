"""One HTTP/1.1 connection, spoken with h11.

h11 parses and frames everything; this module wires it to an asyncio transport
and to the ASGI app. It owns the per-connection state (the h11 ``Connection``,
the keep-alive and header timers, read/write flow control) and creates one
``RequestCycle`` per request, which owns the per-request state (scope, body
buffer, response progress). Nothing here is shared between connections, and a
connection lives on exactly one loop thread.

Limits that h11 does not know about (Gunicorn's ``limit_request_*``, the header
timeout, the body size cap) are checked around it, never instead of it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import h11

from ..asgi import Rejection, timing
from ..asgi.cycle import RequestCycle
from ..asgi.scope import http_scope
from ..http2 import takeover
from ..io.flow import WriteFlow
from ..websocket import upgrade as websocket
from .chunked import ChunkedScanner
from .deadlines import ACTIVE, BODY, IDLE, LINGERING, ConnectionDeadlines
from .errors import error_page
from .exchange import HOLD_LIMIT, H1Exchange
from .proxy import ip_allowed, parse_proxy_header
from .reader import HIGH_WATER, RequestReader
from .validate import HeadScan

if TYPE_CHECKING:
    from ..loop.server import LoopServer

#: Seconds a connection accepted just before a graceful stop may take to send its first request.
FIRST_REQUEST_GRACE = 1.0
#: Seconds a connection we close may take to acknowledge our FIN (see ``HTTPConnection.close``).
LINGER = 2.0


def _addr(sockaddr: Any) -> tuple[str, int] | None:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return (str(sockaddr[0]), int(sockaddr[1]))
    return None


class HTTPConnection(RequestReader, ConnectionDeadlines, asyncio.Protocol):
    """asyncio protocol for one client connection: reading (reader.py), deadlines (deadlines.py), writing."""

    #: Server-Timing (timing.py): when on, parsing entry points stamp this on the instance; off,
    #: nothing reads a clock, and the class default spares the instance an attribute (see __init__).
    parse_started = 0.0

    def __init__(self, server: LoopServer) -> None:
        self.server = server
        self.config = server.config
        self.log = server.log
        self.loop = server.loop
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.max_head_size
        )
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.scheme = "http"
        self.cycle: RequestCycle | None = None
        # One deadline at a time, checked by the loop's tick (LoopServer.sweep) rather
        # than a TimerHandle per request: 0 means none. Its kind follows from the state
        # (on_deadline): the phase.
        self.deadline = 0.0
        self.phase = ACTIVE
        # The body deadline's rate rule (expect_body): when the body is behind POUNCE_BODY_MIN_RATE.
        self.body_clock = 0.0
        self.processing = False
        self.read_paused = False
        self.flow = WriteFlow()
        self.closed = False
        # Complete responses written this loop iteration, sent at its end (see hold()).
        self.held: list[bytes] | None = None
        self.held_size = 0
        self.requests = 0
        self.trusted = False
        # Bytes received before the PROXY header is complete; None once past it (or when off).
        self.proxy_buffer: bytes | None = b"" if self.config.proxy_protocol != "off" else None
        # Fast path (see fastpath.py): while True, requests are parsed from self.buffer
        # and self.conn stays unused at IDLE, ready to take over at a request boundary.
        self.fast = self.config.fast_path
        self.buffer = bytearray()
        self.body_remaining = 0
        self.eof = False
        # A request head that is not complete yet (either path): what its lines showed so
        # far and where the search for its end resumes (validate.HeadScan); None while no
        # partial head is buffered.
        self.head_scan: HeadScan | None = None
        # Set while h11 reads a chunked request body: sees its bytes first (chunked.py).
        self.chunked: ChunkedScanner | None = None
        # Keep this class at 29 instance attributes or fewer: CPython 3.13 keeps an instance's
        # attributes inline (and its attribute accesses specialized) only up to there; the 30th
        # costs every request 4 % more instructions (bench/cost.py: 88.3k against 84.5k).
        if self.config.server_timing:
            timing.instrument(self)

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.local = _addr(transport.get_extra_info("sockname"))
        self.client = _addr(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        config = self.config
        peer_ip = self.client[0] if self.client else None
        # The connecting peer (the socket's: a proxy, never a client its PROXY header names) is
        # in forwarded_allow_ips: its forwarded headers (scope.forwarded), its forwarder_headers
        # names with an underscore (scope.underscored), h2c (http2/takeover) and an HTTP/2
        # ``:scheme`` over TLS are honoured.
        self.trusted = ip_allowed(peer_ip, config.forwarded_allow_all, config.forwarded_allow_nets)
        if config.http2 and takeover.take(self):
            return  # HTTP/2 by ALPN, or a trusted cleartext peer whose first bytes decide (http2/takeover.py)
        self.server.connection_opened(self)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.held = None
        self._cancel_timers()
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.client_gone()
            cycle.wake()
        self.flow.close()
        self.server.connection_closed(self)

    def eof_received(self) -> bool | None:
        """The client closed its sending side: treated as a disconnect, as uvicorn does.

        A TCP FIN cannot be told apart from a full close until a write fails,
        and a streaming app waiting for http.disconnect must learn it now.
        Returning None lets asyncio close the transport, after what it has buffered:
        held responses join that buffer first (uvloop can deliver a request and the
        FIN after it in one read callback, before the iteration ends).
        """
        self.release()
        self.eof = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.client_gone()
        return None

    def pause_writing(self) -> None:
        self.flow.pause()

    def resume_writing(self) -> None:
        self.flow.resume()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its low-water mark.

        A client that stops reading would keep the app waiting here, and its
        connection slot, forever: once it has taken nothing for POUNCE_SEND_TIMEOUT
        the connection is aborted (its buffer is full, so nothing more could reach
        the client anyway).
        """
        await self.flow.wait(self.loop, self.config.send_timeout, self._send_stalled,
                             self.transport.get_write_buffer_size)

    def _send_stalled(self) -> None:
        if self.flow.paused and not self.closed:
            self.abort_stalled()

    def abort_stalled(self) -> None:
        """The client took nothing of our response for POUNCE_SEND_TIMEOUT: one log line, abort."""
        self.log.info(
            "Closing connection from ip=%s: it read nothing of the response for POUNCE_SEND_TIMEOUT=%gs",
            self.client[0] if self.client else "-", self.config.send_timeout,
        )
        self.closed = True
        self.held = None
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == LINGERING:
            return  # a request sent as we closed: dropped unread, the client sees our FIN
        if phase == IDLE:
            # The idle deadline ends on arrival, not when a task next runs, so a
            # request whose first byte beat it is always served.
            self.phase = ACTIVE
            timeout = self.config.header_timeout  # _arm_header_timer(), inlined
            self.deadline = self.server.deadline_base + timeout if timeout else 0.0
        if self.proxy_buffer is not None:
            try:
                data = self.strip_proxy_header(data)
            except Rejection as exc:
                self.reject(exc.status, str(exc))
                return
            if not data:
                return
        if self.fast:
            self.buffer += data
            self.fast_events()
        else:
            if self.chunked is not None and not self._scan_chunked(data):
                return  # a malformed chunked body, refused before h11 parses it
            scan = self.head_scan
            if scan is not None and scan.head is not None:
                scan.head += data  # a head arriving in pieces: reader._check_head reads it here
            self.conn.receive_data(data)
            self.handle_events()

    def strip_proxy_header(self, data: bytes) -> bytes:
        """Consume a PROXY header before the first request; return what follows it (b"" while
        incomplete). Raises ``Rejection`` for a malformed one or one from a peer not allowed.

        Also called by http2/takeover's preface sniffer: a proxy sends its PROXY header first
        whatever protocol follows.
        """
        buf = self.proxy_buffer + data  # type: ignore[operator]
        config = self.config
        try:
            complete, consumed, client, local = parse_proxy_header(buf, config.proxy_protocol)
            if complete and consumed:
                peer_ip = self.client[0] if self.client else None
                if not ip_allowed(peer_ip, config.proxy_allow_all, config.proxy_allow_nets):
                    raise Rejection(403, f"PROXY header from {peer_ip}, not in proxy_allow_ips")
        except Rejection:
            self.proxy_buffer = None
            raise
        if not complete:
            self.proxy_buffer = buf
            return b""
        self.proxy_buffer = None
        if client is not None:
            self.client = client
        if local is not None:
            self.local = local
        return buf[consumed:]

    # -- a parsed request head (reader.py found it) -----------------------------------

    def start_request(
        self,
        method: bytes,
        target: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        asked_close: bool,
        body_expected: bool,
        head_size: int,
        underscores: bool = True,
    ) -> None:
        """Build the scope and start the app for a parsed request head (either path).

        ``headers`` have lower-cased names (they become the scope's);
        ``head_size`` is the head's length in bytes when known, else 0; ``underscores``
        False when the head holds no ``_`` at all (no name to check for ``header_map``).
        """
        self.deadline = 0.0  # _cancel_timers(), inlined
        self.phase = ACTIVE
        config = self.config
        if not 0 < head_size <= config.head_within_limits:
            self._check_limits(method, target, headers, head_size)
        server = self.server
        scope = http_scope(
            server, method, target, http_version, headers, self.client, self.local, self.scheme, self.trusted,
            underscores,
        )
        if not self.fast and self._upgrade_to_websocket(scope, target, headers):
            return  # WebSocket handshake: the connection is websocket.py's from here on
        self.requests += 1
        keep_alive = config.keepalive > 0 and not server.stopping and not asked_close and not self.eof
        cycle = RequestCycle(server, H1Exchange(self, method, keep_alive), scope, target, body_expected,
                             self.parse_started)
        self.cycle = cycle
        if body_expected and (self.fast or not self.conn.they_are_waiting_for_100_continue):
            # (An Expect: 100-continue body starts its clock when the 100 is sent.)
            self.expect_body()
        server.spawn_request(cycle)

    def _upgrade_to_websocket(self, scope: dict[str, Any], target: bytes, raw: list[tuple[bytes, bytes]]) -> bool:
        """Hand a WebSocket handshake to websocket.py, an ``Upgrade: h2c`` to http2/takeover.py
        (each swaps the transport's protocol).

        Only h11-path requests can be one: the fast path sends any request with
        ``Upgrade`` or ``Connection: upgrade`` to h11. An HTTP/1.0 request is never
        one: RFC 9110 §7.8, a server MUST ignore Upgrade in it (it is served as
        plain HTTP; uvicorn switches).
        """
        if scope["http_version"] == "1.0":
            return False
        return websocket.upgrade(self, scope, target, raw) or (
            self.config.h2c_upgrade and takeover.upgrade(self, scope, target)
        )

    def _next_cycle(self) -> None:
        self.cycle = None
        self.conn.start_next_cycle()
        self.resume_reading()
        self._became_idle()

    def _became_idle(self) -> None:
        """Between requests: close if stopping, else start the keep-alive deadline.

        With part of the next request already buffered (pipelining), the
        connection is not idle: its first byte arrived, so the header timeout
        applies instead and the request is served.
        """
        if self.server.stopping:
            self.close()
        elif self.closed:
            return
        elif self._backlog():
            self._cancel_timers()
            self._arm_header_timer()
        else:
            self._arm_idle_timer(self.config.keepalive)

    def on_response_complete(self, close: bool) -> None:
        """The response went out in full; continue with the next request, or close (``close``:
        it said ``Connection: close``, or h11 says the connection cannot be reused)."""
        server = self.server
        server.requests += 1  # server.request_done(), inlined: this runs once per request
        if server.counted and server.budget.spend():
            server.worker.budget_exhausted()
        if self.closed:
            return
        if close:
            self.close()
            return
        if self.fast:
            self.cycle = None
            if server.stopping:
                self.close()
                return
            if not self.body_remaining:
                if self.buffer:
                    self._became_idle()
                else:  # _became_idle's usual outcome, inlined: this runs once per request
                    self.phase = IDLE
                    self.deadline = server.deadline_base + self.config.keepalive
            else:
                self._await_unread_body()
            if self.read_paused:
                self.resume_reading()
            if not self.processing and self.buffer:
                # Not from inside the app's send(): the next request starts on a clean stack.
                self.loop.call_soon(self.fast_events)
            return
        conn = self.conn
        if conn.their_state is h11.DONE:
            self._next_cycle()
            if self.closed:
                return
            if not self.processing:
                self.loop.call_soon(self.handle_events)
        else:
            # The app answered without reading the whole body: keep reading so
            # h11 can skip to the end of it, then start the next cycle.
            self._await_unread_body()
            self.resume_reading()

    # -- flow control and closing ---------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()
            if self.phase == BODY:
                self.deadline = 0.0  # we stopped reading, not the client: its clock stops

    def resume_reading(self) -> None:
        """Read again, unless unparsed requests are already buffered (a pipelining
        client that does not read its responses must not fill our memory)."""
        if self.read_paused and not self.closed and self._backlog() <= HIGH_WATER:
            self.read_paused = False
            self.transport.resume_reading()
            if self.phase == BODY:
                self.expect_body()

    def _backlog(self) -> int:
        """Bytes received and not parsed yet. On the h11 path through h11's public
        ``trailing_data`` (a copy): only while reading is paused or between requests."""
        if self.fast:
            return len(self.buffer)
        return len(self.conn.trailing_data[0])

    def hold(self, data: bytes) -> None:
        """Send a complete response at the end of this loop iteration, with the others.

        Each send to a peer on this host (a proxy, a client) wakes it on its CPU:
        one wake-up per response when each leaves at once, fewer when all the
        responses of an iteration leave together, and the peer is then reading
        while the last ones go. What this costs a response is the rest of the
        iteration it was made in (under light load, one more pass of the loop).
        Every other write on this connection releases what is held first, so
        bytes never leave out of order.
        """
        held = self.held
        if held is None:
            self.held = [data]
            self.held_size = len(data)
            self.server.hold(self)
        else:  # pipelined requests: bounded, since the client may not be reading
            held.append(data)
            self.held_size += len(data)
            if self.held_size > HOLD_LIMIT:
                self.release()

    def release(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if not self.closed:
                self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write(self, data: bytes) -> None:
        """Every write but a held response's: what is held goes first, so bytes never leave out of order."""
        if self.held is not None:
            self.release()
        if not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        """Close once what was written has gone, without a reset: a lingering close.

        Closing a socket that holds unread bytes makes the kernel answer with RST,
        and a reset can destroy the response the client has not read yet: a
        refusal followed by the rest of a body, a Connection: close response
        followed by a pipelined request, or an idle connection closed just as the
        client sent its next request (it then sees a clean close at a request
        boundary and retries, RFC 9112 §9.3.1, instead of a reset it cannot tell
        from a lost request). So: FIN now, read and drop what arrives, close on the
        client's FIN or after LINGER seconds. The app sees http.disconnect at once.
        TLS transports cannot half-close and close at once.
        """
        if self.held is not None:
            self.release()
        cycle = self.cycle
        if cycle is not None:
            cycle.exchange.flush()  # a started response shows at least its status
        if self.closed:
            return
        self.closed = True
        self.phase = ACTIVE
        if cycle is not None and not cycle.response_complete:
            cycle.client_gone()
        transport = self.transport
        if self.eof or transport.is_closing() or not transport.can_write_eof():
            self.close_transport()
            return
        self.phase = LINGERING
        self.deadline = time.monotonic() + LINGER
        transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    def shutdown(self) -> None:
        """Graceful stop: close idle connections, finish in-flight ones.

        A connection accepted but whose first request has not arrived yet was
        meant for this worker (a proxy may have just opened it for a request on
        its way): it gets FIRST_REQUEST_GRACE seconds to send it, and that
        request is served with ``Connection: close``.
        """
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.exchange.keep_alive = False
        elif self.requests == 0 and not self.closed:
            self._arm_idle_timer(FIRST_REQUEST_GRACE)
        else:
            self.close()

    def reject(self, status: int, message: str) -> None:
        """Answer a request we cannot serve with ``status``, log one line, close."""
        self.log.warning(
            "Invalid request from ip=%s: %s", self.client[0] if self.client else "-", message
        )
        cycle = self.cycle
        if (cycle is None or not cycle.response_started) and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.write(error_page(status, (message + "\n").encode("utf-8", "replace")))
        self.close()
        self.server.request_rejected()
