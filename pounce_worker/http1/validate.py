"""Request checks stricter than h11, for a server that sits behind proxies.

h11 is a faithful parser but a lenient one in places where a front-end proxy
and this server could disagree about where a request ends (request
smuggling) or what it means. Each rule here rejects something h11 accepts, and
follows what Gunicorn's own parser rejects, with the same status codes:

* a request with both Content-Length and Transfer-Encoding (RFC 9112 §6.1:
  the server MUST close the connection after it; Gunicorn refuses it: 400);
* a repeated Content-Length, even with equal values (a singleton field,
  RFC 9110 §5.3; h11 silently merges equal ones);
* a Host field that holds a list, or whose value is not ``uri-host [":" port]``
  (RFC 9112 §3.2: 400);
* a repeated Content-Type (another singleton field, as Gunicorn);
* Transfer-Encoding on an HTTP/1.0 request (RFC 9112 §6.1: faulty framing);
* bare LF line endings and obs-fold line continuations in the head, and
  control characters in field values (RFC 9112 §2.2, §5.2; RFC 9110 §5.5);
* a well-formed HTTP version (``HTTP/DIGIT.DIGIT``) with another major number
  on an HTTP/1 connection (505; a malformed one is h11's 400);
* a method with lower-case letters or of unusual length, unless Gunicorn's
  ``permit_unconventional_http_method`` is on;
* an Expect other than 100-continue (417);
* a request-target of a form the method does not take (``split_target``);
* Gunicorn's ``limit_request_*`` and bare LFs on a head that is not complete
  yet (``HeadScan``), as the bytes arrive.

Chunked bodies get their own checks, in chunked.py. None of these ever
accepts what h11 rejects: h11 still parses every byte.
"""

from __future__ import annotations

import re

from ..asgi import Rejection

#: Control characters other than HTAB, CR and LF (CR and LF are checked as CRLF pairs).
CONTROL_CHARACTERS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: Gunicorn's conventional method: a token of 3-20 characters without lower case or ``#``
#: (its METHOD_BADCHAR_RE, ``[a-z#]``), unless permit_unconventional_http_method.
_METHOD_OK = re.compile(rb"[A-Z0-9!$%&'*+.^_`|~-]{3,20}")
#: The fields whose handling decides framing or routing, found in one scan of the head.
_FRAMING = re.compile(
    rb"\r\n(content-length|transfer-encoding|host|expect|content-type)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
)
#: RFC 9112 §3.2 / RFC 3986 §3.2.2: uri-host [":" port]; an IP-literal in brackets or a
#: reg-name (unreserved, pct-encoded, sub-delims; "," left out: a list gets its own message).
#: Empty is valid (a target without authority).
_HOST = re.compile(rb"(?:\[[0-9A-Za-z._~%!$&'()*+,;=:-]+\]|[0-9A-Za-z._~%!$&'()*+;=-]*)(?::[0-9]*)?")
#: RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT (h11's grammar too).
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
#: Bound of a loop's cache of valid Host values (check_parsed).
KNOWN_HOSTS_MAX = 256


#: Bytes that start an obs-fold continuation line (SP, HTAB).
_FOLD_START = (0x20, 0x09)


