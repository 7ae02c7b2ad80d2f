"""A fast path for the common HTTP/1.1 request head, exact to h11.

Profiles of the h11 path show most of the per-request time in h11's generic
machinery (event objects, state-machine transitions, header normalisation),
not in parsing as such. Most requests are simple: HTTP/1.1, one Host, no
Transfer-Encoding, no Expect or Upgrade, at most a plain Content-Length. For
those ``parse_head`` parses the head directly, with RFC 9110's field grammar as
h11 reads it, so the bytes accepted are those h11 would accept; for anything it
does not fully understand it returns ``None``, and the connection hands its
buffer to a real ``h11.Connection`` and stays on h11 from that request on.
``tests/http1/test_parse.py`` proves the equivalence with hypothesis against
h11 itself, including every rejection. The response side is frame.py.

The grammar is written here, not taken from h11's private modules, so a new
h11 release cannot change it unseen: the tests compare it with the installed
h11's on generated field names and values.
"""


from __future__ import annotations

import re
from typing import NamedTuple

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
_CONVENTIONAL_METHOD = _class_table(b"!$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
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
    tests/http1/test_parse_and_frame.py proves it against h11 with generated heads, with a
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


