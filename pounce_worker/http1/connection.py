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
import contextlib
import datetime
import operator
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11

from ..asgi import ASGI_VERSION, HTTP_SPEC_VERSION, STATUS_PHRASES, ClientDisconnected, Message, timing
from ..asgi.compression import CompressingSend
from ..asgi.hooks import RequestView, ResponseView, access_environ
from ..asgi.pathsend import EXTENSION as PATHSEND
from ..asgi.pathsend import send_path
from ..websocket import upgrade as websocket
from .chunked import ChunkedScanner, scanner_for
from .fastpath import FastResponse, normalize, parse_head, primed_h11, render
from .proxy import forwarded, ip_allowed, parse_proxy_header
from .validate import HeadScan, Rejection, check_head, check_parsed, split_target

if TYPE_CHECKING:
    from ..loop.server import LoopServer

#: Buffered request body above which we stop reading the socket until the app consumes it.
HIGH_WATER = 65536
CLOSE_HEADER = (b"connection", b"close")
#: Complete responses up to this size wait for the end of the loop iteration (HTTPConnection.hold).
HOLD_LIMIT = 64 * 1024
#: Our own error pages use RFC 9110's names, whatever this Python's http.HTTPStatus says
#: (3.11 has "Request-URI Too Long"; Gunicorn and 3.13 say "URI Too Long").
REJECT_PHRASES = {413: b"Content Too Large", 414: b"URI Too Long"}
#: Header lines some refusals must carry. 405 (CONNECT, see start_request) needs Allow (RFC 9110
#: §15.5.6): the methods an origin server serving a generic ASGI app takes. The server hands every
#: method but CONNECT to the app, which alone knows its routes; these are the ones web apps and
#: their frameworks serve. TRACE is left out: frameworks do not implement it, and a server that
#: advertises it is reported by security scanners (cross-site tracing).
REJECT_FIELDS = {405: b"allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n"}
#: The ASGI spec's Early Hints extension, advertised in every HTTP scope: its message
#: (``links``) and Gunicorn's ``http.response.informational`` (a 1xx status and headers)
#: are both accepted before ``http.response.start`` (RequestCycle._informational).
EARLY_HINT = "http.response.early_hint"
INFORMATIONAL = "http.response.informational"
#: Seconds a connection accepted just before a graceful stop may take to send its first request.
FIRST_REQUEST_GRACE = 1.0
#: Seconds a connection we close may take to acknowledge our FIN (see ``HTTPConnection.close``).
LINGER = 2.0
NO_BODY_STATUS = frozenset({204, 304}) | frozenset(range(100, 200))
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
                        cycle.feed(chunk, more_body=self.body_remaining > 0)
                    except Rejection as exc:
                        self.reject(exc.status, str(exc))
                        return
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
                    cycle.feed(event.data, more_body=True)  # type: ignore[union-attr]
                except Rejection as exc:
                    self.reject(exc.status, str(exc))
                    return
            elif event_type is h11.EndOfMessage:
                self.body_done()
                cycle = self.cycle
                if cycle is not None and not cycle.response_complete:
                    cycle.more_body = False
                    cycle.wake()
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
        if method == b"CONNECT":
            # RFC 9110 §9.3.6: a 2xx answer to CONNECT means a tunnel is open, and a proxy in
            # front may take a generic app's 200 for one; an ASGI app cannot open a tunnel.
            # Refused before the app (405 with Allow: reject(), REJECT_FIELDS), on both paths:
            # parse_head leaves CONNECT to h11.
            raise Rejection(405, "CONNECT is not served: an ASGI app cannot open a tunnel")
        config = self.config
        if not 0 < head_size <= config.head_within_limits:
            self._check_limits(method, target, headers, head_size)
        if target[:1] == b"/" and target.find(b"#") < 0:  # origin-form: split_target's usual case
            raw_path, _, query = target.partition(b"?")
        else:
            raw_path, query = split_target(method, target)
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise Rejection(400, "Request target is not ASCII") from None
        if "%" in path:
            path = unquote(path)
        scheme = self.scheme
        # root_path (like uvicorn's --root-path) is prepended to the path; a
        # SCRIPT_NAME (Gunicorn's: from the environment, or from a trusted
        # proxy listed in forwarder_headers) is a prefix the path already has.
        root_path = config.root_path
        script_name = config.script_name
        if self.trusted and not config.forwarded_names.isdisjoint(map(_field_name, headers)):
            forwarded_scheme, forwarded_script = forwarded(config, headers)
            scheme = forwarded_scheme or scheme
            script_name = forwarded_script.rstrip("/") if forwarded_script is not None else script_name
        if script_name:
            if not path.startswith(script_name):
                raise Rejection(500, f"Request path {path!r} does not start with SCRIPT_NAME {script_name!r}")
            root_path = script_name
        elif root_path:
            path = root_path + path
            raw_path = root_path.encode("ascii") + raw_path
        if config.max_body_size:
            length = _content_length(headers)
            if length is not None and length > config.max_body_size:
                raise Rejection(
                    413, f"Request body of {length} bytes exceeds POUNCE_MAX_BODY_SIZE={config.max_body_size}"
                )
        server = self.server
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": ASGI_VERSION, "spec_version": HTTP_SPEC_VERSION},
            "http_version": "1.1" if http_version == b"1.1" else http_version.decode("ascii"),
            "server": self.local,
            "client": self.client,
            "scheme": scheme,
            "method": method.decode("ascii"),
            "root_path": root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "state": server.state.copy(),
            # pathsend.py (a fresh dict: apps may write to it) and 103 Early Hints (shared:
            # a fresh one costs ~190 instructions a request, for a dict apps only test for)
            # Fresh dicts, as the spec has them: apps may write to them, and one shared
            # across requests and loop threads would be shared mutable state.
            "extensions": {PATHSEND: {}, EARLY_HINT: {}},
        }
        if not self.fast and self._upgrade_to_websocket(scope, target, headers):
            return  # WebSocket handshake: the connection is websocket.py's from here on
        self.requests += 1
        keep_alive = config.keepalive > 0 and not server.stopping and not asked_close and not self.eof
        cycle = RequestCycle(self, scope, method, target, keep_alive, body_expected)
        self.cycle = cycle
        if body_expected and not cycle.expect_100:
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

    def on_response_complete(self, cycle: RequestCycle) -> None:
        """The response went out in full; continue with the next request or close."""
        server = self.server
        server.requests += 1  # server.request_done(), inlined: this runs once per request
        if server.counted and server.budget.spend():
            server.worker.budget_exhausted()
        if self.closed:
            return
        if cycle.must_close or not cycle.keep_alive:
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
        if cycle is not None and cycle.pending_head is not None:
            cycle.flush_head()  # a started response shows at least its status
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
            cycle.keep_alive = False
        elif self.requests == 0 and not self.closed:
            self._arm_idle_timer(FIRST_REQUEST_GRACE)
        else:
            self.close()

    def reject(self, status: int, message: str) -> None:
        """Answer a request we cannot serve with ``status``, log one line, close."""
        self.log.warning(
            "Invalid request from ip=%s: %s", self.client[0] if self.client else "-", message
        )
        body = (message + "\n").encode("utf-8", "replace")
        cycle = self.cycle
        if (cycle is None or not cycle.response_started) and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            reason = REJECT_PHRASES.get(status) or (STATUS_PHRASES[status] if 0 <= status < 600 else b"")
            head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
            head += b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            head += REJECT_FIELDS.get(status, b"")
            head += b"content-length: %d\r\n\r\n" % len(body)
            if not self.closed:
                self.release()
                self.transport.write(head + body)
        self.close()
        self.server.request_rejected()