class HeadScan:
    """How far a request head that arrives in pieces has been checked (one connection's, one head's).

    A head trickled a few bytes per read must cost what it costs in one read,
    and must be refused as soon as it breaks a limit, not once it is complete
    (a head of 10,000 field lines would otherwise be buffered to its end, or to
    ``max_head_size``). So each call looks only at the bytes that arrived since
    the last one (a CRLF may straddle two reads): it counts field lines and
    measures each line as it completes, and refuses a bare LF at once, as
    Gunicorn's parser does. The caller finds the head's end (``\r\n\r\n``)
    itself, and calls ``scan`` only while there is none.

    The measures are those the complete head gets (``HTTPConnection._check_limits``
    on h11's or the fast path's parse, ``check_head``), so a head refused here
    would be refused there: no head is refused for the way it was cut into reads.
    """

    __slots__ = ("checked", "fields", "head", "line_start", "measured", "resume")

    def __init__(self) -> None:
        # On the h11 path, the head's bytes so far: h11's buffer is not ours to read, and its
        # public copy (``trailing_data``) taken on every read would make a trickled head cost
        # quadratic time. None on the fast path, whose buffer is the connection's.
        self.head: bytearray | None = None
        self.checked = 0  # bytes of the buffer looked at so far
        self.resume = 0  # where the caller's search for CRLFCRLF resumes (one may straddle two reads)
        self.line_start = 0  # where the line still arriving starts; every line before it was checked
        self.fields = -1  # complete field lines (continuation lines not counted); -1: request line incomplete
        self.measured = 0  # length of the unfinished field line when it was last measured

    def scan(self, data: bytes | bytearray, line_limit: int, fields_limit: int, size_limit: int) -> None:
        """Check what ``data`` (the buffer from the head's first byte) holds beyond the last call.

        The limits are Gunicorn's ``limit_request_line``, ``_fields`` and
        ``_field_size`` as ``ServerConfig`` holds them (0: none). Raises ``Rejection``.
        """
        start = self.checked
        end = len(data)
        # Every LF must close a CRLF (whose CR may have ended the previous read).
        if data.count(b"\n", start, end) != data.count(b"\r\n", start - 1 if start else 0, end):
            raise Rejection(400, "Bare LF in request head")
        self.checked = end
        self.resume = max(end - 3, 0)
        line_start = self.line_start
        eol = data.find(b"\r\n", max(line_start, start - 1), end)
        if eol >= 0:
            while eol >= 0:
                self._line(data, line_start, eol, line_limit, fields_limit, size_limit)
                line_start = eol + 2
                eol = data.find(b"\r\n", line_start, end)
            self.line_start = line_start
            self.measured = 0
        self._unfinished(data, line_start, end, line_limit, size_limit)

    def _line(self, data: bytes | bytearray, start: int, eol: int,
              line_limit: int, fields_limit: int, size_limit: int) -> None:
        """One complete line, ``data[start:eol]`` (its CRLF left out)."""
        if self.fields < 0:
            self.fields = 0
            if line_limit and eol - start > line_limit:
                raise Rejection(414, f"Request line is longer than limit_request_line={line_limit}")
            return
        if data[start] not in _FOLD_START:  # a continuation line belongs to the field before it
            self.fields += 1
            if fields_limit and self.fields > fields_limit:
                raise Rejection(431, f"More header fields than limit_request_fields={fields_limit}")
        if size_limit and eol - start + 2 > size_limit:  # "Name: value\r\n" can only be shorter
            check_field_size(data[start:eol], size_limit)

    def _unfinished(self, data: bytes | bytearray, start: int, end: int, line_limit: int, size_limit: int) -> None:
        """The line still arriving, ``data[start:end]``: what it holds already may break a limit."""
        length = end - start
        if length and data[end - 1] == 13:
            length -= 1  # a CR whose LF may come next
        if self.fields < 0:
            if line_limit and length > line_limit:
                raise Rejection(414, f"Request line is longer than limit_request_line={line_limit}")
        elif size_limit and length + 2 > size_limit and length >= 2 * self.measured:
            # Measured again only once it doubled: a long line of spaces trickled in stays linear.
            self.measured = length
            check_field_size(data[start:start + length], size_limit)


def check_field_size(line: bytes | bytearray, limit: int) -> None:
    """Gunicorn's ``limit_request_field_size`` on one field line (without its CRLF), or on its start.

    Measured as the complete head's check measures h11's parse of it: name,
    value without the whitespace around it, and 4 bytes for ``": "`` and CRLF.
    More bytes can only make a line's measure larger, so a start that is over
    the limit is a line that is.
    """
    name: bytes | bytearray = b""
    value = line  # a continuation line: all of it is part of a value
    if line[:1] not in (b" ", b"\t"):
        name, _, value = line.partition(b":")
    if len(name) + len(value.strip(b" \t")) + 4 > limit:
        raise Rejection(
            431, f"Header field {bytes(name).decode('latin-1')!r} is longer than limit_request_field_size={limit}"
        )


