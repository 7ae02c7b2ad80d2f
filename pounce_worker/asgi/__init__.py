"""ASGI application plumbing shared by the HTTP and lifespan code.

Nothing here holds state: the app reference and these constants are shared by
every loop thread, so they must stay immutable after import.
"""

from __future__ import annotations

import http
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The ASGI versions we implement; copied into each scope because apps may mutate scopes.
ASGI_VERSION = "3.0"
HTTP_SPEC_VERSION = "2.4"
LIFESPAN_SPEC_VERSION = "2.0"


def _phrase(code: int) -> bytes:
    try:
        return http.HTTPStatus(code).phrase.encode("ascii")
    except ValueError:
        return b""


#: Reason phrases, built once; a tuple indexed by status code is immutable and lock-free.
STATUS_PHRASES: tuple[bytes, ...] = tuple(_phrase(code) for code in range(600))


def is_asgi3(app: Any) -> bool:
    """Tell an ASGI 3 single callable from an ASGI 2 double callable, as uvicorn does."""
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - we need the bound method itself
    return inspect.iscoroutinefunction(call)


class ASGI2Adapter:
    """Serve an ASGI 2 app (``app(scope)`` returns ``instance(receive, send)``) as ASGI 3."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def as_asgi3(app: Any) -> ASGIApp:
    """The app as an ASGI 3 callable, or a clear error when it is not callable at all."""
    if not callable(app):
        raise TypeError(f"the application {app!r} is not callable, so it is not an ASGI app")
    return app if is_asgi3(app) else ASGI2Adapter(app)


def asgi_info(spec_version: str = HTTP_SPEC_VERSION) -> dict[str, str]:
    return {"version": ASGI_VERSION, "spec_version": spec_version}


class ClientDisconnected(OSError):
    """Raised by ``send`` once the client has gone (ASGI spec 2.4), so streaming apps stop.

    Here, with the ASGI types, rather than with a protocol: the HTTP cycle, the
    WebSocket session and the file sender all raise it, and none of them may
    import another for it (that was an import cycle).
    """


class Rejection(Exception):
    """A request the server refuses before the app sees it, with the status to answer.

    Here, with the ASGI types, because the scope rules (asgi/scope.py) and every wire
    protocol raise it; each wire answers it its own way (HTTP/1.1: a response and a
    close; HTTP/2: a response on the stream).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
