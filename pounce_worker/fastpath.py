"""A fast path for the common HTTP/1.1 request and response, exact to h11.

Profiles of the h11 path show most of the per-request time in h11's generic
machinery (event objects, state-machine transitions, header normalisation),
not in parsing as such. Most requests are simple: HTTP/1.1, one Host, no
Transfer-Encoding, no Expect or Upgrade, at most a plain Content-Length. For
those this module parses the head and frames the response directly, using
h11's *own* regular expressions, so the bytes accepted and the bytes produced
are those h11 would accept and produce.

Everything else goes to h11: ``parse_head`` returns ``None`` for a request it
does not fully understand (the connection then hands its buffer to a real
``h11.Connection`` and stays on h11 from that request on), and
``FastResponse.start`` returns ``None`` for a response whose headers need
h11's rewriting rules (the cycle then frames that response with an h11
connection primed with an equivalent request). ``tests/test_fastpath.py``
proves the equivalence with hypothesis against h11 itself, request bytes in and
response bytes out, including every rejection.

h11 is pinned below 0.17 in setup.cfg because these regexes are its internals.
"""

from __future__ import annotations

from typing import NamedTuple

import h11
from h11._headers import _field_name_re, _field_value_re
from h11._readers import header_field_re, request_line_re

#: h11's limit on Content-Length digits (CONTENT_LENGTH_MAX_DIGITS).
_MAX_LENGTH_DIGITS = 20
#: Header names whose presence sends a request to h11.
_SLOW_REQUEST_FIELDS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
#: Response header names whose h11 rewriting rules the fast writer does not replicate.
_SLOW_RESPONSE_FIELDS = frozenset({b"transfer-encoding", b"connection", b"host"})
_NO_BODY_STATUS = frozenset({204, 304})


class ParsedRequest(NamedTuple):
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # raw names, as h11's raw_items()
    content_length: int
    close: bool


def parse_head(head: bytes) -> ParsedRequest | None:
    """Parse a complete head (ending in CRLFCRLF) the way h11 would, or return None.

    ``None`` means "let h11 decide": the request may be valid but not simple,
    or invalid (h11 then produces the rejection and its status).
    """
    lines = head[:-4].split(b"\r\n")
    match = request_line_re.fullmatch(lines[0])
    if match is None or match["http_version"] != b"1.1" or match["method"] == b"CONNECT":
        return None
    headers = []
    content_length = -1
    hosts = 0
    close = False
    for line in lines[1:]:
        field = header_field_re.fullmatch(line)
        if field is None:
            return None
        name = field["field_name"]
        value = field["field_value"]
        lname = name.lower()
        if lname == b"content-length":
            if content_length >= 0 or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return None
            content_length = int(value)
        elif lname == b"host":
            hosts += 1
        elif lname == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens
        elif lname in _SLOW_REQUEST_FIELDS:
            return None
        headers.append((name, value))
    if hosts != 1:
        return None
    return ParsedRequest(match["method"], match["target"], headers, max(content_length, 0), close)


class FastResponse:
    """Frames one response to an HTTP/1.1 request, byte for byte as h11 does."""

    __slots__ = ("chunked", "remaining")

    def __init__(self) -> None:
        self.chunked = False
        self.remaining = 0

    def start(
        self,
        status: int,
        reason: bytes,
        defaults: list[tuple[bytes, bytes]],
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        close: bool,
        known_names: set[bytes],
    ) -> bytes | None:
        """The response head, or None when h11 must frame this response.

        ``defaults`` are the server's own headers (known valid); ``headers``
        are the app's, with lower-case names, validated here with h11's
        regexes and raising ``h11.LocalProtocolError`` exactly where h11 would.
        ``known_names`` caches names already validated (owned by one loop).
        """
        length = None
        for name, value in headers:
            if name not in known_names:
                if not _field_name_re.fullmatch(name):
                    raise h11.LocalProtocolError(f"Illegal header name {name!r}")
                if len(known_names) < 1024:
                    known_names.add(name)
            if name == b"content-length":
                # Digits are a valid field value; anything else goes to h11's rules.
                if length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                    return None
                length = int(value)
                continue
            if not _field_value_re.fullmatch(value):
                raise h11.LocalProtocolError(f"Illegal header value {value!r}")
            if name in _SLOW_RESPONSE_FIELDS:
                return None
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        parts += [b"%s: %s\r\n" % pair for pair in defaults]
        parts += [b"%s: %s\r\n" % pair for pair in headers]
        if status in _NO_BODY_STATUS:
            self.remaining = 0
        elif length is None:
            # h11 chooses chunked by the method as GET, so HEAD responses get the header too.
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.chunked = method != b"HEAD"
        else:
            self.remaining = 0 if method == b"HEAD" else length
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def declare_length(self, head: bytes, length: int, head_only: bool) -> bytes | None:
        """``head`` (from ``start``, not sent yet) with Content-Length instead of chunked.

        For pathsend, which learns the body's size after the head was framed.
        None when ``head`` is not a chunked head this writer made.
        """
        chunked = b"Transfer-Encoding: chunked\r\n"
        at = head.rfind(chunked)
        if at < 0:
            return None
        self.chunked = False
        self.remaining = 0 if head_only else length
        return head[:at] + b"content-length: %d\r\n" % length + head[at + len(chunked):]

    def data(self, body: bytes) -> bytes:
        if not body:
            return b""
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(body), body)
        if len(body) > self.remaining:
            raise h11.LocalProtocolError("Too much data for declared Content-Length")
        self.remaining -= len(body)
        return body

    def end(self) -> bytes:
        if self.chunked:
            return b"0\r\n\r\n"
        if self.remaining:
            raise h11.LocalProtocolError("Too little data for declared Content-Length")
        return b""


def primed_h11(method: bytes, close: bool) -> h11.Connection:
    """An h11 connection ready to send a response to an equivalent request.

    For a response the fast writer does not frame: h11's framing depends only
    on the request's method, HTTP version and keep-alive, which this request
    reproduces.
    """
    conn = h11.Connection(h11.SERVER)
    head = b"%s / HTTP/1.1\r\nHost: x\r\n%s\r\n" % (method, b"Connection: close\r\n" if close else b"")
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    while conn.their_state is not h11.DONE:
        if conn.next_event() is h11.NEED_DATA:  # pragma: no cover - no body was sent
            break
    return conn