def check_head(head: bytes, permit_obs_fold: bool = False, permit_unconventional_method: bool = False) -> None:
    """Checks on the raw head bytes, from the request line to the blank line included."""
    # Every LF must be part of a CRLF: a proxy that accepts a bare LF as a line end
    # and one that does not would split the request differently.
    if head.count(b"\n") != head.count(b"\r\n"):
        raise Rejection(400, "Bare LF in request head")
    if head.count(b"\r") != head.count(b"\r\n"):
        raise Rejection(400, "Bare CR in request head")
    if CONTROL_CHARACTERS.search(head):
        raise Rejection(400, "Control character in request head")
    if b"\r\n " in head or b"\r\n\t" in head:
        if not permit_obs_fold:
            raise Rejection(400, "Obsolete line folding in request head")
    parts = head[: head.find(b"\r\n")].split(b" ")
    version = b""
    if len(parts) == 3:
        method, _target, version = parts
        if not permit_unconventional_method and not _METHOD_OK.fullmatch(method):
            raise Rejection(400, f"Invalid method {method.decode('latin-1')!r}")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") and _VERSION.fullmatch(version) and version[5] != 0x31:
            # A well-formed version of another major number: HTTP/1.2+ is served as HTTP/1.x
            # (RFC 9110 §2.5), as Gunicorn does. A malformed one (HTTP/1, HTTP/01.01) is left
            # to h11, whose grammar is RFC 9112 §2.3's: 400, as Gunicorn answers.
            raise Rejection(505, f"HTTP version {version[5:].decode('latin-1')} is not supported")
    content_lengths = 0
    content_types = 0
    transfer_encoding = False
    for name, value in _FRAMING.findall(head):
        lname = name.lower()
        if lname == b"content-length":
            content_lengths += 1
            if b"," in value:
                raise Rejection(400, "Content-Length holds a list")
        elif lname == b"transfer-encoding":
            transfer_encoding = True
        elif lname == b"host":
            check_host(value.rstrip(b" \t"))
        elif lname == b"content-type":
            content_types += 1
        elif value.strip().lower() != b"100-continue":
            raise Rejection(417, f"Unsupported expectation {value.decode('latin-1')!r}")
    if content_lengths > 1:
        raise Rejection(400, "Repeated Content-Length header")
    if content_types > 1:
        raise Rejection(400, "Repeated Content-Type header")
    if transfer_encoding:
        if content_lengths:
            raise Rejection(400, "Both Content-Length and Transfer-Encoding: ambiguous framing")
        if version == b"HTTP/1.0":
            # h11 would frame it by the chunked coding; RFC 9112 §6.1 calls that faulty.
            raise Rejection(400, "Transfer-Encoding on an HTTP/1.0 request")


def check_parsed(host: bytes, content_types: int, known_hosts: set[bytes]) -> None:
    """The rules of ``check_head`` that h11's grammar and the fast path do not already imply.

    For a head the fast path accepted (fastpath.parse_head: HTTP/1.1, CRLF
    lines, valid field syntax, no control character, a conventional method,
    one Host, at most one plain Content-Length, no Transfer-Encoding or
    Expect), what remains is the Host value and a repeated Content-Type.
    ``known_hosts`` holds Host values already found valid (one loop's, bounded):
    a client sends the same one on every request.
    """
    if host not in known_hosts:
        check_host(host)
        if len(known_hosts) < KNOWN_HOSTS_MAX:
            known_hosts.add(host)
    if content_types > 1:
        raise Rejection(400, "Repeated Content-Type header")


def check_host(value: bytes) -> None:
    """A Host value must be one ``uri-host [":" port]`` (RFC 9112 §3.2: else 400)."""
    if not _HOST.fullmatch(value):
        if value.find(b",") >= 0:
            raise Rejection(400, "Host header holds a list")
        raise Rejection(400, f"Invalid Host header {value.decode('latin-1')!r}")
