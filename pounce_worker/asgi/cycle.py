"""One request and its response, as ASGI sees them, whatever wire carries them.

The cycle owns what the ASGI spec defines and what Gunicorn adds around an app
call: the ``receive``/``send`` pair and its message checks, the request body
buffer, the disconnect semantics, the ``pre_request``/``post_request`` hooks and
the access log, compression (compression.py wraps ``send``), Server-Timing,
pathsend, and the error policy (a 500 before the head, an abort after it). It
knows nothing of bytes on a wire: it talks to one ``Exchange`` (exchange.py),
which HTTP/1.1 and HTTP/2 each implement, and to the loop's services (the app,
hooks, logger, config: ``LoopServer``). The connection pushes into it: ``feed``
for body bytes, ``client_gone`` when the peer left.

A cycle lives on one loop thread and is created per request: nothing in it is
shared or cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from typing import TYPE_CHECKING, Any

from ..io import wakeup
from ..log import other_loop_hint
from . import ClientDisconnected, Message, Rejection, timing
from .compression import CompressingSend
from .hooks import RequestView, ResponseView, access_environ
from .pathsend import send_path
from .scope import EARLY_HINT

if TYPE_CHECKING:
    from ..loop.server import LoopServer
    from .exchange import Exchange, Headers

#: Gunicorn's message for a 1xx with headers, accepted as the spec's early_hint is.
INFORMATIONAL = "http.response.informational"
#: The response trailers extension's message, after the last body message (exchanges that carry them).
TRAILERS = "http.response.trailers"
#: The body of the 500 an app failure gets before its response started.
ERROR_BODY = b"Internal Server Error"
ERROR_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")]


class RequestCycle:
    """One request and its response: the ASGI ``receive``/``send`` pair lives here."""

    __slots__ = (
        "body",
        "buffered",
        "disconnected",
        "exchange",
        "heard_disconnect",
        "more_body",
        "received",
        "request_complete",
        "response_complete",
        "response_headers",
        "response_started",
        "scope",
        "sent",
        "server",
        "start_time",
        "status",
        "target",
        "task",
        "timing",
        "waiter",
        "waiters",
    )

    def __init__(
        self,
        server: LoopServer,
        exchange: Exchange,
        scope: dict[str, Any],
        target: bytes,
        more_body: bool,
        parse_started: float,
    ) -> None:
        self.server = server
        self.exchange = exchange
        self.scope = scope
        self.target = target
        self.disconnected = False
        self.heard_disconnect = False
        # The task running the app, once it outlives its eager first step (LoopServer.spawn_request).
        self.task: asyncio.Task[None] | None = None
        # Body chunks not handed to the app yet, as they arrived (bytes: each is handed over
        # as it is when it is alone, joined once otherwise), and how many bytes they hold.
        self.body: list[bytes] = []
        self.buffered = 0
        self.more_body = more_body
        self.received = 0
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.status = 0
        self.sent = 0
        self.response_headers: Headers = ()
        # Read the clock only for what uses it (access log, post_request, Server-Timing).
        self.start_time = time.monotonic() if server.clock_requests else 0.0
        #: The app's receive() waiting for body bytes, and any waiting beside it (io/wakeup.py).
        self.waiter: asyncio.Future[None] | None = None
        self.waiters: list[asyncio.Future[None]] | None = None
        # Server-Timing marks of this request (timing.py), None when the feature is off.
        self.timing = timing.RequestTiming(parse_started, self.start_time) if server.config.server_timing else None

    # -- pushed by the connection ------------------------------------------------

    def feed(self, data: bytes, more_body: bool) -> None:
        """Body bytes arrived (``more_body=False``: the body ended). Raises ``Rejection`` past the cap.

        ``data`` must be ``bytes`` (it may reach the app as it is): each wire copies its
        bytes out of its buffer once, and nothing here copies them again.
        """
        if data:
            self.body.append(data)
            self.buffered += len(data)
        self.more_body = more_body
        self.received += len(data)
        limit = self.server.config.max_body_size
        if limit and self.received > limit:
            raise Rejection(413, f"Request body exceeds POUNCE_MAX_BODY_SIZE={limit}")
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
        server = self.server
        server.loop.call_later(server.config.disconnect_grace, self._cancel_after_grace)

    def _cancel_after_grace(self) -> None:
        task = self.task
        if task is not None and not task.done():
            self.server.log.info(
                "Cancelling %s %s: still running %gs after its client left (asgi_disconnect_grace_period)",
                self.scope["method"], self.scope["path"], self.server.config.disconnect_grace,
            )
            task.cancel()

    def wake(self) -> None:
        wakeup.wake(self)

    # -- receive -----------------------------------------------------------------

    async def receive(self) -> Message:
        if self.request_complete:
            # The whole body was delivered: the next event is the client leaving.
            while not (self.disconnected or self.response_complete):
                await self._wait()
            self.heard_disconnect = True
            return {"type": "http.disconnect"}
        while not self.buffered and self.more_body and not self.disconnected and not self.response_complete:
            await self._wait()
        if self.disconnected or self.response_complete:
            self.heard_disconnect = True
            return {"type": "http.disconnect"}
        more_body = self.more_body
        self.request_complete = not more_body
        size = self.buffered
        if size:
            parts = self.body
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            self.buffered = 0
            self.exchange.consumed(size)
        else:
            body = b""
        return {"type": "http.request", "body": body, "more_body": more_body}

    async def _wait(self) -> None:
        self.exchange.want_body()
        await wakeup.wait(self, self.server.loop)

    # -- send ----------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        exchange = self.exchange
        if exchange.flow.paused:
            await exchange.writable()
        if self.disconnected:
            if self.heard_disconnect or self.waiter is not None or self.waiters:
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
            if message.get("more_body", False):  # used for its truth value only
                self.sent += exchange.body(body, True)
                return
            # end_response(body), inlined: this runs once per request.
            self.response_complete = True
            try:
                self.sent += exchange.body(body, False)
            except BaseException:
                self.response_complete = False  # refused (Content-Length): nothing was completed
                raise
            if self.waiter is not None or self.waiters:
                self.wake()
        else:
            trailers = getattr(exchange, "trailers", None) if message_type == TRAILERS else None
            if trailers is None:
                raise RuntimeError(
                    f"ASGI: message {message_type!r} sent after the response was complete"
                )
            # The http.response.trailers extension (HTTP/2 exchanges carry it): after the body.
            trailers(list(message.get("headers", ())), bool(message.get("more_trailers", False)))

    def end_response(self, body: bytes | bytearray | memoryview) -> None:
        """The last body bytes: the exchange writes them and completes the response, which
        moves the wire on now (see ``Exchange.body``)."""
        self.response_complete = True
        try:
            self.sent += self.exchange.body(body, False)
        except BaseException:
            self.response_complete = False  # refused (Content-Length): nothing was completed
            raise
        if self.waiter is not None or self.waiters:
            self.wake()

    def _informational(self, message: Message) -> None:
        """A 1xx before the final response: 103 Early Hints, written at once.

        Gunicorn's ``http.response.informational`` (``status``, ``headers``) and the
        ASGI spec's ``http.response.early_hint`` (``links``, sent as ``Link`` headers)
        both end here; the exchange frames it, or skips it where the wire cannot
        carry it (RFC 8297 §3: never to an HTTP/1.0 client). 101 switches protocols,
        which is not the app's to do here.
        """
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
        self.exchange.informational(status, headers)

    def _start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 200 <= status <= 599:
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise TypeError(f"ASGI: 'http.response.start' status must be an int 100-599, got {status!r}")
            if status < 200:
                raise RuntimeError("ASGI: informational (1xx) statuses cannot be sent with http.response.start")
        raw = message.get("headers", ())
        if "trailers" in message:  # (a containment test: no method call on the hot path)
            expect = getattr(self.exchange, "expect_trailers", None)  # a wire without them ignores it
            if message["trailers"] and expect is not None:
                expect()
        if self.timing is None:
            headers = self.exchange.start(status, raw, True)
        else:  # Server-Timing (timing.py): a header of its own on every response, never cached
            listed = [(bytes(name).lower(), bytes(value)) for name, value in raw]
            self.timing.add_to(listed)
            headers = self.exchange.start(status, listed, False)
        self.response_headers = headers
        self.status = status
        self.response_started = True

    # -- running the app -------------------------------------------------------------

    async def run(self) -> None:
        server = self.server
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
        log = server.log
        hooks = server.hooks
        request_view = None
        compressing: CompressingSend | None = None
        if hooks.pre_request is not None or hooks.post_request is not None:
            request_view = RequestView(self.scope, self.scope["client"], self.target)
        try:
            if hooks.pre_request is not None:
                if hooks.pre_request_is_default:
                    log.debug("%s %s", self.scope["method"], self.scope["path"])  # Gunicorn's default hook
                else:
                    hooks.pre_request(server.worker, request_view)
            app = server.app
            send: Any = self.send
            compression = server.config.compression
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
        log = self.server.log
        if result is not None:
            log.error("ASGI callable should return None, but returned %r", result)
        if not self.response_started:
            if not self.disconnected:
                log.error("ASGI callable returned without starting a response")
                await self._send_500()
        elif not self.response_complete and not self.disconnected:
            log.error("ASGI callable returned without completing the response; closing the connection")
            self.exchange.abort()

    async def _app_failed(self, exc: BaseException) -> None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        log = self.server.log
        if isinstance(exc, (asyncio.CancelledError, ClientDisconnected)) or self.disconnected:
            # Frameworks re-raise our ClientDisconnected as their own (Starlette's
            # ClientDisconnect): after a disconnect, the exception is its echo.
            log.debug(
                "Request ended by the client disconnecting (%s): %s %s",
                type(exc).__name__, self.scope["method"], self.scope["path"],
            )
            if not self.response_complete:
                self.exchange.abort()
            return
        log.exception(
            "Exception in ASGI application while handling %s %s%s",
            self.scope["method"], self.scope["path"], other_loop_hint(exc, self.server.config.loops), exc_info=exc,
        )
        if not self.response_started:
            try:
                await self._send_500()
            except (ClientDisconnected, OSError):  # the client left (or stopped reading) meanwhile
                self.exchange.abort()
        else:
            # Mid-response, or after it (a background task, or a framework re-raising after
            # its own 500): the exchange ends abnormally, as uvicorn closes the connection;
            # a connection that already serves a newer request is left to it.
            self.exchange.abort()

    async def _send_500(self) -> None:
        self.exchange.keep_alive = False
        await self.send({"type": "http.response.start", "status": 500, "headers": ERROR_HEADERS})
        await self.send({"type": "http.response.body", "body": ERROR_BODY})

    def _finish(self, request_view: RequestView | None) -> None:
        server = self.server
        log = server.log
        client = self.scope["client"]
        try:
            if log.access_wanted or request_view is not None:
                duration = time.monotonic() - self.start_time
                response_view = ResponseView(self.status, self.response_headers, self.sent)
                environ = access_environ(self.scope, client, self.target)
                if log.access_wanted:
                    request = request_view or RequestView(self.scope, client, self.target)
                    log.access(response_view, request, environ, datetime.timedelta(seconds=duration))
                if server.hooks.post_request is not None:
                    server.hooks.post_request(server.worker, request_view, environ, response_view)
        except Exception:
            log.exception("Exception in access log or post_request hook")
        if not self.response_complete:
            server.request_done()
            self.exchange.abort()
