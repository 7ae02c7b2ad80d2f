"""The ASGI ``http`` scope of a request, by the same rules whatever wire it came on.

HTTP/1.1 and HTTP/2 hand over the same facts (method, target, headers with
lower-case names, the peer, whether the peer is a trusted proxy) and get the same
scope: the path decoded, ``root_path`` (uvicorn's) or a SCRIPT_NAME (Gunicorn's,
possibly from a trusted proxy's header) applied, the forwarded scheme taken from a
trusted proxy, the body cap checked against Content-Length. Rules a request breaks
raise ``Rejection`` before the app sees it.
"""

from __future__ import annotations

import operator
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from . import ASGI_VERSION, HTTP_SPEC_VERSION, Rejection
from .pathsend import EXTENSION as PATHSEND

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..loop.server import LoopServer

#: The ASGI spec's Early Hints extension, advertised in every HTTP scope: its message
#: (``links``) and Gunicorn's ``http.response.informational`` (a 1xx status and headers)
#: are both accepted before ``http.response.start`` (RequestCycle._informational).
EARLY_HINT = "http.response.early_hint"

#: absolute-form: scheme "://" authority, then the path the app sees (RFC 9112 §3.2.2).
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
#: A header pair's name, in C (for set operations over a header list).
_field_name = operator.itemgetter(0)


def split_target(method: bytes, target: bytes) -> tuple[bytes, bytes]:
    """The path and the query the app sees, from a request-target of a form the method takes.

    RFC 9112 §3.2: origin-form (``/path?query``) for most requests;
    absolute-form (``http://host/path?query``), which a server MUST accept,
    and whose path alone is the app's (as Gunicorn's PATH_INFO; routing must
    not see the scheme and authority); authority-form (``host:port``) for
    CONNECT only; asterisk-form (``*``) for OPTIONS only. Anything else is a
    400, as in Gunicorn. A ``#fragment`` belongs to no form: like Gunicorn, it
    is dropped rather than handed to the app inside the path or the query.
    """
    if target[:1] != b"/" and method != b"CONNECT":
        if target == b"*":
            if method != b"OPTIONS":
                raise Rejection(400, "Request target '*' is for OPTIONS only")
        else:
            match = _ABSOLUTE.match(target)
            if match is None:
                raise Rejection(
                    400, f"Request target {target.decode('latin-1')!r} is neither a path nor an absolute URI"
                )
            rest = target[match.end():]
            target = rest if rest[:1] == b"/" else b"/" + rest  # "http://h" and "http://h?q" have path "/"
    fragment = target.find(b"#")
    if fragment >= 0:
        target = target[:fragment]
    raw_path, _, query = target.partition(b"?")
    return raw_path, query


def forwarded(config: Any, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """``(scheme, script_name)`` set by a trusted peer's headers; ``None`` where unset.

    ``headers`` have lower-case names (the scope's). The caller checks trust.
    Values of ``secure_scheme_headers`` are compared exactly, as Gunicorn does.
    """
    names = config.secure_scheme_names
    want_script = config.forward_script_name
    if not want_script and names.isdisjoint(dict(headers)):
        return None, None  # the usual request: no scheme header (dict() and isdisjoint run in C)
    scheme: str | None = None
    script: str | None = None
    for name, value in headers:
        if name in names:
            for header, secure_value in config.secure_scheme_headers:
                if name == header:
                    this = "https" if value == secure_value else "http"
                    if scheme is not None and this != scheme:
                        raise Rejection(400, "Contradictory scheme headers")
                    scheme = this
        elif want_script and name == b"script_name":
            script = value.decode("latin-1")
    return scheme, script


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def underscored(
    config: ServerConfig, headers: list[tuple[bytes, bytes]], trusted: bool
) -> list[tuple[bytes, bytes]]:
    """Gunicorn's ``header_map`` for names with an underscore: ``X_Auth`` and ``X-Auth`` are
    different fields, but anything mapping them to WSGI-style keys (an ASGI-to-WSGI adapter,
    an app's own ``HTTP_X_AUTH``) reads them as one, so a client could pass the first for
    the second. ``drop`` (the default) removes them, ``refuse`` answers 400; a name in
    ``forwarder_headers`` from a peer in ``forwarded_allow_ips`` is kept, as in Gunicorn."""
    allowed = config.underscore_forwarded if trusted else frozenset()
    kept = []
    for name, value in headers:
        if 95 in name and (allowed is not None and name not in allowed):
            if config.header_map == "refuse":
                raise Rejection(400, f"Invalid header name {name.decode('latin-1')!r}: it contains an "
                                     "underscore (header_map='refuse')")
            continue
        kept.append((name, value))
    return kept


def http_scope(
    server: LoopServer,
    method: bytes,
    target: bytes,
    http_version: str,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    local: tuple[str, int] | None,
    scheme: str,
    trusted: bool,
    underscores: bool = True,
) -> dict[str, Any]:
    """The scope of one request; ``headers`` become the scope's (lower-case names).

    ``underscores`` False: the caller saw no ``_`` in the whole head, so no name needs
    ``header_map``'s check (HTTP/1.1's fast path knows it from one scan of its bytes)."""
    if method == b"CONNECT":
        # RFC 9110 §9.3.6: a 2xx answer to CONNECT means a tunnel is open, and a proxy in
        # front may take a generic app's 200 for one; an ASGI app cannot open a tunnel.
        raise Rejection(405, "CONNECT is not served: an ASGI app cannot open a tunnel")
    config = server.config
    if target[:1] == b"/" and target.find(b"#") < 0:  # origin-form: split_target's usual case
        raw_path, _, query = target.partition(b"?")
    else:
        raw_path, query = split_target(method, target)
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise Rejection(400, "Request target is not ASCII") from None
    if "%" in path:
        path = unquote(path)
    # root_path (like uvicorn's --root-path) is prepended to the path; a
    # SCRIPT_NAME (Gunicorn's: from the environment, or from a trusted
    # proxy listed in forwarder_headers) is a prefix the path already has.
    root_path = config.root_path
    script_name = config.script_name
    if trusted and config.forwarded_names and not config.forwarded_names.isdisjoint(map(_field_name, headers)):
        forwarded_scheme, forwarded_script = forwarded(config, headers)
        scheme = forwarded_scheme or scheme
        script_name = forwarded_script.rstrip("/") if forwarded_script is not None else script_name
    if script_name:
        if not path.startswith(script_name):
            raise Rejection(500, f"Request path {path!r} does not start with SCRIPT_NAME {script_name!r}")
        root_path = script_name
    elif root_path:
        path = root_path + path
        raw_path = root_path.encode("ascii") + raw_path
    if underscores and config.header_map != "dangerous":
        for name, _ in headers:
            if 95 in name:  # b"_": rare, so the common request pays one scan of its names
                headers = underscored(config, headers, trusted)
                break
    if config.max_body_size:
        length = content_length(headers)
        if length is not None and length > config.max_body_size:
            raise Rejection(
                413, f"Request body of {length} bytes exceeds POUNCE_MAX_BODY_SIZE={config.max_body_size}"
            )
    return {
        "type": "http",
        "asgi": {"version": ASGI_VERSION, "spec_version": HTTP_SPEC_VERSION},
        "http_version": http_version,
        "server": local,
        "client": client,
        "scheme": scheme,
        "method": method.decode("ascii"),
        "root_path": root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
        "state": server.state.copy(),
        # Fresh dicts, as the spec has them: apps may write to them, and one shared
        # across requests and loop threads would be shared mutable state.
        "extensions": {PATHSEND: {}, EARLY_HINT: {}},
    }
