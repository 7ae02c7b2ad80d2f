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
from ..websocket import upgrade as websocket
from .chunked import ChunkedScanner, scanner_for
from .errors import error_page
from .exchange import HOLD_LIMIT, H1Exchange
from .parse import parse_head
from .proxy import ip_allowed, parse_proxy_header
from .validate import HeadScan, check_head, check_parsed

if TYPE_CHECKING:
    from ..loop.server import LoopServer

#: Buffered request body above which we stop reading the socket until the app consumes it.
HIGH_WATER = 65536
#: Seconds a connection accepted just before a graceful stop may take to send its first request.
FIRST_REQUEST_GRACE = 1.0
#: Seconds a connection we close may take to acknowledge our FIN (see ``HTTPConnection.close``).
LINGER = 2.0
#: HTTPConnection.phase: what the connection waits for, which names its deadline (on_deadline).
#: ACTIVE: a request head (POUNCE_HEADER_TIMEOUT, when armed) or the app (no deadline);
#: BODY: a body the app waits for (POUNCE_BODY_TIMEOUT/_MIN_RATE); UNREAD_BODY: the rest of
#: a body after the response (keepalive); IDLE: the next request (keepalive); LINGER: the
#: client's FIN after ours (LINGER). One attribute, not a flag each: CPython keeps an
#: object's attributes inline only up to 30 of them, and this object is on every request's path.
ACTIVE, BODY, UNREAD_BODY, IDLE, LINGERING = 0, 1, 2, 3, 4


def _addr(sockaddr: Any) -> tuple[str, int] | None:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return (str(sockaddr[0]), int(sockaddr[1]))
    return None


