"""A fast path for the common HTTP/1.1 request and response, exact to h11.

Profiles of the h11 path show most of the per-request time in h11's generic
machinery (event objects, state-machine transitions, header normalisation),
not in parsing as such. Most requests are simple: HTTP/1.1, one Host, no
Transfer-Encoding, no Expect or Upgrade, at most a plain Content-Length. For
those this module parses the head and frames the response directly, with
RFC 9110's field grammar as h11 reads it, so the bytes accepted and the bytes
produced are those h11 would accept and produce.

Everything else goes to h11: ``parse_head`` returns ``None`` for a request it
does not fully understand (the connection then hands its buffer to a real
``h11.Connection`` and stays on h11 from that request on), and
``FastResponse.start`` returns ``None`` for a response whose headers need
h11's rewriting rules (the cycle then frames that response with an h11
connection primed with an equivalent request). ``tests/test_fastpath.py``
proves the equivalence with hypothesis against h11 itself, request bytes in and
response bytes out, including every rejection.

The grammar is written here, not taken from h11's private modules, so a new
h11 release cannot change it unseen: ``tests/test_fastpath.py`` compares it with
the installed h11's on generated field names and values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

import h11

from ..asgi import STATUS_PHRASES

#: RFC 9110 §5.1: field-name = token (§5.6.2).
FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
#: RFC 9110 §5.5: field-value = *field-content, field-content = field-vchar [ 1*( SP / HTAB /
#: field-vchar ) field-vchar ], field-vchar = VCHAR / obs-text; as h11 reads it (any byte but NUL
#: and white space, which includes obs-text and excludes CR, LF and the other controls h11 lets by).
FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
#: h11's limit on Content-Length digits (CONTENT_LENGTH_MAX_DIGITS).
_MAX_LENGTH_DIGITS = 20
#: Header names whose presence sends a request to h11.
_SLOW_REQUEST_FIELDS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
#: Response header names whose h11 rewriting rules the fast writer does not replicate.
_SLOW_RESPONSE_FIELDS = frozenset({b"transfer-encoding", b"connection", b"host"})
_NOTABLE_RESPONSE_FIELDS = frozenset({b"content-length"}) | _SLOW_RESPONSE_FIELDS
_NO_BODY_STATUS = frozenset({204, 304})
#: Bounds of the per-loop caches of validated response header names and values.
_CACHE_ENTRIES = 1024
_CACHE_VALUE_SIZE = 256
#: Status lines as h11 writes them, with asgi.STATUS_PHRASES' reasons.
STATUS_LINES: tuple[bytes, ...] = tuple(b"HTTP/1.1 %d %s\r\n" % (code, STATUS_PHRASES[code]) for code in range(600))


#: Lower-cased request header names parse_head must look at; any other name is just kept.
_NOTABLE_REQUEST_FIELDS = frozenset({b"content-length", b"host", b"connection", b"content-type"}) | _SLOW_REQUEST_FIELDS


class ParsedRequest(NamedTuple):
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # lower-cased names, as iterating h11's Request.headers
    content_length: int
    close: bool
    host: bytes  # the one Host value
    content_types: int  # how many Content-Type fields (validate.check_parsed refuses two)


def _class_table(members: bytes) -> bytes:
    """A ``bytes.translate`` table mapping ``members`` to themselves and all else to 0.

    ``0 in data.translate(table)`` then tells whether ``data`` holds a byte
    outside the class, in two tight C loops. (``translate(None, delete)``
    rebuilds its table on every call, and ``b"x" in data`` first tries the
    needle as an integer and formats a TypeError: both cost far more here.)
    """
    return bytes(b if b in members else 0 for b in range(256))


#: RFC 9110 tchar: what h11's ``token`` admits (field names).
_TOKEN = _class_table(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: Method bytes the fast path takes: validate.py's conventional method (upper-case token
#: characters, 3 to 20 of them); others go to h11's path, where that rule and Gunicorn's
#: ``permit_unconventional_http_method`` apply.
_CONVENTIONAL_METHOD = _class_table(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
#: What h11 admits in a request target: VCHAR, 0x21-0x7E.
_VCHAR = _class_table(bytes(range(0x21, 0x7F)))
#: Bytes a field line may hold on the fast path: visible ASCII, SP, HTAB and obs-text.
#: Control characters (and a CR or LF that is not a line end) are left to h11 and
#: validate.check_head, which rejects them.
_LINE_BYTES = _class_table(bytes(range(0x20, 0x7F)) + b"\t" + bytes(range(0x80, 0x100)))


#: Bounds of a loop's caches of parsed request fields (FieldCache): single field lines
#: (entries, and line length), and whole field blocks (entries, and block length).
FIELD_CACHE_ENTRIES = 2048
FIELD_CACHE_LINE = 512
FIELD_BLOCK_ENTRIES = 128
FIELD_BLOCK_SIZE = 4096


class FieldCache:
    """One loop's parsed request fields: single lines, and the whole block after the request line.

    Most field lines repeat from request to request (Host, User-Agent, Accept...),
    and so does the whole block for a given client (an API client, a proxy, a
    load balancer's probe): a dictionary lookup costs a fraction of parsing. The
    cached values are immutable tuples, so sharing them between scopes is safe
    (each scope still gets a fresh list). Owned by one loop, and bounded: a flood
    of one-off lines or blocks cannot pin memory.
    """

    __slots__ = ("blocks", "lines")

    def __init__(self) -> None:
        self.lines: dict[bytes, tuple[bytes, bytes]] = {}
        self.blocks: dict[bytes, _Fields] = {}


#: A parsed field block: (headers, content length, close, host, how many Content-Type fields).
_Fields = tuple[tuple[tuple[bytes, bytes], ...], int, bool, bytes, int]


def parse_field(line: bytes) -> tuple[bytes, bytes] | None:
    """One field line as h11 reads it: (lower-cased name, value), or None if h11's grammar or ours refuse it.

    With no control character, CR or LF in the line, it is ``token ":" OWS
    value OWS`` exactly when its name (up to the first colon: a token has
    none) is a non-empty token, and the value is the rest stripped of SP/HTAB,
    as h11's regex captures it (its value starts and ends with a visible byte).
    """
    name, colon, value = line.partition(b":")
    if not colon or not name or 0 in line.translate(_LINE_BYTES) or 0 in name.translate(_TOKEN):
        return None
    return name.lower(), value.strip(b" \t")


def parse_head(head: bytes, cache: FieldCache | None = None) -> ParsedRequest | None:
    """Parse a complete head (ending in CRLFCRLF) the way h11 would, or return None.

    ``None`` means "let h11 decide": the request may be valid but not simple,
    or invalid (h11 then produces the rejection and its status).

    h11 matches a regular expression per line; here C-level byte operations
    (``translate`` to find a byte outside a class, ``split``, ``partition``)
    do the same checks. ``cache`` is the loop's FieldCache.
    tests/test_fastpath.py proves it against h11 with generated heads, with a
    cold cache and with one shared by every example.
    """
    line_end = head.find(b"\r\n")
    request_line = head[:line_end].split(b" ")
    if len(request_line) != 3:
        return None
    method, target, version = request_line
    if (
        version != b"HTTP/1.1"
        or not 3 <= len(method) <= 20
        or 0 in method.translate(_CONVENTIONAL_METHOD)
        or method == b"CONNECT"
        or not target
        or 0 in target.translate(_VCHAR)
    ):
        return None
    if cache is None:
        cache = FieldCache()
    block = head[line_end + 2:]
    blocks = cache.blocks
    fields = blocks.get(block)
    if fields is None:
        fields = _parse_fields(block, cache.lines)
        if fields is None:
            return None
        if len(block) <= FIELD_BLOCK_SIZE:
            if len(blocks) >= FIELD_BLOCK_ENTRIES:
                blocks.clear()
            blocks[block] = fields
    headers, content_length, close, host, content_types = fields
    # tuple.__new__ directly: NamedTuple's generated __new__ is a Python-level call.
    return _new_tuple(ParsedRequest, (method, target, list(headers), content_length, close, host, content_types))


def _parse_fields(block: bytes, known: dict[bytes, tuple[bytes, bytes]]) -> _Fields | None:
    """The field lines of a head (``block``: what follows the request line, CRLFCRLF included)."""
    headers: list[tuple[bytes, bytes]] = []
    append = headers.append
    content_length = -1
    hosts = 0
    host = b""
    content_types = 0
    close = False
    for line in block[:-4].split(b"\r\n"):
        field = known.get(line)
        if field is None:
            field = parse_field(line)
            if field is None:
                return None
            if len(line) <= FIELD_CACHE_LINE:
                if len(known) >= FIELD_CACHE_ENTRIES:
                    known.clear()  # bounded, and a flood of one-off lines cannot pin it
                known[line] = field
        name = field[0]
        if name in _NOTABLE_REQUEST_FIELDS:
            value = field[1]
            if name == b"content-length":
                if content_length >= 0 or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                    return None
                content_length = int(value)
            elif name == b"host":
                hosts += 1
                host = value
            elif name == b"content-type":
                content_types += 1
            elif name == b"connection":
                tokens = {token.strip().lower() for token in value.split(b",")}
                if b"upgrade" in tokens:
                    return None
                close = close or b"close" in tokens
            else:
                return None  # Transfer-Encoding, Expect, Upgrade: h11's machinery
        append(field)
    if hosts != 1:
        return None
    return tuple(headers), max(content_length, 0), close, host, content_types


_new_tuple = tuple.__new__


#: Response fields the server adds unless the app sent its own.
SERVER_DEFAULT_FIELDS = frozenset({b"server", b"date"})
#: Bounds of a loop's cache of rendered response header blocks (ResponseHeaderCache).
HEADER_BLOCK_ENTRIES = 256
HEADER_BLOCK_SIZE = 2048


def normalize(raw: Iterable[tuple[Any, Any]]) -> tuple[list[tuple[bytes, bytes]], bool]:
    """An app's response headers as (lower-cased name, value) bytes pairs, and whether it set Server or Date."""
    headers: list[tuple[bytes, bytes]] = []
    append = headers.append
    has_defaults = False
    for name, value in raw:
        # bytes() only for other bytes-likes: for bytes it is a call that returns its argument.
        name = name.lower() if type(name) is bytes else bytes(name).lower()
        if name in SERVER_DEFAULT_FIELDS:
            has_defaults = True
        append((name, value if type(value) is bytes else bytes(value)))
    return headers, has_defaults


class HeaderBlock(NamedTuple):
    """An app's response headers, checked and rendered once (see ResponseHeaderCache)."""

    headers: tuple[tuple[bytes, bytes], ...]  # lower-cased names, bytes values
    lines: bytes  # one b"name: value\r\n" per header, without the server's defaults
    length: int  # the Content-Length value, or -1 when there is none
    has_defaults: bool  # the app set Server or Date itself
    fast: bool  # False: h11 must frame the response (Transfer-Encoding, Connection, Host, odd Content-Length)


def render(raw: Iterable[tuple[Any, Any]], known_names: set[bytes], known_values: set[bytes]) -> HeaderBlock:
    """Check an app's response headers with h11's grammar and render them as h11 would.

    Raises ``h11.LocalProtocolError`` exactly where h11 would. ``known_names`` and
    ``known_values`` cache what already passed (one loop's): a set lookup costs
    less than a regex. A block with ``fast`` false was checked only up to the
    field that needs h11's rewriting rules: h11 checks the rest when it frames it.
    """
    headers, has_defaults = normalize(raw)
    lines: list[bytes] = []
    append = lines.append
    length = -1
    fast = True
    for name, value in headers:
        if name not in known_names:
            if not FIELD_NAME.fullmatch(name):
                raise h11.LocalProtocolError(f"Illegal header name {name!r}")
            if len(known_names) < _CACHE_ENTRIES:
                known_names.add(name)
        if name in _NOTABLE_RESPONSE_FIELDS:
            # Content-Length digits are a valid field value; anything else goes to h11's rules.
            if name != b"content-length" or length >= 0 or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                fast = False
                break
            length = int(value)
        elif value not in known_values:
            if not FIELD_VALUE.fullmatch(value):
                raise h11.LocalProtocolError(f"Illegal header value {value!r}")
            if len(known_values) < _CACHE_ENTRIES and len(value) <= _CACHE_VALUE_SIZE:
                known_values.add(value)
        append(b"%s: %s\r\n" % (name, value))
    return _new_tuple(HeaderBlock, (tuple(headers), b"".join(lines), length, has_defaults, fast))


class ResponseHeaderCache:
    """One loop's rendered header blocks, keyed by the headers the app sent.

    Most apps send the same few header lists again and again (often the very
    same list object): one dictionary lookup on them replaces normalising,
    checking and formatting every header of every response. The key is the
    app's own sequence as a tuple, compared by value, so an app mutating its
    list between responses gets a fresh block. Only sets made of ``bytes``
    pairs are kept (bounded in count and in bytes): other bytes-likes (a
    bytearray, a memoryview, an object with ``__bytes__``) may change behind an
    equal key, so they are rendered every time. Owned by one loop.
    """

    __slots__ = ("blocks", "names", "values")

    def __init__(self) -> None:
        self.blocks: dict[tuple[Any, ...], HeaderBlock] = {}
        self.names: set[bytes] = set()
        self.values: set[bytes] = set()

    def get(self, raw: Iterable[tuple[Any, Any]]) -> HeaderBlock:
        items = raw if type(raw) is tuple else tuple(raw)
        try:
            block = self.blocks.get(items)
        except (TypeError, ValueError):  # unhashable: a list pair, a bytearray, a writable memoryview...
            return render(items, self.names, self.values)
        if block is None:
            block = render(items, self.names, self.values)
            if _cacheable_size(items) <= HEADER_BLOCK_SIZE:
                if len(self.blocks) >= HEADER_BLOCK_ENTRIES:
                    self.blocks.clear()  # bounded, and a flood of one-off header sets cannot pin it
                self.blocks[items] = block
        return block


def _cacheable_size(items: tuple[Any, ...]) -> int:
    """The bytes a header set would pin in the cache, or a size over any bound if it holds anything but bytes pairs."""
    size = 0
    for pair in items:
        if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not bytes or type(pair[1]) is not bytes:
            return HEADER_BLOCK_SIZE + 1
        size += len(pair[0]) + len(pair[1])
    return size


#: What follows the header lines, by (chunked framing, Connection: close).
_HEAD_ENDS = {
    (False, False): b"\r\n",
    (False, True): b"Connection: close\r\n\r\n",
    (True, False): b"Transfer-Encoding: chunked\r\n\r\n",
    (True, True): b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
}


class FastResponse:
    """Frames one response to an HTTP/1.1 request, byte for byte as h11 does."""

    __slots__ = ("chunked", "remaining")

    # No __init__: head() sets both fields, and a Python-level __init__ would cost
    # a call per response.
    chunked: bool
    remaining: int

    def head(self, status: int, default_lines: bytes, block: HeaderBlock, method: bytes, close: bool) -> bytes:
        """The response head for a ``block`` whose ``fast`` is true.

        ``default_lines`` are the server's own header lines (known valid).
        """
        length = block.length
        if status in _NO_BODY_STATUS:
            self.chunked = False
            self.remaining = 0
            end = _HEAD_ENDS[False, close]
        elif length < 0:
            # h11 chooses chunked by the method as GET, so HEAD responses get the header too.
            self.chunked = method != b"HEAD"
            self.remaining = 0
            end = _HEAD_ENDS[True, close]
        else:
            self.chunked = False
            self.remaining = 0 if method == b"HEAD" else length
            end = _HEAD_ENDS[False, close]
        return b"".join((STATUS_LINES[status], default_lines, block.lines, end))

    def start(
        self,
        status: int,
        default_lines: bytes,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        close: bool,
        known_names: set[bytes],
        known_values: set[bytes],
    ) -> bytes | None:
        """``head`` for headers not rendered yet, or None when h11 must frame this response."""
        block = render(headers, known_names, known_values)
        if not block.fast:
            return None
        return self.head(status, default_lines, block, method, close)

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

    def body(self, body: bytes, more_body: bool) -> bytes:
        """``data(body)``, followed by ``end()`` unless more body follows: one call."""
        if self.chunked:
            if not body:
                return b"" if more_body else b"0\r\n\r\n"
            return b"%x\r\n%s\r\n%s" % (len(body), body, b"" if more_body else b"0\r\n\r\n")
        remaining = self.remaining - len(body)
        if remaining < 0:
            raise h11.LocalProtocolError("Too much data for declared Content-Length")
        self.remaining = remaining
        if remaining and not more_body:
            raise h11.LocalProtocolError("Too little data for declared Content-Length")
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
