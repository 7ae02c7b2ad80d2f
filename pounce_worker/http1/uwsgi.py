"""``protocol = "uwsgi"``: requests sent by nginx's ``uwsgi_pass``, served by the HTTP path.

A uwsgi request is a 4-byte header (modifier1 u8, datasize u16 little-endian,
modifier2 u8), ``datasize`` bytes of CGI-style vars (key and value each
prefixed by a u16-LE length), then ``CONTENT_LENGTH`` body bytes.
``UwsgiTranslator`` parses that incrementally (sans-I/O) and turns it into an
HTTP/1.0 request head followed by the same body bytes, which
``HTTPConnection`` then parses as it would any request: limits, deadlines, the
ASGI cycle, hooks and the access log have one implementation.

Rules, after Gunicorn 27's ``gunicorn/uwsgi/message.py`` (``-k asgi --protocol
uwsgi``), and where they differ:

* A peer outside ``uwsgi_allow_ips`` is refused before anything is parsed
  (Gunicorn: closed without a word, logged at debug; here a 403 and one warning).
  Unix-socket peers are always allowed, as in Gunicorn.
* modifier1 other than 0 is a 501, a malformed vars block a 400 (Gunicorn's
  exception codes; Gunicorn itself closes without answering). At most 1000 vars.
* Path is ``PATH_INFO`` (what nginx routed on, after its normalisation and
  rewrites), query ``QUERY_STRING``; ``raw_path`` is ``REQUEST_URI``'s path when
  it decodes to ``PATH_INFO``, else ``PATH_INFO`` percent-encoded.
* ``HTTP_*`` vars become header fields (``_`` -> ``-``), ``CONTENT_TYPE`` and
  ``CONTENT_LENGTH`` too when not empty. Dropped: ``HTTP_CONTENT_LENGTH``,
  ``HTTP_CONTENT_TYPE`` (duplicates), ``HTTP_TRANSFER_ENCODING`` (nginx passes the
  client's, but the body it forwards is ``CONTENT_LENGTH`` bytes), ``HTTP_EXPECT``
  (nginx answered the 100; ours would be read as the response status) and
  ``HTTP_CONNECTION`` (this hop's framing is ours). A value with CR, LF or NUL,
  or a name that is not a token, is a 400: it cannot smuggle a header line.
* The scope's ``client`` is ``(REMOTE_ADDR, REMOTE_PORT)`` when ``REMOTE_ADDR``
  is an IP address (Gunicorn keeps nginx's address there). The scheme is https
  when ``HTTPS`` is on/1/true, else ``UWSGI_SCHEME`` or ``wsgi.url_scheme`` when
  it is http or https (Gunicorn takes any ``wsgi.url_scheme`` string and ignores
  ``UWSGI_SCHEME``).
* One request per connection, answered with ``Connection: close`` and, without
  a Content-Length, delimited by the close (never chunked: nginx's uwsgi module
  does not decode chunked responses). nginx (1.22, also with ``keepalive`` in its
  upstream) opens a new connection per uwsgi request anyway; Gunicorn keeps
  the connection open for another packet.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from .connection import HTTPConnection
from .proxy import ip_allowed
from .validate import Rejection

if TYPE_CHECKING:
    from ..loop.server import LoopServer

#: Gunicorn's MAX_UWSGI_VARS.
MAX_VARS = 1000
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_DROPPED = frozenset({b"CONTENT-LENGTH", b"CONTENT-TYPE", b"TRANSFER-ENCODING", b"EXPECT", b"CONNECTION"})
_ON = frozenset({b"on", b"1", b"true"})
_SCHEMES = frozenset({b"http", b"https"})
#: Characters left as they are when PATH_INFO / QUERY_STRING are put in a request target.
_PATH_SAFE = "/!$&'()*+,;=:@~-._"
_QUERY_SAFE = _PATH_SAFE + "?%"
_HEADER = struct.Struct("<BHB")


def parse_vars(block: bytes) -> dict[bytes, bytes]:
    """The vars of one packet; raises ``Rejection(400)`` when the block is malformed."""
    out: dict[bytes, bytes] = {}
    pos, end = 0, len(block)
    while pos < end:
        if len(out) >= MAX_VARS:
            raise Rejection(400, f"uwsgi packet has more than {MAX_VARS} vars")
        if pos + 2 > end:
            raise Rejection(400, "uwsgi vars: truncated key size")
        size = block[pos] | block[pos + 1] << 8
        pos += 2
        if pos + size > end:
            raise Rejection(400, "uwsgi vars: truncated key")
        key = block[pos : pos + size]
        pos += size
        if pos + 2 > end:
            raise Rejection(400, "uwsgi vars: truncated value size")
        size = block[pos] | block[pos + 1] << 8
        pos += 2
        if pos + size > end:
            raise Rejection(400, "uwsgi vars: truncated value")
        out[key] = block[pos : pos + size]
        pos += size
    return out


class Request:
    """What one packet's vars say: the HTTP head to parse, the body length, client and scheme."""

    __slots__ = ("client", "head", "length", "scheme")

    def __init__(self, env: dict[bytes, bytes]) -> None:
        method = env.get(b"REQUEST_METHOD") or b"GET"
        if not _TOKEN.match(method):
            raise Rejection(400, f"uwsgi REQUEST_METHOD {method!r} is not a token")
        raw_length = env.get(b"CONTENT_LENGTH") or b"0"
        if not raw_length.isdigit():
            raise Rejection(400, f"uwsgi CONTENT_LENGTH {raw_length!r} is not a number")
        self.length = int(raw_length)
        lines = [method + b" " + _target(env) + b" HTTP/1.0\r\n"]
        if self.length:
            lines.append(b"Content-Length: %d\r\n" % self.length)
        content_type = env.get(b"CONTENT_TYPE")
        if content_type:
            lines.append(b"Content-Type: " + _value(content_type) + b"\r\n")
        for key, value in env.items():
            if key[:5] == b"HTTP_":
                name = key[5:].replace(b"_", b"-")
                if name.upper() in _DROPPED:
                    continue
                if not _TOKEN.match(name):
                    raise Rejection(400, f"uwsgi var {key!r} does not name a header field")
                lines.append(name + b": " + _value(value) + b"\r\n")
        lines.append(b"\r\n")
        self.head = b"".join(lines)
        self.client: tuple[str, int] | None = None
        addr = env.get(b"REMOTE_ADDR")
        if addr:
            try:
                ip = str(ipaddress.ip_address(addr.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                pass
            else:
                port = env.get(b"REMOTE_PORT", b"")
                self.client = (ip, int(port) if port.isdigit() and int(port) < 65536 else 0)
        self.scheme: str | None = None
        if env.get(b"HTTPS", b"").lower() in _ON:
            self.scheme = "https"
        else:
            for key in (b"UWSGI_SCHEME", b"wsgi.url_scheme"):
                value = env.get(key, b"").lower()
                if value in _SCHEMES:
                    self.scheme = value.decode("ascii")
                    break


def _value(value: bytes) -> bytes:
    if _BAD_VALUE.search(value):
        raise Rejection(400, "uwsgi var value contains CR, LF or NUL")
    return value


def _target(env: dict[bytes, bytes]) -> bytes:
    uri = env.get(b"REQUEST_URI", b"")
    uri_path = uri.partition(b"?")[0]
    path_info = env.get(b"PATH_INFO")
    if path_info is None:
        path = uri_path if uri_path[:1] == b"/" else b"/"
        if _BAD_VALUE.search(path) or b" " in path:
            raise Rejection(400, "uwsgi REQUEST_URI contains a space or control character")
    elif uri_path[:1] == b"/" and unquote_to_bytes(uri_path) == path_info and _printable(uri_path):
        path = uri_path  # the client's spelling, as raw_path should be
    else:
        path = quote(path_info if path_info[:1] == b"/" else b"/" + path_info, safe=_PATH_SAFE).encode("ascii")
    query = env.get(b"QUERY_STRING")
    if query:
        if not _printable(query):
            query = quote(query, safe=_QUERY_SAFE).encode("ascii")
        return path + b"?" + query
    return path


def _printable(text: bytes) -> bool:
    return text.isascii() and all(0x20 < c < 0x7F and c != 0x23 for c in text)


class UwsgiTranslator:
    """Incremental uwsgi -> HTTP/1.0 for one connection (one request).

    ``feed(data)`` returns the HTTP bytes ready so far; ``request`` is set once
    the packet's vars are parsed. Raises ``Rejection``.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.request: Request | None = None
        self.remaining = 0

    def feed(self, data: bytes) -> bytes:
        if self.request is not None:
            if not self.remaining:
                return b""  # after the one request: dropped (the connection closes after the response)
            take = data[: self.remaining]
            self.remaining -= len(take)
            return take
        buf = self.buffer + data
        if len(buf) < 4:
            self.buffer = buf
            return b""
        modifier1, size, _modifier2 = _HEADER.unpack_from(buf)
        if modifier1 != 0:
            raise Rejection(501, f"uwsgi modifier1={modifier1} is not supported (only 0, a WSGI request)")
        if len(buf) < 4 + size:
            self.buffer = buf
            return b""
        self.buffer = b""
        request = Request(parse_vars(buf[4 : 4 + size]))
        self.request = request
        body = buf[4 + size : 4 + size + request.length]
        self.remaining = request.length - len(body)
        return request.head + body


class UwsgiConnection(HTTPConnection):
    """An ``HTTPConnection`` whose bytes arrive as uwsgi packets (``protocol = "uwsgi"``)."""

    def __init__(self, server: LoopServer) -> None:
        super().__init__(server)
        self.fast = False  # HTTP/1.0 heads: the fast path would hand each to h11 anyway
        self.uwsgi: UwsgiTranslator | None = UwsgiTranslator()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # Over uwsgi the HTTP_* values are the client's own headers, which nginx passes on as
        # they came: none speaks for the connection (X-Forwarded-Proto would let a client set
        # its scheme). The scheme comes from HTTPS/UWSGI_SCHEME/wsgi.url_scheme alone, as in
        # Gunicorn's uwsgi support.
        self.trusted = False

    def data_received(self, data: bytes) -> None:
        translator = self.uwsgi
        if translator is None:
            return  # refused: reject() closed the connection
        if translator.request is None:
            config = self.config
            peer_ip = self.client[0] if self.client else None
            try:
                if not translator.buffer and not ip_allowed(peer_ip, config.uwsgi_allow_all, config.uwsgi_allow_nets):
                    raise Rejection(403, f"uwsgi request from {peer_ip}, not in uwsgi_allow_ips")
                data = translator.feed(data)
            except Rejection as exc:
                self.uwsgi = None
                self.reject(exc.status, str(exc))
                return
            request = translator.request
            if request is not None:
                if request.client is not None:
                    self.client = request.client
                if request.scheme is not None:
                    self.scheme = request.scheme
        else:
            data = translator.feed(data)
        if data:
            super().data_received(data)
