"""Every state of an HTTP/1.1 connection has a deadline, and one at a time.

What the connection waits for names the deadline (``phase``): a request head
(POUNCE_HEADER_TIMEOUT), a body the app waits for (POUNCE_BODY_TIMEOUT and
POUNCE_BODY_MIN_RATE, in the manner of Apache's mod_reqtimeout), the rest of a
body after the response, or the next request (keepalive), our FIN's answer
(LINGER). The loop's tick checks each connection's one ``deadline`` number
(``LoopServer.sweep``) rather than a timer handle per request; deadlines count
from ``LoopServer.deadline_base``, the last tick's clock plus one tick: at most
two ticks late (deadlines fire on ticks anyway), early only by the loop's lag,
and no clock read per request.

A mixin of ``HTTPConnection``, whose state it reads and writes; apart only so
that each file has one job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11

if TYPE_CHECKING:
    import asyncio

    from ..asgi.cycle import RequestCycle
    from ..config import ServerConfig
    from ..log import LoopLog
    from ..loop.server import LoopServer

#: HTTPConnection.phase: what the connection waits for, which names its deadline (on_deadline).
#: ACTIVE: a request head (POUNCE_HEADER_TIMEOUT, when armed) or the app (no deadline);
#: BODY: a body the app waits for (POUNCE_BODY_TIMEOUT/_MIN_RATE); UNREAD_BODY: the rest of
#: a body after the response (keepalive); IDLE: the next request (keepalive); LINGER: the
#: client's FIN after ours (LINGER); DRAINING: the client to take what we wrote before our
#: close (POUNCE_SEND_TIMEOUT without progress). One attribute, not a flag each: CPython keeps an
#: object's attributes inline only up to 30 of them, and this object is on every request's path.
ACTIVE, BODY, UNREAD_BODY, IDLE, LINGERING, DRAINING = 0, 1, 2, 3, 4, 5


class ConnectionDeadlines:
    """The one deadline of a connection's current state, and what happens when it passes."""

    if TYPE_CHECKING:  # HTTPConnection's state and methods this mixin uses, for type checkers only
        server: LoopServer
        config: ServerConfig
        log: LoopLog
        conn: h11.Connection
        transport: asyncio.Transport
        cycle: RequestCycle | None
        client: tuple[str, int] | None
        buffer: bytearray
        fast: bool
        closed: bool
        deadline: float
        phase: int
        body_clock: float

        def reject(self, status: int, message: str) -> None: ...
        def close(self) -> None: ...

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
            self.close_transport()  # lingering is over: whatever the client still sends is its loss
        elif phase == DRAINING:
            self._drain_timeout()
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

    def close_transport(self) -> None:
        """``transport.close()``, which first waits for our write buffer to drain: bounded, so that
        a client that never reads its last response does not keep its slot (POUNCE_SEND_TIMEOUT
        in which it takes nothing, as for a response the app is still writing)."""
        transport = self.transport
        transport.close()
        left = transport.get_write_buffer_size()
        if left and self.config.send_timeout:
            self.phase = DRAINING
            self.body_clock = float(left)  # what is left to send (the body's clock is free once closing)
            self.deadline = self.server.deadline_base + self.config.send_timeout
        else:
            self.deadline = 0.0

    def _drain_timeout(self) -> None:
        transport = self.transport
        left = transport.get_write_buffer_size()
        if not left or transport.get_protocol() is not self:
            return
        if left < self.body_clock:  # the client took some: it gets the timeout again
            self.phase = DRAINING
            self.body_clock = float(left)
            self.deadline = self.server.deadline_base + self.config.send_timeout
            return
        self.log.info("Closing connection from ip=%s: it read nothing of the response for POUNCE_SEND_TIMEOUT=%gs",
                      self.client[0] if self.client else "-", self.config.send_timeout)
        transport.abort()

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
