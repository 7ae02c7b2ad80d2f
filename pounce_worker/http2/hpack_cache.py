"""HPACK without its per-request cost: stateless response blocks, cached request blocks.

hpack codes every field in pure Python, a call per integer and per string, and
h2 then validates each decoded field again: together about a third of what one
request costs h2. Under load the same blocks repeat, so both directions cache:

- **Responses**: every field is either a static-table match (indexed) or a
  literal *without indexing*. Such a block never touches the client's dynamic
  table, so it is a pure function of the header list and is cached per
  connection. The price is a few bytes per response (nothing is indexed); the
  one piece of encoder state HPACK still has, a pending dynamic table size
  update (the client's SETTINGS_HEADER_TABLE_SIZE), is emitted first, as hpack
  would (RFC 7541 §4.2).
- **Requests**: a block made only of indexed fields and literals *without
  indexing* or *never indexed* (``keeps_table``) does not change the decoder's
  dynamic table either, so while the table stays as it is, the same bytes
  decode (and validate) to the same list. nghttp2 (curl, h2load, Envoy) sends
  ``:path`` as a literal without indexing in every request, so a cache of
  indexed-only blocks never hit for them. Any other block is decoded by hpack,
  and the cache is emptied first, since that block may change the table. The
  decoder's two limits are part of the cache key
  (``Decoder.max_header_list_size``, ``max_allowed_table_size``): a block
  accepted under one is not under another. The cache holds at most
  ``MAX_CACHED`` blocks and ``MAX_CACHED_BYTES`` of decoded fields per connection.

tests/http2/test_h2_fastpath.py proves both against h2 and hpack themselves (through ``FastMachine``).
"""

from __future__ import annotations

from typing import Any

from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

#: Cached blocks per connection before the cache starts over (a Date per second, a few lengths).
MAX_CACHED = 256
#: Bytes of decoded names and values the request cache holds per connection before it starts over.
MAX_CACHED_BYTES = 65536
#: What a cached field costs beyond its bytes (its tuples in the lists kept, their slots), counted
#: against MAX_CACHED_BYTES: a block of many tiny fields must not hold seven times the budget.
FIELD_OVERHEAD = 128


def held_size(block: bytes, fields: Any) -> int:
    """The memory a cached block and its fields hold, as counted against MAX_CACHED_BYTES."""
    return len(block) + sum(len(field[0]) + len(field[1]) + FIELD_OVERHEAD for field in fields)

_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
#: (name, value) -> static index, and name -> its first static index (RFC 7541 Appendix A).
_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_FIELDS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)


def _string(data: bytes) -> bytes:
    """An HPACK string literal, Huffman-coded when that is shorter (as hpack chooses)."""
    coded = _HUFFMAN.encode(data)
    if len(coded) < len(data):
        prefix = encode_integer(len(coded), 7)
        prefix[0] |= 0x80
        return bytes(prefix) + coded
    return bytes(encode_integer(len(data), 7)) + data


def _field(name: bytes, value: bytes, never_indexed: bool) -> bytes:
    """One field: the static table's full match, else a literal (never) without indexing."""
    if not never_indexed:
        index = _STATIC_FIELDS.get((name, value))
        if index is not None:
            return bytes((0x80 | index,))  # every static index is below 127: one byte
    flag = 0x10 if never_indexed else 0x00
    index = _STATIC_NAMES.get(name)
    if index is not None:
        head = encode_integer(index, 4)
        head[0] |= flag
        return bytes(head) + _string(value)
    return bytes((flag,)) + _string(name) + _string(value)


def encode_block(headers: Any) -> bytes:
    """The stateless HPACK block of ``headers``: (bytes, bytes) pairs, h2's HeaderTuples."""
    return b"".join(_field(name, value, isinstance(field, NeverIndexedHeaderTuple) or
                           (len(field) > 2 and bool(field[2])))
                    for field in headers for name, value in (field[:2],))


def _skip_integer(data: bytes, i: int, end: int) -> int:
    """Past the continuation bytes of an HPACK integer whose prefix was full (RFC 7541 §5.1)."""
    while i < end and data[i] & 0x80:
        i += 1
    return i + 1


def _skip_string(data: bytes, i: int, end: int) -> int:
    """Past the string literal at ``i`` (RFC 7541 §5.2); past ``end`` if it overruns the block."""
    if i >= end:
        return end + 1
    length = data[i] & 0x7F
    i += 1
    if length == 0x7F:
        shift = 0
        length = 0x7F
        while True:
            if i >= end or shift > 28:
                return end + 1
            byte = data[i]
            i += 1
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return i + length