class HTTPConnection(asyncio.Protocol):
    """asyncio protocol for one client connection."""

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
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
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
        self.trusted = bool(config.secure_scheme_headers or config.forward_script_name) and ip_allowed(
            peer_ip, config.forwarded_allow_all, config.forwarded_allow_nets
        )
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
        self._release_drain_waiters()
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
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_drain_waiters()

    def _release_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its low-water mark.

        A client that stops reading would keep the app waiting here, and its
        connection slot, forever: after POUNCE_SEND_TIMEOUT the connection is aborted
        (its buffer is full, so nothing more could reach the client anyway).
        """
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            timeout = self.config.send_timeout
            if not timeout:
                await waiter
                return
            timer = self.loop.call_later(timeout, self._send_stalled, waiter)
            try:
                await waiter
            finally:
                timer.cancel()

    def _send_stalled(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done() and not self.closed:
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
            data = self._strip_proxy_header(data)
            if not data:
                return
        if self.fast:
            self.buffer += data
            self.fast_events()
        else:
            if self.chunked is not None and not self._scan_chunked(data):
                return  # a malformed chunked body, refused before h11 parses it
            self.conn.receive_data(data)
            self.handle_events()

    def _strip_proxy_header(self, data: bytes) -> bytes:
        """Consume a PROXY header before the first request; return what follows it."""
        buf = self.proxy_buffer + data  # type: ignore[operator]
        config = self.config
        try:
            complete, consumed, client, local = parse_proxy_header(buf, config.proxy_protocol)
            if complete and consumed:
                peer_ip = self.client[0] if self.client else None
                if not ip_allowed(peer_ip, config.proxy_allow_all, config.proxy_allow_nets):
                    raise Rejection(403, f"PROXY header from {peer_ip}, not in proxy_allow_ips")
        except Rejection as exc:
            self.proxy_buffer = None
            self.reject(exc.status, str(exc))
            return b""
        if not complete:
            self.proxy_buffer = buf
            return b""
        self.proxy_buffer = None
        if client is not None:
            self.client = client
        if local is not None:
            self.local = local
        return buf[consumed:]

    # -- fast path events --------------------------------------------------------

    def fast_events(self) -> None:
        """Requests that fastpath.parse_head understands; anything else goes to h11."""
        if self.processing:
            return  # re-entered from an eagerly finished request; the outer loop continues
        self.processing = True
        buf = self.buffer
        try:
            while buf and not self.closed:
                cycle = self.cycle
                if self.body_remaining:
                    take = min(len(buf), self.body_remaining)
                    chunk = bytes(buf[:take])
                    del buf[:take]
                    self.body_remaining -= take
                    if self.body_remaining:
                        self.body_progress(take)
                    else:
                        self.body_done()
                    if cycle is None or cycle.response_complete:
                        # Body the app chose not to read: discard it; once it is all
                        # gone the connection is idle between requests.
                        if not self.body_remaining and cycle is None:
                            self._became_idle()
                        continue
                    try:
                        cycle.feed(chunk, self.body_remaining > 0)
                    except Rejection as exc:
                        self.reject(exc.status, str(exc))
                        return
                    if len(cycle.body) > HIGH_WATER:
                        self.pause_reading()  # until the app consumes it
                    continue
                if cycle is not None:
                    # A pipelined request: wait until the current response is complete.
                    self.pause_reading()
                    return
                if buf[0] == 13 and buf[:2] == b"\r\n" and buf[2:4] != b"\r\n":
                    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a
                    # request; one, as Gunicorn does (two are answered 400 by h11).
                    del buf[:2]
                    self.head_scan = None  # its offsets moved
                    continue
                scan = self.head_scan
                # From where the last read's search stopped, when the head came in pieces.
                end = buf.find(b"\r\n\r\n") if scan is None else buf.find(b"\r\n\r\n", scan.resume)
                if end < 0:
                    # h11 rejects some heads before they are complete (a first byte below
                    # 0x21, as in a TLS ClientHello); so does the fast path, by deferring to it.
                    if buf[0] < 0x21 or len(buf) > self.config.max_head_size:
                        self._switch_to_h11()
                        return
                    try:
                        self._check_incomplete_head(buf)
                    except Rejection as exc:
                        self.reject(exc.status, str(exc))
                    return
                if scan is not None:  # it came in pieces: the next head starts afresh
                    self.head_scan = None
                if end + 4 == len(buf):  # the usual case: exactly one head buffered
                    head = bytes(buf)
                else:
                    head = bytes(buf[: end + 4])
                server = self.server
                parsed = parse_head(head, server.known_fields)
                if parsed is None:
                    self._switch_to_h11()  # h11, and the full stricter checks, decide
                    return
                if end + 4 == len(buf):
                    buf.clear()
                else:
                    del buf[: end + 4]
                method, target, headers, length, close, host, content_types = parsed
                self.body_remaining = length
                try:
                    # What parse_head accepts already passed h11's grammar; only these
                    # stricter-than-h11 rules can still apply to it (check_parsed: a Host
                    # value not seen valid before, a repeated Content-Type).
                    if content_types > 1 or host not in server.known_hosts:
                        check_parsed(host, content_types, server.known_hosts)
                    self.start_request(method, target, b"1.1", headers, close, length > 0, end + 4)
                except Rejection as exc:
                    self.reject(exc.status, str(exc))
                    return
        finally:
            self.processing = False
            if len(buf) > HIGH_WATER and self.cycle is not None:
                # Requests pipelined behind the one being served; never a head still
                # arriving (its size is bounded by max_head_size): it would never end.
                self.pause_reading()

    def _switch_to_h11(self) -> None:
        """Hand the buffer to h11 at a request boundary; the connection stays on h11."""
        self.fast = False
        data = bytes(self.buffer)
        self.buffer.clear()
        self.conn.receive_data(data)
        self._handle_events()  # called from within fast_events: `processing` is already set

    # -- h11 events ----------------------------------------------------------------

    def handle_events(self) -> None:
        if self.processing:
            return  # re-entered from an eagerly finished request; the outer loop continues
        self.processing = True
        try:
            self._handle_events()
        finally:
            self.processing = False

    def _handle_events(self) -> None:
        conn = self.conn
        while True:
            if conn.their_state is h11.IDLE and not self.closed:
                try:
                    self._check_head()
                except Rejection as exc:
                    self.reject(exc.status, str(exc))
                    return
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.reject(exc.error_status_hint, f"Invalid HTTP request: {exc}")
                return
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                # Pipelined request waiting for the current response: stop reading
                # until on_response_complete resumes the next cycle.
                self.pause_reading()
                break
            event_type = type(event)
            if event_type is h11.Request:
                request: h11.Request = event  # type: ignore[assignment]
                # h11 is lax about chunk lines and trailers: chunked.py checks a chunked
                # body's bytes before h11 parses them, those already buffered first.
                self.chunked = scanner_for(request.headers, self.config)
                if self.chunked is not None and not self._scan_chunked(conn.trailing_data[0]):
                    return
                try:
                    self.start_request(request.method, request.target, request.http_version,
                                       list(request.headers), False, True, 0)
                except Rejection as exc:
                    self.reject(exc.status, str(exc))
                    return
            elif event_type is h11.Data:
                self.body_progress(len(event.data))  # type: ignore[union-attr]
                cycle = self.cycle
                if cycle is None or cycle.response_complete:
                    continue  # body the app chose not to read; discard it
                try:
                    cycle.feed(event.data, True)  # type: ignore[union-attr]
                except Rejection as exc:
                    self.reject(exc.status, str(exc))
                    return
                if len(cycle.body) > HIGH_WATER:
                    self.pause_reading()  # until the app consumes it
            elif event_type is h11.EndOfMessage:
                self.body_done()
                cycle = self.cycle
                if cycle is not None and not cycle.response_complete:
                    cycle.feed(b"", False)
                elif conn.our_state is h11.DONE:
                    self._next_cycle()
                    continue
                if conn.their_state is h11.MUST_CLOSE:
                    break
            elif event_type is h11.ConnectionClosed:
                break

    def _scan_chunked(self, data: bytes) -> bool:
        """Hand ``data`` to the chunked-body scanner before h11; False once it refused the body."""
        try:
            if self.chunked.feed(data) is not None:  # type: ignore[union-attr]
                self.chunked = None  # the body ended; what follows is the next request
        except Rejection as exc:
            self.chunked = None
            self.reject(exc.status, str(exc))
            return False
        return True

    def _check_head(self) -> None:
        """Stricter-than-h11 checks on the request head in h11's buffer, before h11 parses it.

        A complete head gets ``check_head``; an incomplete one the checks on what
        arrived since the last read (``_check_incomplete_head``), which also refuse
        a bare LF that h11 would take as a line end. h11's buffer is read in place
        (h11 is pinned below 0.17): ``trailing_data`` copies all of it, and did so
        on every read of a head trickled in.
        """
        pending = self.conn._receive_buffer._data
        if not pending:
            return
        scan = self.head_scan
        end = pending.find(b"\r\n\r\n") if scan is None else pending.find(b"\r\n\r\n", scan.resume)
        if end < 0:
            self._check_incomplete_head(pending)
            return
        self.head_scan = None
        config = self.config
        check_head(bytes(pending[: end + 4]), config.permit_obsolete_folding, config.permit_unconventional_http_method)

    def _check_incomplete_head(self, pending: bytes | bytearray) -> None:
        """A head still arriving (``pending`` starts with it): refuse it once it breaks a limit.

        Gunicorn's ``limit_request_*`` and the bare-LF rule, on the bytes new since
        the last read (validate.HeadScan), so a head of 10,000 field lines gets its
        431 at line 101 however it is cut into reads, and a head trickled in costs
        linear time. Raises ``Rejection``. Reading goes on even past HIGH_WATER: the
        head's size is bounded by max_head_size, and it must be read to be answered.
        """
        scan = self.head_scan
        if scan is None:
            scan = self.head_scan = HeadScan()
        config = self.config
        scan.scan(pending, config.limit_request_line, config.limit_request_fields, config.limit_request_field_size)
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def _check_limits(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], head_size: int) -> None:
        """Gunicorn's limit_request_line, _fields and _field_size, for a head that may break one."""
        config = self.config
        limit = config.limit_request_line
        if limit and len(method) + len(target) + 10 > limit:  # "M T HTTP/x.y"
            raise Rejection(414, f"Request line is longer than limit_request_line={limit}")
        limit = config.limit_request_fields
        if limit and len(headers) > limit:
            raise Rejection(431, f"More header fields than limit_request_fields={limit}")
        limit = config.limit_request_field_size
        if limit and not 0 < head_size <= limit:
            # No field can be longer than a head that fits the limit; only check the others.
            for name, value in headers:
                # Gunicorn counts the raw line "Name: value\r\n".
                if len(name) + len(value) + 4 > limit:
                    raise Rejection(
                        431,
                        f"Header field {name.decode('latin-1')!r} is longer than limit_request_field_size={limit}",
                    )

    def start_request(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: list[tuple[bytes, bytes]],
        asked_close: bool,
        body_expected: bool,
        head_size: int,
    ) -> None:
        """Build the scope and start the app for a parsed request head (either path).

        ``headers`` have lower-cased names (they become the scope's);
        ``head_size`` is the head's length in bytes when known, else 0.
        """
        self.deadline = 0.0  # _cancel_timers(), inlined
        self.phase = ACTIVE
        config = self.config
        if not 0 < head_size <= config.head_within_limits:
            self._check_limits(method, target, headers, head_size)
        server = self.server
        scope = http_scope(
            server, method, target, "1.1" if http_version == b"1.1" else http_version.decode("ascii"), headers,
            self.client, self.local, self.scheme, self.trusted,
        )
        if not self.fast and self._upgrade_to_websocket(scope, target, headers):
            return  # WebSocket handshake: the connection is websocket.py's from here on
        self.requests += 1
        keep_alive = config.keepalive > 0 and not server.stopping and not asked_close and not self.eof
        expect_100 = not self.fast and self.conn.they_are_waiting_for_100_continue
        exchange = H1Exchange(self, method, keep_alive, expect_100)
        cycle = RequestCycle(server, exchange, scope, target, body_expected, self.parse_started)
        self.cycle = cycle
        if body_expected and not expect_100:
            # (An Expect: 100-continue body starts its clock when the 100 is sent.)
            self.expect_body()
        server.spawn_request(cycle)

    def _upgrade_to_websocket(self, scope: dict[str, Any], target: bytes, raw: list[tuple[bytes, bytes]]) -> bool:
        """Hand a WebSocket handshake to websocket.py (it swaps the transport's protocol).

        Only h11-path requests can be one: the fast path sends any request with
        ``Upgrade`` or ``Connection: upgrade`` to h11. An HTTP/1.0 request is never
        one: RFC 9110 §7.8, a server MUST ignore Upgrade in it (it is served as
        plain HTTP; uvicorn switches).
        """
        if scope["http_version"] == "1.0":
            return False
        return websocket.upgrade(self, scope, target, raw)

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

    def on_response_complete(self, exchange: H1Exchange) -> None:
        """The response went out in full; continue with the next request or close."""
        server = self.server
        server.requests += 1  # server.request_done(), inlined: this runs once per request
        if server.counted and server.budget.spend():
            server.worker.budget_exhausted()
        if self.closed:
            return
        if exchange.must_close or not exchange.keep_alive:
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
        if self.fast:
            return len(self.buffer)
        # h11 has no public size for its receive buffer (h11 is pinned below 0.17).
        return len(self.conn._receive_buffer)

    # Deadlines count from LoopServer.deadline_base, the last tick's clock plus one
    # tick: at most two ticks late (deadlines fire on ticks anyway), early only by the
    # loop's lag, and no clock read per request.

    def _arm_header_timer(self) -> None:
        timeout = self.config.header_timeout
        if timeout and not self.deadline:
            self.deadline = self.server.deadline_base + timeout

    def _arm_idle_timer(self, timeout: float) -> None:
        self.phase = IDLE
        self.deadline = self.server.deadline_base + timeout

    def expect_body(self) -> None:
        """Start the body's clock: the client owes us body bytes from now on.

        Two rules, in the manner of Apache's mod_reqtimeout: no pause longer than
        POUNCE_BODY_TIMEOUT between reads, and, past that first allowance, an
        average of POUNCE_BODY_MIN_RATE bytes/s. A pause rule alone lets a body
        trickled a byte every few seconds hold a connection slot forever.
        """
        self.phase = BODY
        timeout = self.config.body_timeout
        if timeout:
            self.deadline = self.body_clock = self.server.deadline_base + timeout

    def body_progress(self, size: int) -> None:
        """``size`` body bytes arrived: move the body deadline by both rules.

        ``body_clock`` starts at the first allowance and gains 1/rate seconds per
        byte, so it is where the deadline stands for a body exactly at the rate.
        """
        if self.phase == BODY and self.deadline:
            config = self.config
            deadline = self.server.deadline_base + config.body_timeout
            rate = config.body_min_rate
            if rate:
                self.body_clock += size / rate
                if self.body_clock < deadline:
                    deadline = self.body_clock
            self.deadline = deadline

    def body_done(self) -> None:
        """The request body ended: no deadline while the app works on the request."""
        if self.phase == BODY or self.phase == UNREAD_BODY:
            self.phase = ACTIVE
            self.deadline = 0.0

    def _await_unread_body(self) -> None:
        """The response is complete but the body is not: read (and drop) the rest for keepalive seconds.

        The connection stays open only for the next request's sake, so keep-alive's
        bound applies; a client that stops sending is closed then (uvicorn re-arms
        its keep-alive timer here; Gunicorn's ``-k asgi`` closes at once).
        """
        self.phase = UNREAD_BODY
        self.deadline = self.server.deadline_base + self.config.keepalive

    def on_deadline(self) -> None:
        """Called by the loop's tick once ``deadline`` has passed: the state tells which one."""
        self.deadline = 0.0
        phase, self.phase = self.phase, ACTIVE
        if phase == LINGERING:
            self.phase = LINGERING
            self.transport.close()  # lingering is over: whatever the client still sends is its loss
        elif phase == IDLE:
            self._idle_timeout()
        elif phase == BODY:
            self._body_timeout()
        elif phase == UNREAD_BODY:
            self._close_logged(
                f"the rest of the request body did not arrive within keepalive={self.config.keepalive:g}s "
                "of the response"
            )
        else:
            self._header_timeout()

    def _body_timeout(self) -> None:
        config = self.config
        message = (
            f"Request body not received in time (POUNCE_BODY_TIMEOUT={config.body_timeout:g}s, "
            f"POUNCE_BODY_MIN_RATE={config.body_min_rate:g} bytes/s)"
        )
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.reject(408, message)
        else:
            self._close_logged(message)

    def _close_logged(self, why: str) -> None:
        """Close a connection a deadline ended, with the one log line that says which."""
        self.log.info("Closing connection from ip=%s: %s", self.client[0] if self.client else "-", why)
        self.close()

    def _header_timeout(self) -> None:
        if self.closed or self.cycle is not None or (not self.fast and self.conn.their_state is not h11.IDLE):
            return
        if self.buffer or self.conn.trailing_data[0]:
            self.reject(408, f"Request head not complete within POUNCE_HEADER_TIMEOUT={self.config.header_timeout}s")
        else:
            self.close()

    def _idle_timeout(self) -> None:
        if self.cycle is None and not self.closed:
            self.close()

    def _cancel_timers(self) -> None:
        self.deadline = 0.0
        if self.phase != LINGERING:
            self.phase = ACTIVE

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
            self.deadline = 0.0
            transport.close()
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
