"""One HTTP/2 stream's response, as the ASGI cycle drives it (``asgi.exchange.Exchange``).

What differs from HTTP/1.1 lives here: the head waits (to the end of the loop
iteration, or the first body bytes) so a failure before it can still become a
500 and an empty body can end on the HEADERS frame; the body leaves as DATA
frames only as far as both the stream's and the connection's send windows
allow, and ``flow.paused``/``writable`` make the app wait for the rest, so a
client that never opens its window holds one message per stream, never more;
request bytes are acknowledged (WINDOW_UPDATE) only as the app consumes them;
an abort resets this stream, never the connection.

Frames go into the connection's h2 state machine; the connection writes what
h2 has to send once per loop iteration (``H2Connection.flush_soon``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, BinaryIO

import h2.exceptions

from ..asgi import ClientDisconnected
from ..io.flow import WriteFlow
from . import headers as _headers

if TYPE_CHECKING:
    from .connection import H2Connection

#: Bytes read from a file per DATA burst (``send_file``): never the whole file in memory.
FILE_CHUNK = 65536
NO_BODY_STATUS = frozenset({204, 304})
ERROR_500 = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")]


class StreamExchange:
    """The response side of one stream, and the acknowledgement of its request body."""

    keep_alive = True

    def __init__(self, connection: H2Connection, stream_id: int, head_only: bool, expect_100: bool) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.head_only = head_only
        self.head_request = head_only
        self.expect_100 = expect_100
        self.cycle: Any = None
        #: The response head, held until the first body bytes or the end of the iteration.
        self.head: list[tuple[bytes, bytes]] | None = None
        self.head_sent = False
        #: Body bytes framed by the app and not yet sent (windows closed).
        self.out: deque[memoryview] = deque()
        self.out_end = False
        self.end_sent = False
        #: Trailer fields to end the stream with, once complete (``trailers``), and those gathered so far.
        self.trailer_fields: list[tuple[bytes, bytes]] | None = None
        self.trailer_block: list[tuple[bytes, bytes]] = []
        #: True between a head that announced trailers and the trailers (see expect_trailers).
        self.trailers_expected: bool | None = None
        #: Content-Length of the response, and bytes counted against it.
        self.length: int | None = None
        self.sent = 0
        #: The request's END_STREAM arrived (or RST_STREAM): nothing more comes in.
        self.request_ended = False
        #: The stream is over on the wire (ended both ways, or reset): writes are dropped.
        self.closed = False
        self.app_done = False
        self.counted = False
        self._waiter: asyncio.Future[None] | None = None
        #: ``paused`` while body bytes wait for a window or the socket is full (update_flow).
        self.flow = WriteFlow()
        self.flow.paused = connection.write_paused
        #: Connection-clock deadlines of what this stream waits for (0: nothing), see H2Connection.sweep.
        self.send_deadline = 0.0
        self.body_deadline = 0.0
        #: The body's rate rule, as HTTP/1.1's (http1/deadlines.expect_body): where the deadline
        #: stands for a body exactly at POUNCE_BODY_MIN_RATE, from the app's first wait on; and
        #: since when the app holds what came (the client's clock stops then), 0 while it waits.
        self.body_clock = 0.0
        self.body_paused = 0.0
        #: Request body bytes fed to the cycle and not yet read by the app: acknowledged (the
        #: windows reopened) as it reads them, or all at once when the stream goes.
        self.held = 0

    # -- the Exchange protocol -------------------------------------------------

    def start(self, status: int, headers: Any, cacheable: bool) -> Any:
        connection = self.connection
        server = connection.server
        defaults = ((b"server", connection.config.server_header), (b"date", server.date_header))
        if cacheable:
            block, self.length = connection.response_cache.response(status, headers, defaults)
        else:
            block, self.length = _headers.response(status, headers, defaults)
        if status in NO_BODY_STATUS:
            self.head_only = True
        self.expect_100 = False
        self.head = block
        if server.eager_exchange is not self:
            connection.head_pending(self)  # out at the end of this iteration, unless the body takes it first
        return block[1:]

    def flush(self) -> None:
        """The app suspended between its head and its body: the head goes out with this iteration."""
        if self.head is not None:
            self.connection.head_pending(self)

    def flush_head(self, end: bool = False) -> None:
        """Put the held head into h2 (the connection calls this at the end of the iteration)."""
        head = self.head
        if head is None or self.closed:
            return
        self.head = None
        self.head_sent = True
        self.connection.send_headers(self.stream_id, head, end)
        if end:
            self.end_sent = True

    def body(self, data: bytes | bytearray | memoryview, more: bool) -> int:
        sent = self._write(data, more)
        if not more:
            self.complete()  # (after a refused body, _write raised: nothing is completed)
        return sent

    def _write(self, data: bytes | bytearray | memoryview, more: bool) -> int:
        if self.closed:
            return 0
        if self.head_only:
            data = b""  # HEAD, 204, 304: Content-Length describes a body never sent (RFC 9110 §8.6)
        size = len(data)
        error = None
        if self.length is not None and not self.head_only:
            left = self.length - self.sent
            if size > left:
                data, size = data[:left], left
                error = f"response body longer than its Content-Length ({self.length})"
            elif not more and size < left:
                error = f"response body shorter than its Content-Length ({self.length})"
        self.sent += size
        if self.head is not None:
            self.flush_head(end=not more and not size and not self.out and error is None
                            and self.trailers_expected is None)
            if self.end_sent:
                self.connection.stream_sent(self)
                return 0
        if size:
            self.out.append(memoryview(data if type(data) is bytes else bytes(data)))
        if error is not None:
            self.connection.pump(self)
            raise ValueError(error)
        if not more and self.trailers_expected is None:
            self.out_end = True
        self.connection.pump(self)
        return size

    def pump(self) -> None:
        """Send what the windows allow of the body; the rest waits for a WINDOW_UPDATE (``blocked``)."""
        if self.closed:
            return
        connection = self.connection
        conn = connection.h2
        stream_id = self.stream_id
        out = self.out
        moved = False
        try:
            while out:
                window = conn.local_flow_control_window(stream_id)
                if window <= 0:
                    connection.blocked[stream_id] = self
                    break
                chunk = out[0]
                moved = True
                size = min(window, conn.max_outbound_frame_size, len(chunk))
                if size == len(chunk):
                    out.popleft()
                    last = not out and self.out_end and self.trailer_fields is None
                    conn.send_data(stream_id, chunk.tobytes(), end_stream=last)
                    if last:
                        self.end_sent = True
                else:
                    conn.send_data(stream_id, chunk[:size].tobytes())
                    out[0] = chunk[size:]
            else:
                connection.blocked.pop(stream_id, None)
                if self.out_end and not self.end_sent:
                    if self.trailer_fields is not None:
                        conn.send_headers(stream_id, self.trailer_fields, end_stream=True)
                    else:
                        conn.end_stream(stream_id)
                    self.end_sent = True
        except h2.exceptions.ProtocolError:  # (StreamClosedError among them) the stream is gone
            self.closed = True
            out.clear()
        connection.flush_soon()
        if moved and out and self.send_deadline:
            # The client reads, if slowly: POUNCE_SEND_TIMEOUT counts from its last progress.
            self.send_deadline = connection.server.deadline_base + connection.config.send_timeout
        self.update_flow()
        if not self.flow.paused:
            self.wake()
        if self.end_sent:
            connection.stream_sent(self)

    def expect_trailers(self) -> None:
        """The app declared ``trailers: True`` in its head: the body's end waits for ``trailers``."""
        self.trailers_expected = True

    def trailers(self, headers: list[tuple[bytes, bytes]], more: bool) -> None:
        """Response trailers (the ``http.response.trailers`` extension): a HEADERS frame that ends the stream.

        ``more``: more trailer messages follow (ASGI's ``more_trailers``); they are sent together.
        """
        if self.trailers_expected is None or self.closed:
            return
        block, _ = _headers.response(200, headers, ())
        self.trailer_block.extend(block[1:])
        if more:
            return
        self.trailers_expected = None
        self.trailer_fields = self.trailer_block
        self.out_end = True
        self.connection.pump(self)

    @property
    def write_blocked(self) -> bool:
        return (bool(self.out) and not self.closed) or self.connection.write_paused

    def update_flow(self) -> None:
        """Keep ``flow.paused`` (what the cycle reads before each write) equal to ``write_blocked``."""
        self.flow.paused = self.write_blocked

    async def writable(self) -> None:
        connection = self.connection
        while self.write_blocked and not self.closed and not connection.closed:
            self._waiter = waiter = connection.loop.create_future()
            if connection.config.send_timeout:
                self.send_deadline = connection.server.deadline_base + connection.config.send_timeout
                connection.arm(self.send_deadline)
            try:
                await waiter
            finally:
                self._waiter = None
                self.send_deadline = 0.0

    def wake(self) -> None:
        self.update_flow()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def want_body(self) -> None:
        connection = self.connection
        if self.expect_100:
            self.expect_100 = False
            if not self.head_sent and self.head is None and not self.closed:
                connection.send_headers(self.stream_id, [(b":status", b"100")], False)
        config = connection.config
        timeout = config.body_timeout
        if self.request_ended or not timeout:
            return
        # The app waits for body bytes: the client's clock runs (see connection._data).
        base = connection.server.deadline_base
        if not self.body_clock:
            self.body_clock = base + timeout
        elif self.body_paused:
            self.body_clock += base - self.body_paused  # the app held the bytes meanwhile, not the client
        self.body_paused = 0.0
        deadline = base + timeout
        if config.body_min_rate and self.body_clock < deadline:
            deadline = self.body_clock
        self.body_deadline = deadline
        connection.arm(deadline)

    def consumed(self, size: int) -> None:
        held = self.held
        if size > held:
            size = held  # (bytes of an h2c upgrade's HTTP/1.1 body are outside the windows)
        if size:
            self.held = held - size
            self.connection.acknowledge(self.stream_id, size)

    def informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        block = _headers.informational(status, headers)
        if status == 100:
            self.expect_100 = False
        if not self.closed and not self.head_sent:
            self.connection.send_headers(self.stream_id, block, False)

    async def send_file(self, file: BinaryIO, size: int) -> int:
        loop = self.connection.loop
        sent = 0
        while sent < size:
            await self.writable()
            if self.closed:
                raise ClientDisconnected("the client disconnected")
            # Off the loop: a slow disk must not stall every other stream and connection.
            chunk = await loop.run_in_executor(None, file.read, min(FILE_CHUNK, size - sent))
            if not chunk:
                raise EOFError(str(sent))
            self._write(chunk, True)
            sent += len(chunk)
        return 0 if self.head_only else sent

    def fail_unsent(self) -> bool:
        # The app is done with this stream: a request body still coming is not wanted (stream_sent).
        self.app_done = True
        return self.replace(500, ERROR_500[:1], b"Internal Server Error")

    def replace(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Answer ``status`` instead of whatever the app framed, if none of it is on the wire yet."""
        if self.head_sent or self.closed:
            return False
        self.head = None
        self.head_only = self.head_request  # a HEAD request's 500 or refusal has no body either
        self.length = None
        self.sent = 0
        self.out.clear()
        self.trailers_expected = None
        self.start(status, [*headers, (b"content-length", b"%d" % len(body))], False)
        self._write(body, False)  # not completed: the cycle (or the refusal) counts the request
        return True

    def complete(self) -> None:
        """The response is whole (``body(..., False)``): the request counts, the stream may close."""
        self.app_done = True
        self.body_deadline = 0.0
        self.await_end()
        self.connection.stream_done(self)

    def await_end(self) -> None:
        """The response is decided but not all out: announced trailers are what ends the stream,
        or the last bytes wait for a window. Bounded by POUNCE_SEND_TIMEOUT, should the app never
        send them or the client never open it."""
        connection = self.connection
        if (self.trailers_expected is not None or self.out) and connection.config.send_timeout:
            self.send_deadline = connection.server.deadline_base + connection.config.send_timeout
            connection.arm(self.send_deadline)

    def abort(self) -> None:
        self.app_done = True
        self.head = None
        if self.end_sent:
            # What is on the wire is whole (a refusal replaced the app's response): nothing to
            # reset but a request body still coming (connection.stream_sent does that).
            self.connection.stream_sent(self)
            return
        if self.head_sent and self.out_end and self.send_deadline and not self.closed:
            # A refusal replaced the response and waits for the client's window (connection.refuse):
            # it goes out whole, then stream_sent ends the stream, or the send deadline does.
            return
        self.connection.reset(self, "INTERNAL_ERROR")