def keeps_table(data: bytes) -> bool:
    """True if decoding ``data`` cannot change the dynamic table: only indexed fields and literals
    without indexing or never indexed (RFC 7541 §6.1, §6.2.2, §6.2.3), read to the block's end.

    False for an incremental-indexing literal (§6.2.1), a table size update (§6.3), or a block
    that does not parse: saying False is always safe (the cache is emptied, nothing stored).
    """
    i = 0
    end = len(data)
    while i < end:
        byte = data[i]
        if byte & 0x80:  # indexed field, 7-bit prefix
            i = _skip_integer(data, i + 1, end) if byte & 0x7F == 0x7F else i + 1
            continue
        if byte & 0xE0:  # 01xxxxxx: incremental indexing; 001xxxxx: size update
            return False
        name = byte & 0x0F  # 0000xxxx / 0001xxxx: 4-bit prefix name index, 0: a literal name
        if name == 0:
            i = _skip_string(data, i + 1, end)
        elif name == 0x0F:
            i = _skip_integer(data, i + 1, end)
        else:
            i += 1
        i = _skip_string(data, i, end)
    return i == end


class StatelessEncoder:
    """Stands where h2 keeps its ``hpack.Encoder``: h2 calls ``encode`` and sets ``header_table_size``.

    ``real`` keeps HPACK's table-size bookkeeping (the size updates still owed to the peer);
    its dynamic table stays empty, as nothing is ever indexed.
    """

    def __init__(self, real: Encoder) -> None:
        self.real = real
        self.cache: dict[Any, bytes] = {}
        self.held = 0

    @property
    def header_table_size(self) -> int:
        return self.real.header_table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self.real.header_table_size = value

    @property
    def header_table(self) -> HeaderTable:
        return self.real.header_table

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        real = self.real
        prefix = b""
        if real.header_table.resized:
            prefix = real._encode_table_size_change()
            real.header_table.resized = False
        try:
            key = tuple(headers) if all(type(field) is tuple for field in headers) else None
        except TypeError:  # a field h2 would reject (an unhashable value): hpack says which
            key = None
        cache = self.cache
        block = cache.get(key) if key is not None else None
        if block is None:
            block = encode_block(headers)
            if key is not None:
                size = held_size(block, key)
                if len(cache) >= MAX_CACHED or self.held + size > MAX_CACHED_BYTES:
                    cache.clear()
                    self.held = 0
                if size <= MAX_CACHED_BYTES:
                    cache[key] = block
                    self.held += size
        return prefix + block


def _forwarded(name: str) -> Any:
    """A property that reads and sets ``name`` on the wrapped ``real`` decoder."""
    return property(lambda self: getattr(self.real, name), lambda self, value: setattr(self.real, name, value))


class CachingDecoder:
    """Stands where h2 keeps its ``hpack.Decoder``; ``lookup``/``store`` cache whole validated lists."""

    def __init__(self, real: Decoder) -> None:
        self.real = real
        self.cache: dict[bytes, tuple[list[Any], list[Any]]] = {}
        self.limits: tuple[int, int] = (-1, -1)
        #: The block hpack decoded last, and what it decoded to (``last_raw``).
        self.last: tuple[bytes, list[Any]] = (b"", [])
        #: What ``cache`` holds, as ``held_size`` counts it (``MAX_CACHED_BYTES``).
        self.held = 0

    # -- what h2 reads and sets on its decoder: hpack's own --------------------------

    max_header_list_size = _forwarded("max_header_list_size")
    max_allowed_table_size = _forwarded("max_allowed_table_size")
    header_table_size = _forwarded("header_table_size")

    @property
    def header_table(self) -> HeaderTable:
        return self.real.header_table

    def decode(self, data: bytes, raw: bool = False) -> Any:
        """hpack's decode; a block that may change the dynamic table empties the cache first."""
        if not keeps_table(data):
            self.cache.clear()
            self.held = 0
        self.last = (b"", [])
        headers = list(self.real.decode(data, raw=raw))
        if raw:
            self.last = (data, headers)
        return headers

    def last_raw(self, data: bytes) -> list[Any] | None:
        """What hpack decoded ``data`` to, if it was the last block it decoded."""
        block, headers = self.last
        return headers if block is data else None

    # -- the cache of validated request header lists -------------------------------

    def lookup(self, data: bytes) -> tuple[list[Any], list[Any]] | None:
        """(decoded, validated) headers of ``data`` last time, if the table and limits are still the same."""
        real = self.real
        limits = (real.max_header_list_size, real.max_allowed_table_size)
        if limits != self.limits:
            self.cache.clear()
            self.held = 0
            self.limits = limits
            return None
        return self.cache.get(data)

    def store(self, data: bytes, headers: tuple[list[Any], list[Any]]) -> None:
        """Remember a request block that decoded and validated to ``headers``, if it ``keeps_table``."""
        real = self.real
        cache = self.cache
        if (real.max_header_list_size, real.max_allowed_table_size) != self.limits:
            cache.clear()
            self.held = 0
            return
        if keeps_table(data):
            size = held_size(data, headers[0])
            if len(cache) >= MAX_CACHED or self.held + size > MAX_CACHED_BYTES:
                cache.clear()
                self.held = 0
            if size <= MAX_CACHED_BYTES:
                cache[data] = headers
                self.held += size
