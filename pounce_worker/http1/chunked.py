"""A chunked request body, checked to RFC 9112 §7.1 before h11 parses it.

h11 finds the chunks of a body correctly but reads the lines around them
loosely: it takes whitespace after the chunk size, anything after a ``;`` (a
bare CR included) as chunk extensions, obs-fold and framing fields in the
trailer section, and ends that section at a bare LF. A front-end proxy that
reads the same bytes strictly can then see the body end elsewhere, and the
bytes in between become a request of the client's choosing (smuggling).
Gunicorn's own reader refuses all of these; so does this one, with its
statuses (400; 431 for an oversized trailer section).

``ChunkedScanner`` is sans-I/O: the connection feeds it every byte of a
chunked request body before it hands the same bytes to h11, and it raises
``Rejection`` at the first one that breaks the grammar, so h11 never turns
them into events. It only follows positions: chunk data is counted, never
copied; only a chunk-size line or a trailer line is buffered, each bounded.
It never accepts what h11 rejects (h11 still parses every byte), and for
every body both accept, both end it at the same byte: tests/http1/test_chunked.py
checks that against h11 itself.

    chunked-body   = *chunk last-chunk trailer-section CRLF
    chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    chunk-size     = 1*HEXDIG
    chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    chunk-ext-val  = token / quoted-string
    trailer-section = *( field-line CRLF )
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .validate import CONTROL_CHARACTERS, Rejection

if TYPE_CHECKING:
    from ..config import ServerConfig

_HEX = re.compile(rb"[0-9A-Fa-f]+")
# Gunicorn's CHUNK_EXT_RE (gunicorn/http/body.py): token and quoted-string from RFC 9110 §5.6.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb"))?)+"
)
#: h11's bound on chunk-size digits (its chunk_size rule is HEXDIG{1,20}).
_MAX_SIZE_DIGITS = 20
#: Gunicorn's bound on a chunk-size line when limit_request_field_size is 0.
DEFAULT_MAX_LINE = 8190
#: RFC 9110 §6.5.1: fields that decide framing, routing or authentication, never taken
#: from a trailer (Gunicorn's RFC9110_6_5_1_FORBIDDEN_TRAILER).
FORBIDDEN_TRAILERS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"trailer", b"authorization", b"te"}
)

_SIZE_LINE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedScanner:
    """Follows one chunked request body through the bytes it is fed; refuses a malformed one."""

    __slots__ = ("_content_type", "_line", "_max_fields", "_max_line", "_max_trailers", "_permit_obs_fold",
                 "_remaining", "_state", "_trailer_fields", "_trailer_size")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, max_trailers: int = 65536,
                 permit_obs_fold: bool = False, max_fields: int = 0) -> None:
        self._max_line = max_line
        self._max_trailers = max_trailers
        # Gunicorn applies limit_request_fields to a trailer section too (0: no limit here).
        self._max_fields = max_fields
        self._trailer_fields = 0
        self._permit_obs_fold = permit_obs_fold
        self._state = _SIZE_LINE
        self._line = bytearray()  # the chunk-size or trailer line being received
        self._remaining = 0  # chunk-data bytes still to come, or CRLF bytes after them
        self._trailer_size = 0
        self._content_type = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes | bytearray) -> int | None:
        """Follow ``data``; the index in it just past the body once the body ended, else None.

        Raises ``Rejection`` at the first byte that breaks the grammar. Bytes
        fed after the end are not looked at (they are the next request's).
        """
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                    self._remaining = 2
            elif state == _DATA_END:
                expected = b"\r\n"[2 - self._remaining]
                if data[pos] != expected:
                    raise Rejection(400, "Chunk data not followed by CRLF")
                pos += 1
                self._remaining -= 1
                if not self._remaining:
                    self._state = _SIZE_LINE
            elif state == _DONE:
                return 0
            else:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline + 1
                line = self._line
                line += data[pos:stop]
                pos = stop
                if newline < 0:
                    self._check_partial_line()
                    return None
                self._line = bytearray()
                if state == _SIZE_LINE:
                    self._size_line(bytes(line))
                else:
                    self._trailer_line(bytes(line))
                    if self._state == _DONE:
                        return pos
        return None

    def _check_partial_line(self) -> None:
        """Refuse a line before it ends when it already cannot be valid, so nothing buffers without bound."""
        line = self._line
        if b"\r" in line[:-1]:
            raise Rejection(400, "Bare CR in chunked body")
        if self._state == _SIZE_LINE:
            if len(line) > self._max_line:
                raise Rejection(400, f"Chunk size line longer than {self._max_line} bytes")
        elif self._trailer_size + len(line) > self._max_trailers:
            raise Rejection(431, f"Trailer section larger than {self._max_trailers} bytes")

    def _size_line(self, line: bytes) -> None:
        if line[-2:-1] != b"\r":
            raise Rejection(400, "Bare LF in chunked body")
        content = line[:-2]
        if b"\r" in content:
            raise Rejection(400, "Bare CR in chunked body")
        match = _HEX.match(content)
        rest = content[match.end():] if match else content
        if match is None or (rest and not rest.lstrip(b" \t").startswith(b";")):
            raise Rejection(400, f"Invalid chunk size {content[:40].decode('latin-1')!r}")
        if rest and not _CHUNK_EXT.fullmatch(rest):
            raise Rejection(400, f"Invalid chunk extension {rest[:40].decode('latin-1')!r}")
        digits = match.group()
        if len(digits) > _MAX_SIZE_DIGITS:
            raise Rejection(400, f"Chunk size of more than {_MAX_SIZE_DIGITS} hex digits")
        size = int(digits, 16)
        if size:
            self._state = _DATA
            self._remaining = size
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_size += len(line)
        if self._trailer_size > self._max_trailers:
            raise Rejection(431, f"Trailer section larger than {self._max_trailers} bytes")
        if line[-2:-1] != b"\r":
            raise Rejection(400, "Bare LF in chunked trailer section")
        if line == b"\r\n":
            self._state = _DONE
            return
        content = line[:-2]
        if b"\r" in content:
            raise Rejection(400, "Bare CR in chunked trailer section")
        if CONTROL_CHARACTERS.search(content):
            raise Rejection(400, "Control character in chunked trailer section")
        if content[:1] in (b" ", b"\t"):
            if not self._permit_obs_fold:
                raise Rejection(400, "Obsolete line folding in chunked trailer section")
            return
        self._trailer_fields += 1
        if self._max_fields and self._trailer_fields > self._max_fields:
            raise Rejection(431, f"More trailer fields than limit_request_fields={self._max_fields}")
        # The field syntax is h11's to check; the name is all the rules here need.
        name = content.partition(b":")[0].lower()
        if name in FORBIDDEN_TRAILERS:
            raise Rejection(400, f"{name.decode('latin-1')} is not allowed in a trailer section")
        if name == b"content-type":
            if self._content_type:
                raise Rejection(400, "Repeated Content-Type in trailer section")
            self._content_type = True


def scanner_for(headers: Iterable[tuple[bytes, bytes]], config: ServerConfig) -> ChunkedScanner | None:
    """A scanner for a request h11 accepted, when its body is chunked; else None.

    h11 refuses every Transfer-Encoding but ``chunked`` (501), so the field's
    presence in an accepted request (``headers``: h11's, names lower-cased) is
    the test. The bounds are Gunicorn's: a chunk-size line is held to
    ``limit_request_field_size``, a trailer section to the head's size and
    its field count to ``limit_request_fields``.
    """
    for name, _value in headers:
        if name == b"transfer-encoding":
            return ChunkedScanner(
                config.limit_request_field_size or DEFAULT_MAX_LINE, config.max_head_size,
                config.permit_obsolete_folding, config.limit_request_fields,
            )
    return None
