"""Reading an HTTP/1.1 connection: request heads and bodies, by the fast path or by h11.

The fast path (parse.py) parses the common request head from the connection's
own buffer; anything it does not fully understand is handed to h11 at a
request boundary, and the connection stays on h11 from then on. Limits h11
does not know (Gunicorn's ``limit_request_*``, the bare-LF rule, a chunked
body's grammar: validate.py, chunked.py) are checked around it, never instead
of it: on a complete head before h11 parses it, and on a head still arriving
as its bytes come in, so a flood of field lines is refused at line 101.

A mixin of ``HTTPConnection``, whose state it reads and writes; apart only so
that each file has one job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11

from ..asgi import Rejection
from .chunked import scanner_for
from .parse import parse_head
from .validate import HeadScan, check_head, check_parsed

if TYPE_CHECKING:
    import asyncio

    from ..asgi.cycle import RequestCycle
    from ..config import ServerConfig
    from ..loop.server import LoopServer
    from .chunked import ChunkedScanner

#: Buffered request body above which we stop reading the socket until the app consumes it.
HIGH_WATER = 65536


class RequestReader:
    """Request heads and bodies, from the connection's buffer (fast path) or h11's."""

    if TYPE_CHECKING:  # HTTPConnection's state and methods this mixin uses, for type checkers only
        server: LoopServer
        config: ServerConfig
        conn: h11.Connection
        transport: asyncio.Transport
        cycle: RequestCycle | None
        buffer: bytearray
        body_remaining: int
        chunked: ChunkedScanner | None
        head_scan: HeadScan | None
        fast: bool
        processing: bool
        closed: bool
        read_paused: bool

        def reject(self, status: int, message: str) -> None: ...
        def pause_reading(self) -> None: ...
        def start_request(
            self, method: bytes, target: bytes, http_version: str, headers: list[tuple[bytes, bytes]],
            asked_close: bool, body_expected: bool, head_size: int, underscores: bool = True,
        ) -> None: ...
        def body_progress(self, size: int) -> None: ...
        def body_done(self) -> None: ...
        def _became_idle(self) -> None: ...
        def _next_cycle(self) -> None: ...

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
                    if take == len(buf):  # the usual case: the buffer is body to its end
                        chunk = bytes(buf)
                        buf.clear()
                    else:
                        chunk = bytes(memoryview(buf)[:take])  # one copy, not a slice and its copy
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
                    if cycle.buffered > HIGH_WATER:
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
                    # 95 in head: one memchr tells the scope whether any field name can hold
                    # an underscore (header_map), so the usual head skips the per-name scan.
                    self.start_request(method, target, "1.1", headers, close, length > 0, end + 4, 95 in head)
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
                    self.start_request(request.method, request.target, request.http_version.decode("ascii"),
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
                if cycle.buffered > HIGH_WATER:
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
        a bare LF that h11 would take as a line end. h11's buffer is not ours: the
        head is copied out of it once, when it starts arriving (``trailing_data``),
        and the bytes that follow are appended to that copy as they are read
        (``HeadScan.head``), so a head trickled in costs linear time.
        """
        scan = self.head_scan
        if scan is not None and scan.head is not None:
            pending: bytes | bytearray = scan.head  # the head so far (data_received appends to it)
        else:
            pending = self.conn.trailing_data[0]  # one copy per head, when it starts arriving
            if not pending:
                return
        end = pending.find(b"\r\n\r\n") if scan is None else pending.find(b"\r\n\r\n", scan.resume)
        if end < 0:
            self._check_incomplete_head(pending)
            scan = self.head_scan
            if scan is not None and scan.head is None:
                scan.head = bytearray(pending)
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
