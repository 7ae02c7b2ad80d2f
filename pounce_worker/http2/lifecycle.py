"""The states of an HTTP/2 connection and the deadline of each, and how it ends.

A connection whose state has no deadline is a slot a client can keep, so
each has one, checked by the loop's tick (``LoopServer.sweep`` calls
``on_deadline`` once ``deadline`` has passed; ``arm`` keeps the earliest):

- before the first stream, the client's preface and first request:
  ``POUNCE_HEADER_TIMEOUT`` (or ``keepalive``), then GOAWAY;
- a stream whose response waits for a window the client keeps closed:
  ``POUNCE_SEND_TIMEOUT``, then RST_STREAM (or, when the connection's own
  window or the socket is what is stuck, GOAWAY and close);
- a stream whose app waits for body bytes: ``POUNCE_BODY_TIMEOUT`` without
  progress, or a body behind ``POUNCE_BODY_MIN_RATE`` past that first allowance
  (both as for HTTP/1.1; the clock stops while the app holds what came), then
  408 (or RST_STREAM once the response started);
- no stream open: ``keepalive``, then GOAWAY(NO_ERROR) and a lingering close;
- after our FIN: ``LINGER`` seconds for the client's.

The app itself has no deadline here, as on HTTP/1.1 (Gunicorn's ``timeout``
watches the loop). Closing: GOAWAY first (ours, never h2's: h2's would close
its state machine under the streams a graceful stop finishes), then FIN.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from .machine import replace_goaway

if TYPE_CHECKING:
    import asyncio

    from ..config import ServerConfig
    from ..log import LoopLog
    from ..loop.server import LoopServer
    from .exchange import StreamExchange
    from .guard import FloodGuard
    from .machine import ServerMachine

#: Seconds a connection we closed may take to acknowledge our FIN (as http1's lingering close).
LINGER = 2.0


class ConnectionLifecycle:
    """Deadlines, the h2c upgrade's HTTP/1.1 body, GOAWAY and closing: a mixin of ``H2Connection``."""

    if TYPE_CHECKING:  # H2Connection's state and methods this mixin uses, for type checkers only
        server: LoopServer
        config: ServerConfig
        log: LoopLog
        h2: ServerMachine
        transport: asyncio.Transport
        streams: dict[int, StreamExchange]
        guard: FloodGuard
        upgrade_h11: Any
        closed: bool
        lingering: bool
        goaway_sent: bool
        last_stream_id: int
        write_paused: bool
        deadline: float
        idle_until: float
        processed: int

        def data_received(self, data: bytes) -> None: ...
        def flush_soon(self) -> None: ...
        def release(self) -> None: ...
        def refuse(self, exchange: StreamExchange, status: int, message: str) -> None: ...
        def _feed(self, exchange: StreamExchange, data: bytes, more: bool) -> None: ...
        def _request_ended(self, exchange: StreamExchange) -> None: ...
        def _reset_stream(self, exchange: StreamExchange, code: ErrorCodes) -> None: ...
        def _gone(self, exchange: StreamExchange) -> None: ...
        def _all_gone(self) -> None: ...
        def _ip(self) -> str: ...

    def upgrade_body(self, data: bytes) -> None:
        """The h2c upgrade request's body, still in HTTP/1.1 framing, to stream 1; then HTTP/2.

        RFC 9113 §3.2 (RFC 7540): the client sends the whole upgrading request
        before its preface. Its size is capped (takeover.UPGRADE_BODY_LIMIT).
        """
        import h11

        conn = self.upgrade_h11
        if data:
            conn.receive_data(data)
        exchange = self.streams.get(1)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.upgrade_h11 = None
                self._fail(f"malformed body of an h2c upgrade request: {exc}", ErrorCodes.PROTOCOL_ERROR)
                return
            if event is h11.NEED_DATA:
                break
            if type(event) is h11.Data:
                if exchange is not None and exchange.cycle is not None and not exchange.app_done:
                    if exchange.body_clock:
                        self._body_arrived(exchange, len(event.data))
                    self._feed(exchange, bytes(event.data), True)
                continue
            # EndOfMessage (h11 then pauses: the request asked to switch protocols).
            rest = bytes(conn.trailing_data[0])
            self.upgrade_h11 = None
            if exchange is not None:
                self._request_ended(exchange)
            if rest:
                self.data_received(rest)
                return
            break
        self.flush_soon()

    def _maybe_idle(self) -> None:
        if self.streams or self.closed:
            return
        if self.goaway_sent or self.server.stopping:
            self.close()
            return
        keepalive = self.config.keepalive
        if not keepalive:
            self.close()
            return
        self.idle_until = self.server.deadline_base + keepalive
        self.arm(self.idle_until)

    def arm(self, when: float) -> None:
        if when and (not self.deadline or when < self.deadline):
            self.deadline = when

    def on_deadline(self) -> None:
        """The earliest deadline passed: find which (idle, a stalled send, a stalled body) and act."""
        self.deadline = 0.0
        if self.lingering:
            self.transport.close()
            return
        if self.closed:
            return
        now = time.monotonic()
        if not self.streams:
            if self.idle_until and self.idle_until <= now:
                self.idle_until = 0.0
                self.close()
            else:
                self.arm(self.idle_until)
            return
        for exchange in list(self.streams.values()):
            if exchange.send_deadline and exchange.send_deadline <= now:
                self._send_stalled(exchange)
                if self.closed:
                    return
            elif exchange.body_deadline and exchange.body_deadline <= now:
                self._body_stalled(exchange)
        for exchange in self.streams.values():
            self.arm(exchange.send_deadline)
            self.arm(exchange.body_deadline)
        self.arm(self.idle_until)
        self.flush_soon()

    def _send_stalled(self, exchange: StreamExchange) -> None:
        timeout = self.config.send_timeout
        if exchange.trailers_expected is not None and exchange.app_done:
            self.log.info("HTTP/2 stream %d from ip=%s: the app announced trailers and sent none within "
                          "POUNCE_SEND_TIMEOUT=%gs; ending the stream without them", exchange.stream_id, self._ip(),
                          timeout)
            exchange.send_deadline = 0.0
            exchange.trailers([], False)
            return
        if self.write_paused or self.h2.outbound_flow_control_window <= 0:
            self.log.info(
                "Closing HTTP/2 connection from ip=%s: its window (or the socket) stayed shut for "
                "POUNCE_SEND_TIMEOUT=%gs",
                self._ip(), timeout,
            )
            self.release()
            self.transport.write(GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id,
                                             error_code=ErrorCodes.NO_ERROR).serialize())
            self.abort()
            return
        self.log.info(
            "Resetting HTTP/2 stream %d from ip=%s: its window stayed closed for POUNCE_SEND_TIMEOUT=%gs",
            exchange.stream_id, self._ip(), timeout,
        )
        self._reset_stream(exchange, ErrorCodes.CANCEL)
        self._gone(exchange)

    def _body_arrived(self, exchange: StreamExchange, size: int) -> None:
        """Body bytes for a stream whose body clock runs: credit them to the rate rule; if the app
        was waiting, it now has work, and the deadline waits for its next ``want_body``."""
        rate = self.config.body_min_rate
        if rate:
            exchange.body_clock += size / rate
        if exchange.body_deadline:
            exchange.body_deadline = 0.0
            exchange.body_paused = self.server.deadline_base

    def _body_stalled(self, exchange: StreamExchange) -> None:
        exchange.body_deadline = 0.0
        config = self.config
        self.refuse(exchange, 408, f"Request body not received in time (POUNCE_BODY_TIMEOUT={config.body_timeout:g}s, "
                    f"POUNCE_BODY_MIN_RATE={config.body_min_rate:g} bytes/s)")

    def _goaway(self, code: ErrorCodes) -> None:
        if self.goaway_sent:
            return
        self.goaway_sent = True
        self.last_stream_id = self.h2.highest_inbound_stream_id
        self.release()
        frame = GoAwayFrame(0, last_stream_id=self.last_stream_id, error_code=code)
        if not self.closed:
            self.transport.write(frame.serialize())

    def shutdown(self) -> None:
        """Graceful stop: GOAWAY with the last stream id, finish the streams in flight, then close."""
        if self.closed:
            return
        self._goaway(ErrorCodes.NO_ERROR)
        if not self.streams:
            self.close()

    def close(self) -> None:
        """GOAWAY (NO_ERROR) if not sent yet, then a lingering close (FIN, drop what comes, close)."""
        if self.closed:
            return
        self._goaway(ErrorCodes.NO_ERROR)
        self.release()  # what h2 framed since (the last responses) goes before our FIN
        self._all_gone()
        self.closed = True
        transport = self.transport
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        self.lingering = True
        self.deadline = time.monotonic() + LINGER
        transport.write_eof()

    def abort(self) -> None:
        self.closed = True
        self._all_gone()
        self.transport.abort()

    def _fail(self, why: str, code: ErrorCodes) -> None:
        """A connection error: GOAWAY with ``code`` (in place of h2's own), one log line, close."""
        self.log.warning("Closing HTTP/2 connection from ip=%s: %s", self._ip(), why)
        self.goaway_sent = True
        # The last stream we acted on: h2 has read (and dropped) the rest of what came with it.
        data = replace_goaway(self.h2.data_to_send(), code, self.processed)
        if not self.closed:
            self.transport.write(data)
        self.close()
