"""A fast writer for the common HTTP/1.1 response, byte for byte what h11 writes.

``render`` checks an app's header list with RFC 9110's grammar as h11 does and
renders it once (``ResponseHeaderCache`` keeps the result per loop), and
``FastResponse`` frames the head and body. A header set that needs h11's
rewriting rules (Transfer-Encoding, Connection, Host, an odd Content-Length)
is framed by an h11 connection primed with an equivalent request
(``primed_h11``). ``tests/http1/test_frame.py`` proves the bytes equal to
h11's with hypothesis, body framing included.
"""


from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import h11

from ..asgi import STATUS_PHRASES
from ..asgi.defaults import NO_BODY_STATUS, default_headers
from .parse import _MAX_LENGTH_DIGITS, FIELD_NAME, FIELD_VALUE, _new_tuple

if TYPE_CHECKING:
    from ..loop.server import LoopServer

#: Response header names whose h11 rewriting rules the fast writer does not replicate.
_SLOW_RESPONSE_FIELDS = frozenset({b"transfer-encoding", b"connection", b"host"})
_NOTABLE_RESPONSE_FIELDS = frozenset({b"content-length"}) | _SLOW_RESPONSE_FIELDS
#: Bounds of the per-loop caches of validated response header names and values.
_CACHE_ENTRIES = 1024
_CACHE_VALUE_SIZE = 256
#: Status lines as h11 writes them, with asgi.STATUS_PHRASES' reasons.
STATUS_LINES: tuple[bytes, ...] = tuple(b"HTTP/1.1 %d %s\r\n" % (code, STATUS_PHRASES[code]) for code in range(600))


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
    """Frames one response to an HTTP/1.1 request, byte for byte as h11 does.

    ``http1/exchange.py``'s ``H1Exchange`` is one (a subclass): a response framed
    here costs no object of its own. The methods are named ``frame_*`` so that
    they cannot be mistaken for the exchange's own ``start``/``body``."""

    __slots__ = ("chunked", "remaining")

    # No __init__: frame_head() sets both fields, and a Python-level __init__ would cost
    # a call per response.
    chunked: bool
    remaining: int

    def frame_head(self, status: int, default_lines: bytes, block: HeaderBlock, method: bytes, close: bool) -> bytes:
        """The response head for a ``block`` whose ``fast`` is true.

        ``default_lines`` are the server's own header lines (known valid).
        """
        length = block.length
        if status in NO_BODY_STATUS:
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

    def frame_data(self, body: bytes) -> bytes:
        if not body:
            return b""
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(body), body)
        if len(body) > self.remaining:
            raise h11.LocalProtocolError("Too much data for declared Content-Length")
        self.remaining -= len(body)
        return body

    def frame_body(self, body: bytes, more_body: bool) -> bytes:
        """``frame_data(body)``, followed by ``frame_end()`` unless more body follows: one call."""
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

    def frame_end(self) -> bytes:
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


def default_header_lines(server: LoopServer, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The server's default header lines minus those the app set itself (asgi/defaults.py)."""
    return b"".join(b"%s: %s\r\n" % pair for pair in default_headers(server, headers))
