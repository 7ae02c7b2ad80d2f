"""One HTTP/1.1 request/response, as the ASGI cycle drives it (asgi/exchange.py).

Framing is the fast writer's (frame.FastResponse, which an H1Exchange is: byte
for byte what h11 writes, for the common header sets) or h11's: the connection's own h11 on its
h11 path, a primed one on the fast path for headers that need h11's rewriting
rules. Around the framing, what HTTP/1.1 alone has:

* ``Connection: close`` when this response ends the connection (the client
  asked, keep-alive is off, the worker stops, or the cycle answers its own 500);
* the deferred head: a head waits for the first body bytes so both leave in one
  write, unless the app suspends in between (then it goes out by the next loop
  iteration: ``LoopServer.flush_head_soon``);
* held writes: a complete response up to ``HOLD_LIMIT`` waits for the end of the
  loop iteration (``HTTPConnection.hold``), with every other response of that
  iteration;
* 100 Continue when the app first waits for the body of an ``Expect`` request;
* pathsend through the kernel's sendfile (io/sendfile.py).

Every write goes through ``HTTPConnection.write``, which releases held
responses first, so bytes never leave out of order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import h11

from ..asgi import STATUS_PHRASES, ClientDisconnected
from ..asgi.defaults import NO_BODY_STATUS, default_headers
from ..io.sendfile import send_file
from .deadlines import ACTIVE
from .errors import ERROR_PAGE
from .frame import FastResponse, default_header_lines, normalize, primed_h11, render

if TYPE_CHECKING:
    from .connection import HTTPConnection

CLOSE_HEADER = (b"connection", b"close")
#: Complete responses up to this size wait for the end of the loop iteration (HTTPConnection.hold).
HOLD_LIMIT = 64 * 1024


class FileSpan:
    """Stands for a file's bytes in h11's ``send_with_data_passthrough`` (it only needs a length)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def _replaced() -> None:
    """A failed pathsend made the response a whole 500 (``fail_unsent``): an app that goes on
    sending must not put its bytes after it. This error ends the app; the 500 goes out."""
    raise RuntimeError("ASGI: the response was replaced by a 500 when its pathsend failed; nothing more can be sent")


