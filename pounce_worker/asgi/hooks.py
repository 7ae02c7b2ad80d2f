"""Gunicorn's request hooks and access log, fed from an ASGI request.

Gunicorn's ``pre_request``/``post_request`` hooks and its access-log atoms were
written for WSGI: they read a request object (``method``, ``path``, ``headers``
as upper-cased ``(NAME, value)`` str pairs...), a response object (``status``,
``headers``, ``sent``) and a WSGI-like ``environ``. These views give them the
same shapes so a user's existing hooks and ``access_log_format`` keep working.
They are built per request and only when a hook or the access log wants them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gunicorn.util import split_request_uri


class RequestView:
    """What Gunicorn's hooks read from ``req``, computed from the ASGI scope."""

    __slots__ = (
        "fragment",
        "headers",
        "method",
        "path",
        "peer_addr",
        "query",
        "remote_addr",
        "scheme",
        "scope",
        "uri",
        "version",
    )

    def __init__(self, scope: dict[str, Any], client: tuple[str, int] | None, target: bytes) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        # As Gunicorn's Request: the request target as sent, path still percent-encoded.
        self.uri = target.decode("latin-1")
        # As Gunicorn's: the target's path (an absolute-form target's too: a hook that gates on
        # req.path must see "/admin" for "http://host/admin"), its fragment apart.
        parts = split_request_uri(self.uri) if self.uri[:1] != "/" or "#" in self.uri else None
        self.path = self.uri.partition("?")[0] if parts is None else parts.path or ""
        self.query: str = scope["query_string"].decode("latin-1")
        self.fragment = "" if parts is None else parts.fragment
        major, _, minor = scope["http_version"].partition(".")
        self.version = (int(major), int(minor or 0))
        self.headers = [
            (name.decode("latin-1").upper(), value.decode("latin-1"))
            for name, value in scope["headers"]
        ]
        self.scheme: str = scope["scheme"]
        self.remote_addr = client
        self.peer_addr = client


class ResponseView:
    """What Gunicorn's access log and ``post_request`` read from ``resp``."""

    __slots__ = ("headers", "response_length", "sent", "status", "status_code")

    def __init__(self, status: int, headers: Sequence[tuple[bytes, bytes]], sent: int) -> None:
        self.status = str(status)
        self.status_code = status
        self.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        self.sent = sent
        self.response_length = sent


def access_environ(scope: dict[str, Any], client: tuple[str, int] | None, target: bytes) -> dict[str, Any]:
    """The WSGI-style keys Gunicorn's access atoms read (``h r m U q H f a u`` and ``{x}e``).

    As Gunicorn's sync worker: ``RAW_URI`` (``%(r)s``) is the target as the client sent it,
    ``PATH_INFO`` (``%(U)s``) the path below ``SCRIPT_NAME``.
    """
    query = scope["query_string"].decode("latin-1")
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "RAW_URI": target.decode("latin-1"),
        "PATH_INFO": path,
        "QUERY_STRING": query,
        # Gunicorn logs HTTP/2 requests as "HTTP/2.0" (its h2 Request.version is (2, 0)).
        "SERVER_PROTOCOL": "HTTP/2.0" if scope["http_version"] == "2" else "HTTP/" + scope["http_version"],
        "REMOTE_ADDR": client[0] if client else "-",
        "REMOTE_PORT": str(client[1]) if client else "",
        "SCRIPT_NAME": scope.get("root_path", ""),
        "wsgi.url_scheme": scope["scheme"],
    }
    for name, value in scope["headers"]:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = environ[key] + "," + text if key in environ else text
    return environ


Hook = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Hooks:
    """The request hooks worth calling: ``None`` where the user kept Gunicorn's default.

    Gunicorn's default ``pre_request`` only logs at debug level and the default
    ``post_request`` does nothing, so skipping them saves building the views
    for every request; a debug ``loglevel`` keeps the default ``pre_request``.
    """

    pre_request: Hook | None
    post_request: Hook | None
    #: Gunicorn's default pre_request only logs at debug: done through the loop's tagged log.
    pre_request_is_default: bool = False

    @classmethod
    def from_gunicorn(cls, cfg: Any) -> Hooks:
        settings = cfg.settings
        pre = cfg.pre_request
        if pre is settings["pre_request"].default and cfg.loglevel.lower() != "debug":
            pre = None
        post = cfg.post_request
        if post is settings["post_request"].default:
            post = None
        return cls(
            pre_request=pre,
            post_request=post,
            pre_request_is_default=pre is not None and pre is settings["pre_request"].default,
        )
