"""The seam between the ASGI cycle and a wire protocol: one request/response on some wire.

``asgi/cycle.py`` knows ASGI (scope, ``receive``/``send``, message checks, hooks,
compression, Server-Timing, pathsend, the error policy) and nothing of bytes on a
wire. Each wire protocol implements ``Exchange`` for one request/response: HTTP/1.1
(``http1/exchange.py``: the fast writer or h11, keep-alive, the deferred head, held
writes) and HTTP/2 (a stream: h2 frames, per-stream flow control, RST_STREAM).

Why these methods and no others: they are what the cycle needs from a wire, each
with one meaning that both protocols can honour. What differs between protocols
lives behind them: ``Connection: close`` and chunked framing are HTTP/1.1's,
window updates and stream resets HTTP/2's. The connection pushes into the cycle
(``RequestCycle.feed``, ``RequestCycle.client_gone``); the cycle calls only its
exchange and the loop's services, never the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from ..io.flow import WriteFlow

Headers = Sequence[tuple[bytes, bytes]]


class Exchange(Protocol):
    """One request/response on some wire, as the ASGI cycle drives it."""

    #: False once this response must end the connection (HTTP/1.1 ``Connection: close``);
    #: the cycle clears it for its own 500. Protocols without the notion ignore it.
    keep_alive: bool

    def start(self, status: int, headers: Headers, cacheable: bool) -> Headers:
        """Frame the response head (status 200-599); it may be deferred until the first body bytes.

        ``headers`` are the app's, unchecked. ``cacheable`` is False when the list is
        one of a kind (the cycle added Server-Timing to it), so a cache of framed
        header blocks must not keep it. Returns the header list as it is sent, for
        the access log. Raises ``TypeError``/``ValueError`` for an invalid head.
        The server's default headers (Server, Date) are the exchange's to add.
        A deferred head must go out by the next loop iteration unless
        ``server.eager_exchange`` is this exchange (its app is running eagerly:
        ``LoopServer.spawn_request`` calls ``flush`` if the app suspends).
        """

    def flush(self) -> None:
        """Write a head ``start`` deferred, now (the app suspended between start and body)."""

    def body(self, data: bytes | bytearray | memoryview, more: bool) -> int:
        """Frame and write body bytes; ``more=False`` ends the response and completes it.

        Completing it moves the wire on (the next request, the stream closed) now,
        not when the app returns: work the app does after its response (background
        tasks) holds nothing up. The cycle marks its response complete before the
        last call. Returns how many body bytes count as sent (0 for HEAD, 204, 304).
        Raises when the body contradicts the head (Content-Length): what was valid
        still goes out, and nothing is completed. Never blocks: ``writable`` is where
        the cycle waits.
        """

    #: Whether ``send`` must wait in ``writable`` before writing more (``flow.paused``): the
    #: connection's (HTTP/1.1) or the stream's (HTTP/2). An attribute, not a property: it is
    #: read before every write, and a property is a call.
    flow: WriteFlow

    async def writable(self) -> None:
        """Wait until more may be written: the transport drained (HTTP/1.1) or windows opened (HTTP/2)."""

    def want_body(self) -> None:
        """The app waits in ``receive`` (for body bytes none of which are buffered, or for the
        disconnect): invite them (100 Continue once, read from the peer again)."""

    def consumed(self, size: int) -> None:
        """The app took ``size`` body bytes: read again (HTTP/1.1), open the window (HTTP/2)."""

    def informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A 1xx before the final response (100, 103 Early Hints), written at once or skipped
        where the wire cannot carry it (HTTP/1.0). Raises ``ValueError`` for an invalid head."""

    async def send_file(self, file: BinaryIO, size: int) -> int:
        """Send ``size`` bytes of ``file`` as the rest of the body without reading it whole.

        Returns how many body bytes count as sent (0 for HEAD); raises ``EOFError``
        (its message: the bytes sent) when the file ends early, ``ClientDisconnected``
        when the peer is gone. The cycle then completes the response with
        ``body(b"", False)``."""

    def fail_unsent(self) -> bool:
        """Nothing of the response is on the wire yet: make it a 500 that ends the exchange; False
        when it is too late."""

    def abort(self) -> None:
        """End the exchange abnormally (an app failure mid-response, an incomplete response): the
        client must not take what it got for a whole response. HTTP/1.1 closes the connection
        (unless it already serves a newer request); HTTP/2 resets the stream."""
