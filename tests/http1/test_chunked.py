"""The chunked-body scanner (pounce_worker/chunked.py) proven against h11 itself.

The scanner sits in front of h11: it sees every byte of a chunked request
body first and may refuse it. So it must never refuse a valid body, and
whenever it and h11 both accept a body they must end it at the same byte
(else the bytes after it would be framed differently: the very smuggling the
scanner is there to stop). Three kinds of evidence:

* generated RFC 9112 §7.1 bodies (sizes with leading zeros and either case,
  chunk extensions with tokens and quoted-strings, trailer fields), fed in
  random pieces and followed by the next request: the scanner accepts every
  one and ends it where h11 does;
* mutated bodies (bytes inserted, dropped, replaced): the scanner's verdict
  does not depend on how the bytes are split, and when both accept, the ends
  agree;
* the vectors of tests/test_hostile_input.py that h11 accepts and Gunicorn
  refuses: h11 still accepts them, the scanner refuses each, whole or byte
  by byte.
"""

from __future__ import annotations

import dataclasses
import itertools

import h11
import pytest
from gunicorn.config import Config

from pounce_worker.asgi import Rejection
from pounce_worker.config import ServerConfig
from pounce_worker.http1.chunked import DEFAULT_MAX_LINE, FORBIDDEN_TRAILERS, ChunkedScanner, scanner_for
from tests.hypothesis_compat import HealthCheck, example, given, settings, st

HEAD = b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
#: Gunicorn's defaults, as the worker builds them.
CONFIG = ServerConfig.from_gunicorn(Config(), env={})


# -- the two parsers, run to a verdict --------------------------------------------------------