#: A header pair's name, in C (for set operations over a header list).
_field_name = operator.itemgetter(0)


def _default_lines(server: LoopServer, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The server's default header lines minus those the app set itself."""
    names = {name for name, _ in headers}
    lines = b""
    if b"server" not in names:
        lines += b"server: %s\r\n" % server.config.server_header
    if b"date" not in names:
        lines += b"date: %s\r\n" % server.date_header
    return lines


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestCycle:
    """One request and its response: the ASGI ``receive``/``send`` pair lives here."""

    __slots__ = (
        "_waiter",
        "body",
        "connection",
        "disconnected",
        "expect_100",
        "fast_writer",
        "h11",
        "head_only",
        "heard_disconnect",
        "keep_alive",
        "method",
        "more_body",
        "must_close",
        "pending_head",
        "received",
        "request_complete",
        "response_complete",
        "response_headers",
        "response_started",
        "scope",
        "sent",
        "start_time",
        "status",
        "target",
        "task",
        "timing",
    )

    def __init__(
        self,
        connection: HTTPConnection,
        scope: dict[str, Any],
        method: bytes,
        target: bytes,
        keep_alive: bool,
        more_body: bool,
    ) -> None:
        self.connection = connection
        self.scope = scope
        self.keep_alive = keep_alive
        self.disconnected = False
        self.heard_disconnect = False
        # The task running the app, once it outlives its eager first step (LoopServer.spawn_request).
        self.task: asyncio.Task[None] | None = None
        # h11 knows only on its own path; the fast path hands Expect requests to h11.
        self.expect_100 = not connection.fast and connection.conn.they_are_waiting_for_100_continue
        self.method = method
        self.target = target
        self.head_only = method == b"HEAD"
        self.fast_writer: FastResponse | None = None
        self.h11: h11.Connection | None = None
        self.must_close = False
        self.body = bytearray()
        self.more_body = more_body
        self.received = 0
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.pending_head: bytes | None = None
        self.status = 0
        self.sent = 0
        self.response_headers: Sequence[tuple[bytes, bytes]] = ()
        # Read the clock only for what uses it (access log, post_request, Server-Timing).
        self.start_time = time.monotonic() if connection.server.clock_requests else 0.0
        self._waiter: asyncio.Future[None] | None = None
        # Server-Timing marks of this request (timing.py), None when the feature is off.
        self.timing = (
            timing.RequestTiming(connection.parse_started, self.start_time)
            if connection.config.server_timing else None
        )

    # -- request body ----------------------------------------------------------

    def feed(self, data: bytes, more_body: bool) -> None:
        self.body += data
        self.more_body = more_body
        self.received += len(data)
        limit = self.connection.config.max_body_size
        if limit and self.received > limit:
            raise Rejection(413, f"Request body exceeds POUNCE_MAX_BODY_SIZE={limit}")
        if len(self.body) > HIGH_WATER:
            self.connection.pause_reading()
        self.wake()

    def client_gone(self) -> None:
        """The client left before the response was complete: tell the app, and bound its wind-down.

        Gunicorn's ``asgi_disconnect_grace_period``: the app sees ``http.disconnect``
        and has that many seconds to finish (release a database connection...) before
        its request task is cancelled. Only for a response left incomplete: work an app
        does after a complete response (a background task) is not cut short because the
        client then closed, as it is under ``-k asgi``.
        """
        if self.disconnected:
            return
        self.disconnected = True
        self.wake()
        connection = self.connection
        connection.loop.call_later(connection.config.disconnect_grace, self._cancel_after_grace)

    def _cancel_after_grace(self) -> None:
        task = self.task
        if task is not None and not task.done():
            self.connection.log.info(
                "Cancelling %s %s: still running %gs after its client left (asgi_disconnect_grace_period)",
                self.scope["method"], self.scope["path"], self.connection.config.disconnect_grace,
            )
            task.cancel()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Message:
        connection = self.connection
        if self.expect_100:
            # Only now that the app asks for the body do we invite the client to send it.
            self.expect_100 = False
            if not self.response_started and not connection.closed:
                if not self.request_complete and connection.phase == ACTIVE:
                    connection.expect_body()
                data = connection.conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
                if data:
                    connection.release()
                    connection.transport.write(data)
        if self.request_complete:
            # The whole body was delivered: the next event is the client leaving.
            await self._wait(lambda: self.disconnected or self.response_complete)
            self.heard_disconnect = True
            return {"type": "http.disconnect"}
        await self._wait(lambda: bool(self.body) or not self.more_body or self.disconnected
                         or self.response_complete)
        if self.disconnected or self.response_complete:
            self.heard_disconnect = True
            return {"type": "http.disconnect"}
        body = bytes(self.body)
        self.body.clear()
        more_body = self.more_body
        self.request_complete = not more_body
        connection.resume_reading()
        return {"type": "http.request", "body": body, "more_body": more_body}

    async def _wait(self, ready: Callable[[], bool]) -> None:
        connection = self.connection
        while not ready():
            connection.resume_reading()
            self._waiter = connection.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # -- response --------------------------------------------------------------

    async def send(self, message: Message) -> None:
        connection = self.connection
        if connection.write_paused:
            await connection.drain()
        if self.disconnected:
            if self.heard_disconnect or self._waiter is not None:
                # The app listens for http.disconnect and learns it there (Django races a
                # listener against its view, then cancels the view): raising here too
                # would skip Django's response.close() and its request_finished signal.
                return
            # Spec 2.4: an app that does not listen (a streaming response) must stop.
            raise ClientDisconnected("the client disconnected")
        message_type = message.get("type")
        if not self.response_started:
            if message_type != "http.response.start":
                if message_type == INFORMATIONAL or message_type == EARLY_HINT:
                    self._informational(message)
                    return
                raise RuntimeError(
                    f"ASGI: expected 'http.response.start' as the first message, got {message_type!r}"
                )
            self._start(message)
        elif not self.response_complete:
            if message_type != "http.response.body":
                if message_type == "http.response.pathsend":  # zero-copy file body (pathsend.py)
                    await send_path(self, message)
                    return
                if message_type == INFORMATIONAL or message_type == EARLY_HINT:
                    # RFC 9110 §15.2: a 1xx comes before the final response; the client
                    # would read one written now as (part of) this response's body.
                    raise RuntimeError(
                        f"ASGI: {message_type!r} sent after 'http.response.start': "
                        "an informational (1xx) response must come before the final one"
                    )
                raise RuntimeError(
                    f"ASGI: expected 'http.response.body' after 'http.response.start', got {message_type!r}"
                )
            body = message.get("body", b"")
            if type(body) is not bytes and not isinstance(body, (bytearray, memoryview)):
                raise TypeError(
                    f"ASGI: 'http.response.body' body must be bytes, got {type(body).__name__}"
                )
            self._write_body(body, message.get("more_body", False))  # used for its truth value only
        else:
            raise RuntimeError(
                f"ASGI: message {message_type!r} sent after the response was complete"
            )

    def _informational(self, message: Message) -> None:
        """A 1xx before the final response: 103 Early Hints, written at once.

        Gunicorn's ``http.response.informational`` (``status``, ``headers``) and the
        ASGI spec's ``http.response.early_hint`` (``links``, sent as ``Link`` headers)
        both end here. h11 validates the head and frames it: the connection's own h11
        on its path (which then knows a 100 went out), a primed one on the fast path.
        RFC 8297 §3 / RFC 9110 §15.2: never sent to an HTTP/1.0 client, skipped quietly.
        101 switches protocols, which is not the app's to do here.
        """
        connection = self.connection
        status: Any = 103
        if message.get("type") == EARLY_HINT:
            links = message.get("links", ())
            if isinstance(links, (bytes, str)):
                raise TypeError("ASGI: 'http.response.early_hint' links must be an iterable of bytes")
            headers = [(b"link", link) for link in links]
        else:
            status, headers = message.get("status"), list(message.get("headers", ()))
        if type(status) is not int or not 100 <= status <= 199 or status == 101:
            raise TypeError(f"ASGI: informational status must be an int 100-199 other than 101, got {status!r}")
        for name, value in headers:
            if type(name) is not bytes or type(value) is not bytes:
                raise TypeError(f"ASGI: informational header must be a (bytes, bytes) pair, got {(name, value)!r}")
        try:
            event = h11.InformationalResponse(status_code=status, headers=headers, reason=STATUS_PHRASES[status])
        except h11.LocalProtocolError as exc:
            raise ValueError(f"ASGI: invalid informational response: {exc}") from None
        if connection.fast:
            data = primed_h11(self.method, False).send(event)
        else:
            conn = connection.conn
            if conn.their_http_version != b"1.1":
                return
            data = conn.send(event)
        if status == 100:
            self.expect_100 = False  # the app invited the body itself
        if data and not connection.closed:
            connection.release()
            connection.transport.write(data)

    def _start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 200 <= status <= 599:
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise TypeError(f"ASGI: 'http.response.start' status must be an int 100-599, got {status!r}")
            if status < 200:
                raise RuntimeError("ASGI: informational (1xx) statuses cannot be sent with http.response.start")
        connection = self.connection
        server = connection.server
        raw = message.get("headers", ())
        close = not self.keep_alive
        head = None
        if connection.fast:
            if self.timing is None:
                block = server.header_blocks.get(raw)
            else:  # Server-Timing (timing.py): a header of its own on every response, never cached
                listed, _ = normalize(raw)
                self.timing.add_to(listed)
                block = render(listed, server.header_blocks.names, server.header_blocks.values)
            headers: Sequence[tuple[bytes, bytes]] = block.headers
            has_defaults = block.has_defaults
            if block.fast:
                writer = FastResponse()
                default_lines = server.default_lines if not has_defaults else _default_lines(server, headers)
                head = writer.head(status, default_lines, block, self.method, close)
                self.fast_writer = writer
            else:
                # Headers that need h11's rewriting rules: let h11 frame this one.
                self.h11 = primed_h11(self.method, close)
        else:
            headers, has_defaults = normalize(raw)
            if self.timing is not None:
                self.timing.add_to(headers)
            self.h11 = connection.conn
        if close:
            headers = [*headers, CLOSE_HEADER]
        if head is None:
            assert self.h11 is not None
            defaults = [
                pair
                for pair in ((b"server", connection.config.server_header), (b"date", server.date_header))
                if not has_defaults or all(name != pair[0] for name, _ in headers)
            ]
            response = h11.Response(status_code=status, headers=[*defaults, *headers], reason=STATUS_PHRASES[status])
            head = self.h11.send(response)
        self.response_headers = headers
        self.status = status
        self.response_started = True
        self.expect_100 = False
        self.pending_head = head
        if server.eager_cycle is not self:
            # Not running eagerly (see LoopServer.spawn_request): the app may await
            # something before its body, and the client must see the head meanwhile.
            server.flush_head_soon(self)
        if self.head_only or status in NO_BODY_STATUS:
            self.head_only = True

    def flush_head(self) -> None:
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            connection = self.connection
            if not connection.closed:
                connection.release()
                connection.transport.write(head)

    def _write_body(self, body: bytes | bytearray | memoryview, more_body: bool) -> None:
        writer = self.fast_writer
        if writer is None:
            self._write_h11_body(body, more_body)
            return
        if self.head_only:
            body = b""
        elif type(body) is not bytes:
            body = bytes(body)
        connection = self.connection
        head = self.pending_head
        self.pending_head = None
        try:
            if not more_body and not writer.chunked and writer.remaining != len(body):
                # The body contradicts Content-Length: what fits still goes out with
                # the head, then end() raises.
                head = (head or b"") + writer.data(body)
                writer.end()
            data = writer.body(body, more_body)
        except h11.LocalProtocolError:
            # The client sees the status (and the valid data) before the close.
            if head and not connection.closed:
                connection.release()
                connection.transport.write(head)
            raise
        self.sent += len(body)
        if head is not None:
            data = head + data
        if data and not connection.closed:
            if not more_body and len(data) <= HOLD_LIMIT:
                connection.hold(data)
            else:
                connection.release()
                connection.transport.write(data)
        if not more_body:
            self.must_close = not self.keep_alive
            self.response_complete = True
            if self._waiter is not None:
                self.wake()
            # The connection moves on now, not when the app returns: work the app
            # does after its response (background tasks) must not hold the next request.
            connection.on_response_complete(self)

    def _write_h11_body(self, body: bytes | bytearray | memoryview, more_body: bool) -> None:
        connection = self.connection
        conn = self.h11
        assert conn is not None
        head = self.pending_head
        chunks = [head] if head is not None else []
        try:
            if body and not self.head_only:
                payload = body if type(body) is bytes else bytes(body)
                data = conn.send(h11.Data(data=payload))
                if data:
                    chunks.append(data)
                self.sent += len(body)
            if not more_body:
                end = conn.send(h11.EndOfMessage())
                self.must_close = conn.our_state is h11.MUST_CLOSE
                if end:
                    chunks.append(end)
        except h11.LocalProtocolError:
            # The body contradicts the head (Content-Length): what was valid still goes
            # out, so the client sees the status (and the data) before the close.
            self.pending_head = None
            if chunks and not connection.closed:
                connection.release()
                connection.transport.write(b"".join(chunks))
            raise
        self.pending_head = None
        if chunks and not connection.closed:
            connection.release()
            connection.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if not more_body:
            self.response_complete = True
            if self._waiter is not None:
                self.wake()
            connection.on_response_complete(self)

    # -- running the app -------------------------------------------------------

    async def run(self) -> None:
        connection = self.connection
        server = connection.server
        if server.bare_requests:
            app: Any = server.app
            try:
                result = await app(self.scope, self.receive, self.send)
                if result is not None or not self.response_complete:
                    await self._app_returned(result)
            except BaseException as exc:
                await self._app_failed(exc)
            finally:
                if not self.response_complete:
                    self._finish(None)
            return
        log = connection.log
        hooks = server.hooks
        request_view = None
        compressing: CompressingSend | None = None
        if hooks.pre_request is not None or hooks.post_request is not None:
            request_view = RequestView(self.scope, connection.client, self.target)
        try:
            if hooks.pre_request is not None:
                if hooks.pre_request_is_default:
                    log.debug("%s %s", self.scope["method"], self.scope["path"])  # Gunicorn's default hook
                else:
                    hooks.pre_request(server.worker, request_view)
            app = server.app
            send: Any = self.send
            compression = connection.config.compression
            if compression is not None:  # the app's messages pass through compression.py first
                send = compressing = CompressingSend(send, compression, self.scope)
            if self.timing is not None:
                self.timing.called = time.monotonic()
            result = await app(self.scope, self.receive, send)
            if compressing is not None and not self.response_started:
                await compressing.release()  # a start held for a body that never came
            if result is not None or not self.response_complete:
                await self._app_returned(result)
        except BaseException as exc:
            if compressing is not None and not self.response_started and not self.disconnected:
                with contextlib.suppress(Exception):  # the app's exception is the one to report
                    await compressing.release()
            await self._app_failed(exc)
        finally:
            if request_view is not None or log.access_wanted or not self.response_complete:
                self._finish(request_view)

    async def _app_returned(self, result: object) -> None:
        """The app returned without completing its response, or returned a value."""
        connection = self.connection
        log = connection.log
        if result is not None:
            log.error("ASGI callable should return None, but returned %r", result)
        if not self.response_started:
            if not self.disconnected:
                log.error("ASGI callable returned without starting a response")
                await self._send_500()
        elif not self.response_complete and not self.disconnected:
            log.error("ASGI callable returned without completing the response; closing the connection")
            connection.close()

    async def _app_failed(self, exc: BaseException) -> None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        connection = self.connection
        log = connection.log
        if isinstance(exc, (asyncio.CancelledError, ClientDisconnected)) or self.disconnected:
            # Frameworks re-raise our ClientDisconnected as their own (Starlette's
            # ClientDisconnect): after a disconnect, the exception is its echo.
            log.debug(
                "Request ended by the client disconnecting (%s): %s %s",
                type(exc).__name__, self.scope["method"], self.scope["path"],
            )
            if not self.response_complete:
                connection.close()
            return
        log.exception(
            "Exception in ASGI application while handling %s %s",
            self.scope["method"], self.scope["path"], exc_info=exc,
        )
        if self.response_complete:
            # After the response (a background task, or a framework re-raising after its
            # own 500): close the connection as uvicorn does, unless it already serves a
            # newer request, which this failure must not break.
            if connection.cycle is None:
                connection.close()
        elif not self.response_started and not connection.closed:
            await self._send_500()
        else:
            connection.close()

    async def _send_500(self) -> None:
        self.keep_alive = False
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    def _finish(self, request_view: RequestView | None) -> None:
        connection = self.connection
        server = connection.server
        log = server.log
        try:
            if log.access_wanted or request_view is not None:
                duration = time.monotonic() - self.start_time
                response_view = ResponseView(self.status, self.response_headers, self.sent)
                environ = access_environ(self.scope, connection.client)
                if log.access_wanted:
                    request = request_view or RequestView(self.scope, connection.client, self.target)
                    log.access(response_view, request, environ, datetime.timedelta(seconds=duration))
                if server.hooks.post_request is not None:
                    server.hooks.post_request(server.worker, request_view, environ, response_view)
        except Exception:
            log.exception("Exception in access log or post_request hook")
        if not self.response_complete:
            server.request_done()
            connection.close()