class H1Exchange(FastResponse):
    """The wire side of one request on an HTTP/1.1 connection.

    A ``FastResponse`` itself, so a response the fast writer frames costs no
    object of its own (one object per request on the hot path, not two); ``h11``
    is None while it does, or names the h11 connection that frames instead.
    """

    __slots__ = (
        "connection",
        "flow",
        "h11",
        "head_only",
        "keep_alive",
        "method",
        "number",
        "owe_100",
        "pending_head",
    )

    def __init__(self, connection: HTTPConnection, method: bytes, keep_alive: bool) -> None:
        self.connection = connection
        self.flow = connection.flow
        self.method = method
        self.keep_alive = keep_alive
        self.head_only = method == b"HEAD"
        self.h11: h11.Connection | None = None
        self.pending_head: bytes | None = None
        # Which request of the connection this is: abort() must not close a newer one's.
        self.number = connection.requests

    # -- flow control --------------------------------------------------------------

    async def writable(self) -> None:
        await self.connection.drain()

    def want_body(self) -> None:
        connection = self.connection
        # Only now that the app asks for the body do we invite the client to send it. h11
        # knows whether it waits (the fast path hands Expect requests to h11); it forgets
        # once the client sends body bytes or we send any response.
        if not connection.fast and not connection.closed:
            conn = connection.conn
            if conn.their_state is h11.SEND_BODY:
                # owe_100: a 100 still owed, the app having sent another 1xx (a 103) first (h11
                # forgets the client waits once any 1xx is out). Set only then: read with a default.
                if conn.they_are_waiting_for_100_continue or getattr(self, "owe_100", False):
                    self.owe_100 = False
                    connection.expect_body()  # the body's clock starts with the 100
                    data = conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
                    if data:
                        connection.write(data)
                elif connection.phase == ACTIVE and not connection.read_paused:
                    connection.expect_body()  # body bytes came without our 100: the clock runs now
        connection.resume_reading()

    def consumed(self, size: int) -> None:
        self.connection.resume_reading()

    # -- the response -----------------------------------------------------------------

    def informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """h11 validates and frames the 1xx: the connection's own on its path (which then
        knows a 100 went out), a primed one on the fast path. Never to an HTTP/1.0 client."""
        connection = self.connection
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
            if status != 100 and conn.they_are_waiting_for_100_continue:
                self.owe_100 = True  # h11 forgets the client waits once this 1xx is out
            data = conn.send(event)
        if data:
            connection.write(data)

    def start(self, status: int, raw: Any, cacheable: bool) -> Sequence[tuple[bytes, bytes]]:
        connection = self.connection
        server = connection.server
        close = not self.keep_alive
        if connection.fast:
            block = server.header_blocks.get(raw) if cacheable else render(
                raw, server.header_blocks.names, server.header_blocks.values
            )
            headers: Sequence[tuple[bytes, bytes]] = block.headers
            if block.fast:  # the usual case: the fast writer (this object) frames it
                self.pending_head = self.frame_head(
                    status, server.default_lines if not block.has_defaults else default_header_lines(server, headers),
                    block, self.method, close,
                )
                if server.eager_exchange is not self:
                    server.flush_head_soon(self)  # see below
                if status in NO_BODY_STATUS:
                    self.head_only = True
                return headers if not close else [*headers, CLOSE_HEADER]
            # Headers that need h11's rewriting rules: let h11 frame this one.
            self.h11 = primed_h11(self.method, close)
            has_defaults = block.has_defaults
        else:
            headers, has_defaults = normalize(raw)
            self.h11 = connection.conn
        if close:
            headers = [*headers, CLOSE_HEADER]
        defaults = default_headers(server, headers) if has_defaults else [
            (b"server", server.config.server_header), (b"date", server.date_header)
        ]
        response = h11.Response(status_code=status, headers=[*defaults, *headers], reason=STATUS_PHRASES[status])
        self.pending_head = self.h11.send(response)
        if server.eager_exchange is not self:
            # Not running eagerly (see LoopServer.spawn_request): the app may await
            # something before its body, and the client must see the head meanwhile.
            server.flush_head_soon(self)
        if status in NO_BODY_STATUS:
            self.head_only = True
        return headers

    def flush(self) -> None:
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            self.connection.write(head)

    def body(self, body: bytes | bytearray | memoryview, more_body: bool) -> int:
        if self.pending_head is ERROR_PAGE:
            _replaced()
        if self.h11 is not None:
            return self._h11_body(body, more_body)
        if self.head_only:
            body = b""
        elif type(body) is not bytes:
            body = bytes(body)
        connection = self.connection
        head = self.pending_head
        self.pending_head = None
        try:
            if not more_body and not self.chunked and self.remaining != len(body):
                # The body contradicts Content-Length: what fits still goes out with
                # the head, then frame_end() raises.
                head = (head or b"") + self.frame_data(body)
                self.frame_end()
            data = self.frame_body(body, more_body)
        except h11.LocalProtocolError:
            # The client sees the status (and the valid data) before the close.
            if head:
                connection.write(head)
            raise
        if head is not None:
            data = head + data
        if data and not connection.closed:
            if not more_body and len(data) <= HOLD_LIMIT:
                connection.hold(data)
            else:
                connection.write(data)
        if not more_body:
            connection.on_response_complete(not self.keep_alive)
        return len(body)

    def _h11_body(self, body: bytes | bytearray | memoryview, more_body: bool) -> int:
        conn = self.h11
        assert conn is not None
        head = self.pending_head
        chunks = [head] if head is not None else []
        sent = 0
        must_close = False
        try:
            if body and not self.head_only:
                payload = body if type(body) is bytes else bytes(body)
                data = conn.send(h11.Data(data=payload))
                if data:
                    chunks.append(data)
                sent = len(body)
            if not more_body:
                end = conn.send(h11.EndOfMessage())
                must_close = conn.our_state is h11.MUST_CLOSE
                if end:
                    chunks.append(end)
        finally:
            # The body contradicts the head (Content-Length): what was valid still goes
            # out, so the client sees the status (and the data) before the close.
            self.pending_head = None
            if chunks:
                self.connection.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if not more_body:
            self.connection.on_response_complete(must_close or not self.keep_alive)
        return sent

    async def send_file(self, file: BinaryIO, size: int) -> int:
        """The file as the rest of the body, framed by what framed the head.

        A head still waiting to go out without a Content-Length gets the file's
        size as one (on the fast path, where the head is bytes we made); otherwise
        the file goes out as one chunk.
        """
        if self.pending_head is ERROR_PAGE:
            _replaced()
        connection = self.connection
        pieces = self._file_framing(size)
        self.flush()
        connection.release()  # what an earlier response left held goes before this file
        sent = 0
        for piece in pieces:
            if isinstance(piece, FileSpan):
                if connection.closed:
                    raise ClientDisconnected("the client disconnected")
                try:
                    sent = await send_file(
                        connection.loop, connection.transport, file, size, lambda: connection.closed, connection.drain,
                        connection.config.send_timeout, connection.abort_stalled,
                    )
                except ConnectionError as exc:
                    raise ClientDisconnected("the client disconnected") from exc
                except RuntimeError as exc:  # asyncio: "Transport is closing"
                    if connection.closed or connection.transport.is_closing():
                        raise ClientDisconnected("the client disconnected") from exc
                    raise
                if sent != size:
                    raise EOFError(sent)
            elif piece:
                connection.write(piece)
        return sent

    def _file_framing(self, size: int) -> list[bytes | FileSpan]:
        """What goes on the wire for the file: framing bytes around a ``FileSpan`` (nothing for HEAD)."""
        fast = self.h11 is None
        if fast and self.pending_head is not None:
            head = self.declare_length(self.pending_head, size, self.head_only)
            if head is not None:
                self.pending_head = head
        if self.head_only or not size:
            return []
        if fast:
            if self.chunked:
                return [b"%x\r\n" % size, FileSpan(size), b"\r\n"]
            self.remaining -= size  # == size: the cycle checked it against Content-Length
            return [FileSpan(size)]
        conn = self.h11
        assert conn is not None
        return list(conn.send_with_data_passthrough(h11.Data(data=FileSpan(size))))  # type: ignore[arg-type]

    def fail_unsent(self) -> bool:
        if self.pending_head is None:
            return False
        self.pending_head = ERROR_PAGE
        self.keep_alive = False
        return True

    # -- the end ---------------------------------------------------------------------------

    def abort(self) -> None:
        connection = self.connection
        if connection.requests == self.number:  # not while the connection serves a newer request
            connection.close()