def h11_end(body: bytes) -> int | str:
    """Where h11 ends the chunked body at the start of ``body``: an index, "reject" or "need-data"."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(HEAD + body)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return "need-data"
            if isinstance(event, h11.EndOfMessage):
                return len(body) - len(conn.trailing_data[0])
    except h11.RemoteProtocolError:
        return "reject"


def scan(body: bytes, cuts: list[int] | tuple[int, ...] = ()) -> int | str:
    """Where the scanner ends the body, fed in pieces cut at ``cuts``: an index, "reject(N)" or "need-data"."""
    scanner = ChunkedScanner(max_trailers=65536)
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(body)}), len(body)]
    try:
        for start, stop in itertools.pairwise(bounds):
            end = scanner.feed(body[start:stop])
            if end is not None:
                assert scanner.done
                return start + end
    except Rejection as exc:
        return f"reject({exc.status})"
    assert not scanner.done
    return "need-data"


# -- generators of RFC 9112 bodies ----------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHAR, min_size=1, max_size=8).map(str.encode)
#: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text; quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
qdtext = st.sampled_from([b"\t", b" ", b"!"] + [bytes([c]) for c in range(0x23, 0x7F) if c != 0x5C]
                         + [b"\x80", b"\xe9", b"\xff"])
quoted_pair = st.sampled_from([b"\\\\", b'\\"', b"\\ ", b"\\\t", b"\\a", b"\\\xe9"])
quoted_strings = st.lists(st.one_of(qdtext, quoted_pair), max_size=6).map(lambda parts: b'"' + b"".join(parts) + b'"')
bws = st.sampled_from([b"", b"", b" ", b"\t", b" \t "])


@st.composite
def chunk_ext(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        out += draw(bws) + b";" + draw(bws) + draw(tokens)
        if draw(st.booleans()):
            out += draw(bws) + b"=" + draw(bws) + draw(st.one_of(tokens, quoted_strings))
    return out


@st.composite
def chunk_size(draw: st.DrawFn, size: int) -> bytes:
    digits = b"%x" % size
    if draw(st.booleans()):
        digits = digits.upper()
    return b"0" * draw(st.integers(0, 3)) + digits


field_vchar = st.sampled_from([bytes([c]) for c in range(0x21, 0x7F)] + [b"\x80", b"\xe9", b"\xff"])


@st.composite
def field_value(draw: st.DrawFn) -> bytes:
    words = draw(st.lists(st.lists(field_vchar, min_size=1, max_size=4).map(b"".join), max_size=3))
    return b"".join(word + draw(st.sampled_from([b" ", b"\t", b"  "])) for word in words[:-1]) + (
        words[-1] if words else b"")


@st.composite
def trailer_section(draw: st.DrawFn) -> bytes:
    lines = []
    content_type = False
    for _ in range(draw(st.integers(0, 3))):
        name = draw(tokens)
        lname = name.lower()
        if lname in FORBIDDEN_TRAILERS or (lname == b"content-type" and content_type):
            continue
        content_type = content_type or lname == b"content-type"
        lines.append(name + b":" + draw(bws) + draw(field_value()) + draw(bws) + b"\r\n")
    return b"".join(lines) + b"\r\n"


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    out = b""
    for size in draw(st.lists(st.integers(1, 300), max_size=4)):
        data = draw(st.binary(min_size=size, max_size=size))
        out += draw(chunk_size(size)) + draw(chunk_ext()) + b"\r\n" + data + b"\r\n"
    out += b"0" * draw(st.integers(1, 3)) + draw(chunk_ext()) + b"\r\n"
    return out + draw(trailer_section())


cut_points = st.lists(st.integers(0, 2000), max_size=8)


# -- valid bodies: always accepted, and ended where h11 ends them -------------------------------------


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_body(), cut_points, st.sampled_from([b"", NEXT, b"\r\n", b"0\r\n\r\n", b"garbage"]))
@example(b"3;a=b;c=\"d e\"\r\nabc\r\n0\r\n\r\n", [], NEXT)
@example(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n", [1, 2, 3], NEXT)
@example(b"0003\r\nabc\r\n00\r\n\r\n", [], b"")
@example(b"3 ; a = \"q\\\"\"\r\nabc\r\n0\r\n\r\n", [], b"")
def test_scanner_accepts_every_valid_body_and_ends_it_where_h11_does(body, cuts, tail):
    data = body + tail
    assert scan(data, cuts) == len(body), data
    expected = h11_end(data)
    if isinstance(expected, int):
        assert expected == len(body), data
    else:
        # h11 refuses a few valid bodies (whitespace before ';', which RFC 9112 allows as BWS):
        # h11 still parses every byte, so the request is refused whatever the scanner says.
        assert expected == "reject" and (b" ;" in data or b"\t;" in data), (expected, data)


def test_h11_refuses_whitespace_before_a_chunk_extension():
    """Pinned: the one valid form h11 refuses (RFC 9112 §7.1.1 BWS); the scanner takes it, h11 decides."""
    body = b"3 ;a=b\r\nabc\r\n0\r\n\r\n"
    assert h11_end(body) == "reject"
    assert scan(body) == len(body)


# -- any bytes: the verdict does not depend on how they are split, and agrees with h11's end ---------------

NASTY = [b"\r\n", b"\n", b"\r", b" ", b"\t", b";", b"=", b'"', b"\\", b"\x00", b"\x7f", b"\xff", b"0", b"f", b"x",
         b"Host: h\r\n", b"Content-Length: 1\r\n", b" folded\r\n", b"ffffffffffffffffffffff"]


@st.composite
def mutated_body(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(chunked_body()) + draw(st.sampled_from([b"", NEXT])))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data[pos:pos] = draw(st.sampled_from(NASTY))
        elif kind == 1:
            del data[pos:pos + draw(st.integers(1, 4))]
        elif kind == 2 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_body(), cut_points)
def test_scanner_verdict_is_split_invariant_and_never_ends_elsewhere_than_h11(data, cuts):
    whole = scan(data)
    assert scan(data, cuts) == whole
    assert scan(data, range(len(data))) == whole  # one byte at a time
    if isinstance(whole, int):
        expected = h11_end(data)
        assert expected == whole or expected == "reject", (whole, expected, data)


# -- the vectors h11 lets through --------------------------------------------------------------------

LAX_IN_H11 = {
    "chunk_size_trailing_space": b"3 \r\nabc\r\n0\r\n\r\n",
    "chunk_size_trailing_tab": b"3\t\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_bare_cr": b"3;a\rb\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_invalid": b"3;a b c\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_no_name": b"3;\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_no_value": b"3;a=\r\nabc\r\n0\r\n\r\n",
    "chunk_ext_unterminated_quote": b'3;a="b\r\nabc\r\n0\r\n\r\n',
    "chunk_ext_trailing_space": b"3;a=b \r\nabc\r\n0\r\n\r\n",
    "chunk_ext_nul": b"3;a=\x00\r\nabc\r\n0\r\n\r\n",
    "last_chunk_ext_invalid": b"3\r\nabc\r\n0;a b\r\n\r\n",
    "chunk_last_bare_lf": b"3\r\nabc\r\n0\r\n\n",
    "trailer_bare_lf": b"3\r\nabc\r\n0\r\nX: y\n\n",
    "trailer_bare_lf_then_crlf": b"3\r\nabc\r\n0\r\nX: y\n\r\n",
    "trailer_obs_fold": b"3\r\nabc\r\n0\r\nX: y\r\n z\r\n\r\n",
    "trailer_control_char": b"3\r\nabc\r\n0\r\nX: a\x01b\r\n\r\n",
    "trailer_repeated_content_type": b"0\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n",
    **{f"trailer_{name.decode()}": b"3\r\nabc\r\n0\r\n" + name.title() + b": chunked\r\n\r\n"
       for name in sorted(FORBIDDEN_TRAILERS - {b"content-length"})},
    "trailer_content-length": b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",
}


@pytest.mark.parametrize("body", LAX_IN_H11.values(), ids=LAX_IN_H11.keys())
def test_scanner_refuses_what_h11_lets_through(body):
    data = body + NEXT
    assert isinstance(h11_end(data), int), "h11 now refuses this itself: the table needs a look"
    assert scan(data) == "reject(400)"
    assert scan(data, range(len(data))) == "reject(400)"


H11_REFUSES_TOO = [
    b"f" * 40 + b"\r\nabc\r\n0\r\n\r\n", b"-3\r\nabc\r\n0\r\n\r\n", b"0x3\r\nabc\r\n0\r\n\r\n",
    b" 3\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX0\r\n\r\n", b"3\nabc\r\n0\r\n\r\n", b"\r\n", b"3\r\nabc\n0\r\n\r\n",
]


@pytest.mark.parametrize("body", H11_REFUSES_TOO)
def test_scanner_refuses_what_h11_refuses_in_the_chunk_lines(body):
    """Chunk lines h11 refuses are refused by the scanner too, so the client gets one 400 either way."""
    assert h11_end(body) == "reject"
    assert scan(body) == "reject(400)"


# -- bounded buffering ---------------------------------------------------------------------------------


def test_overlong_chunk_size_line_is_refused_before_it_ends():
    scanner = ChunkedScanner(max_line=100)
    scanner.feed(b"3;" + b"a" * 90)
    with pytest.raises(Rejection) as caught:
        scanner.feed(b"a" * 20)
    assert caught.value.status == 400


def test_oversized_trailer_section_is_a_431():
    scanner = ChunkedScanner(max_trailers=1000)
    scanner.feed(b"0\r\n")
    with pytest.raises(Rejection) as caught:
        for _ in range(100):
            scanner.feed(b"X-Pad: " + b"p" * 20 + b"\r\n")
    assert caught.value.status == 431


def test_chunk_data_is_counted_not_buffered():
    scanner = ChunkedScanner()
    assert scanner.feed(b"100000\r\n") is None
    for _ in range(16):
        assert scanner.feed(b"z" * 65536) is None
    assert scanner.feed(b"\r\n0\r\n\r\nGET") == 7
    assert scanner.done and scanner.feed(b"anything") == 0


def test_scanner_for_only_chunked_requests():
    """h11's accepted requests: a scanner exactly when the body is chunked (h11 refuses other codings)."""
    for head, chunked in [(HEAD, True), (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n", False),
                          (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False)]:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        request = conn.next_event()
        assert isinstance(request, h11.Request)
        scanner = scanner_for(request.headers, CONFIG)
        assert (scanner is not None) == chunked
    assert DEFAULT_MAX_LINE == 8190  # Gunicorn's fallback when limit_request_field_size is 0


def test_scanner_for_takes_gunicorns_bounds():
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(HEAD)
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    small = dataclasses.replace(CONFIG, limit_request_field_size=50, permit_obsolete_folding=True)
    scanner = scanner_for(request.headers, small)
    assert scanner is not None
    with pytest.raises(Rejection):
        scanner.feed(b"1;" + b"x" * 60)
    folded = scanner_for(request.headers, small)
    assert folded is not None and folded.feed(b"0\r\nX: y\r\n z\r\n\r\n") is not None


def test_obs_fold_in_trailers_follows_permit_obsolete_folding():
    body = b"0\r\nX: y\r\n z\r\n\r\n"
    assert ChunkedScanner(permit_obs_fold=True).feed(body) == len(body)
    with pytest.raises(Rejection):
        ChunkedScanner().feed(body)
