"""Header lists between HTTP/2 and ASGI: request pseudo-headers in, response fields out.

Requests: h2 has already checked the block (pseudo-headers first and once each,
lower-case names, no connection-specific fields: RFC 9113 §8.2-8.3); what is
left is ASGI's view of it: ``:authority`` becomes ``host`` (it wins over a Host
field, §8.3.1), and cookie fields split for compression are joined again
(§8.2.3), as an HTTP/1.1 app expects one ``cookie`` header.

Responses: the app's headers are checked here rather than by h2 (which would
raise mid-encoding, with the HPACK state already touched), names are
lower-cased (HTTP/2 forbids upper case) and the connection-specific fields an
HTTP/1.1 app may set are dropped: in HTTP/2 they make the response malformed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

#: RFC 9113 §8.2.2: fields that make an HTTP/2 message malformed (``te`` only with ``trailers``).
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+\Z")
#: A field value: no CR, LF or NUL, no leading or trailing whitespace (RFC 9110 §5.5).
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?\Z")


class Request(NamedTuple):
    """A request head as the ASGI scope needs it."""

    method: bytes
    target: bytes
    scheme: bytes
    headers: list[tuple[bytes, bytes]]
    expect_100: bool


def request(block: Iterable[tuple[bytes, bytes]]) -> Request:
    """The pseudo-headers taken out, ``host`` from ``:authority``, cookies joined.

    Raises ``ValueError`` for what h2 lets through but HTTP semantics refuse
    (no ``:method``/``:path``, an empty ``:path``).
    """
    method = target = scheme = authority = b""
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    host: bytes | None = None
    expect_100 = False
    for name, value in block:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                target = value
            elif name == b":scheme":
                scheme = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            host = value
            continue
        if name == b"expect" and value.lower() == b"100-continue":
            expect_100 = True
        headers.append((name, value))
    if not method:
        raise ValueError("request without :method")
    if not _NAME.match(method):  # h2 lets any bytes through; RFC 9110 §9.1: a token
        raise ValueError(f"malformed :method {method[:40]!r}")
    if not target and method != b"CONNECT":
        raise ValueError("request without :path")
    authority = authority or host or b""
    if authority:
        headers.insert(0, (b"host", authority))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    return Request(method, target, scheme, headers, expect_100)


def response(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    defaults: Iterable[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """The HEADERS block for ``status`` and the app's ``headers``; and its Content-Length, if any.

    ``defaults`` (server, date) are added unless the app set the same name.
    Raises ``TypeError``/``ValueError`` for an invalid field, as h11 does for HTTP/1.1.
    """
    fields, names, length = _checked(headers)
    return _block(status, fields, names, defaults), length


def _block(status: int, fields: list[tuple[bytes, bytes]], names: frozenset[bytes],
           defaults: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    block: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status)]
    block += [(name, value) for name, value in defaults if name not in names]
    block += fields
    return block


def _checked(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], frozenset[bytes], int | None]:
    """The app's fields checked, lower-cased and filtered; their names; the Content-Length."""
    fields: list[tuple[bytes, bytes]] = []
    names: set[bytes] = set()
    length: int | None = None
    for pair in headers:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"ASGI: a header must be a (name, value) pair, got {pair!r}") from None
        if type(name) is not bytes or type(value) is not bytes:
            if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
                raise TypeError(f"ASGI: header names and values must be bytes, got {pair!r}")
            name, value = bytes(name), bytes(value)
        if not _NAME.match(name):
            raise ValueError(f"Illegal header name {name!r}")
        name = name.lower()
        value = value.strip(b" \t")
        if not _VALUE.match(value):
            raise ValueError(f"Illegal header value {value!r}")
        if name in CONNECTION_SPECIFIC:
            continue
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise ValueError(f"Illegal Content-Length {value!r}") from None
            if declared < 0 or (length is not None and declared != length):
                raise ValueError(f"Illegal Content-Length {value!r}")
            if length is not None:
                continue
            length = declared
        names.add(name)
        fields.append((name, value))
    return fields, frozenset(names), length


class ResponseCache:
    """``response`` for header lists an app sends again and again, checked once per connection.

    Keyed by the app's list as a tuple, compared by value; only lists made of
    ``(bytes, bytes)`` tuples are kept (anything else may change behind an equal
    key), at most ``MAX_ENTRIES`` of them and ``MAX_BYTES`` of names and values.
    """

    MAX_ENTRIES = 32
    MAX_BYTES = 8192

    def __init__(self) -> None:
        self.entries: dict[tuple[object, ...], tuple[list[tuple[bytes, bytes]], frozenset[bytes], int | None]] = {}
        self.held = 0

    def response(self, status: int, headers: Iterable[tuple[bytes, bytes]],
                 defaults: Iterable[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], int | None]:
        """``response(status, headers, defaults)``, from the cache where the list was checked before."""
        key = headers if type(headers) is tuple else tuple(headers)
        try:
            entry = self.entries.get(key)
        except TypeError:  # unhashable: a list pair, a bytearray...
            return response(status, key, defaults)
        if entry is None:
            entry = _checked(key)
            size = 0
            for pair in key:
                if type(pair) is not tuple or len(pair) != 2 or not type(pair[0]) is type(pair[1]) is bytes:
                    size = self.MAX_BYTES + 1
                    break
                size += len(pair[0]) + len(pair[1])
            if size <= self.MAX_BYTES:
                if len(self.entries) >= self.MAX_ENTRIES or self.held + size > self.MAX_BYTES:
                    self.entries.clear()
                    self.held = 0
                self.entries[key] = entry
                self.held += size
        fields, names, length = entry
        return _block(status, fields, names, defaults), length


def informational(status: int, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A 1xx HEADERS block (103 Early Hints): checked as a response head, without defaults."""
    block, _ = response(status, headers, ())
    return block
