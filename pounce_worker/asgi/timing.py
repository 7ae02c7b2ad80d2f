"""Server-Timing: where a request spent its time before its response head went out.

Opt-in (``POUNCE_SERVER_TIMING=1``): it reads the clock a few times per request
and adds a header to every response. The marks live in one ``RequestTiming``
per request (created with the request, dropped with it), so nothing here is
shared between requests or loop threads.

Metrics, in milliseconds (RFC-less but the W3C Server-Timing syntax)::

    parse  from the moment the server started reading the request head
           out of its buffer to the scope being built
    queue  from the scope being built to the app being called
    app    from the app being called to the response head being framed
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..http1.connection import HTTPConnection

HEADER = b"server-timing"


class RequestTiming:
    """Clock marks (``time.monotonic()``) of one request."""

    __slots__ = ("called", "parse_started", "parsed")

    def __init__(self, parse_started: float, parsed: float) -> None:
        self.parse_started = parse_started or parsed
        self.parsed = parsed
        self.called = parsed

    def value(self, now: float) -> bytes:
        parse = max(0.0, self.parsed - self.parse_started) * 1000.0
        queue = max(0.0, self.called - self.parsed) * 1000.0
        app = max(0.0, now - self.called) * 1000.0
        return b"parse;dur=%.3f, queue;dur=%.3f, app;dur=%.3f" % (parse, queue, app)

    def add_to(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Append our metrics to the app's own Server-Timing header, or add one."""
        value = self.value(time.monotonic())
        for index in range(len(headers) - 1, -1, -1):
            name, existing = headers[index]
            if name == HEADER:
                headers[index] = (name, existing + b", " + value if existing.strip() else value)
                return
        headers.append((HEADER, value))


def instrument(connection: HTTPConnection) -> None:
    """Stamp ``connection.parse_started`` whenever the connection starts parsing buffered bytes.

    Parsing starts in ``fast_events`` / ``handle_events`` (from ``data_received``,
    or scheduled after a response for a pipelined request). Wrapping those two
    on the instance, only when Server-Timing is on, keeps the off case free of
    any clock read or flag check.
    """
    # The wrappers reach the connection through a weak reference: a strong one would
    # make every connection a reference cycle that only the garbage collector frees.
    ref = weakref.ref(connection)
    cls = type(connection)

    def timed(name: str) -> Callable[[], None]:
        method = getattr(cls, name)

        def wrapper() -> None:
            conn = ref()
            if conn is not None:
                if not conn.processing:
                    conn.parse_started = time.monotonic()
                method(conn)

        return wrapper

    connection.fast_events = timed("fast_events")  # type: ignore[method-assign]
    connection.handle_events = timed("handle_events")  # type: ignore[method-assign]
