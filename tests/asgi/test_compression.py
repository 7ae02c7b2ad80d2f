"""Response compression (POUNCE_COMPRESSION): negotiation, eligibility, framing, streaming.

Servers run tests/feature_apps.py in both forced modes, each with the fast path
on and off (so the rewritten head is framed by the fast writer and by h11).
Responses are read with raw sockets, parsed by h11, and decompressed here.
"""

from __future__ import annotations

import gzip
import socket
import uuid
import zlib
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from gunicorn.config import Config

from pounce_worker.asgi.compression import SUPPORTED, CompressionPolicy, negotiate
from pounce_worker.config import ConfigError, ServerConfig
from tests.feature_apps import text
from tests.harness import HOST, Gunicorn, RawConnection, http_request

SERVERS = [("threads", "1"), ("processes", "1"), ("threads", "0"), ("processes", "0")]


@pytest.fixture(scope="module", params=SERVERS, ids=[f"{m}-fast{f}" for m, f in SERVERS])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    mode, fast = request.param
    env = {"POUNCE_COMPRESSION": "gzip", "POUNCE_FAST_PATH": fast}
    with_server = Gunicorn("tests.feature_apps:app", mode=mode, env=env)
    with_server.start()
    try:
        yield with_server
    finally:
        with_server.stop()


def get(server: Gunicorn, target: str, accept: str | None = "gzip", method: str = "GET"):
    headers = [("Accept-Encoding", accept)] if accept is not None else []
    with RawConnection(server.port) as conn:
        conn.send(http_request(method, target, headers))
        return conn.read_response(method.encode())


# -- negotiation ----------------------------------------------------------------------------------

NEGOTIATION = [
    (None, ("gzip",), None),
    ("", ("gzip",), None),
    ("gzip", ("gzip",), "gzip"),
    ("GZIP", ("gzip",), "gzip"),
    ("x-gzip", ("gzip",), "gzip"),
    ("gzip;q=0", ("gzip",), None),
    ("gzip; q=0.000", ("gzip",), None),
    ("deflate, br", ("gzip",), None),
    ("*", ("gzip",), "gzip"),
    ("*;q=0", ("gzip",), None),
    ("*;q=0.5, gzip;q=0", ("gzip",), None),
    ("br, *;q=0.1", ("gzip",), "gzip"),
    ("identity", ("gzip",), None),
    ("identity;q=1, gzip;q=0.5", ("gzip",), None),
    ("identity;q=0.1, gzip;q=0.5", ("gzip",), "gzip"),
    ("gzip;q=0.5", ("gzip",), "gzip"),
    ("gzip;q=0.5, zstd", ("gzip", "zstd"), "zstd"),
    ("gzip, zstd", ("gzip", "zstd"), "gzip"),
    ("gzip, zstd", ("zstd", "gzip"), "zstd"),
    ("gzip;q=0.8, zstd;q=0.9", ("gzip", "zstd"), "zstd"),
    ("zstd", ("gzip",), None),
    ("gzip;q=2", ("gzip",), None),
    ("gzip;q=abc, deflate", ("gzip",), None),
    ("deflate, gzip ; q=0.3 ; foo=bar", ("gzip",), "gzip"),
]


@pytest.mark.parametrize(("accept", "offered", "chosen"), NEGOTIATION)
def test_negotiation_table(accept: str | None, offered: tuple[str, ...], chosen: str | None) -> None:
    value = None if accept is None else accept.encode()
    assert negotiate(value, offered) == chosen


@pytest.mark.parametrize(
    ("accept", "encoded"),
    [(None, False), ("gzip", True), ("gzip;q=0", False), ("*", True), ("identity", False),
     ("br;q=1, gzip;q=0.2", True), ("*;q=0", False)],
)
def test_negotiation_end_to_end(server: Gunicorn, accept: str | None, encoded: bool) -> None:
    response = get(server, "/body?size=3000", accept)
    assert response.status == 200
    assert (response.header(b"content-encoding") == b"gzip") is encoded
    body = gzip.decompress(response.body) if encoded else response.body
    assert body == text(3000)
    assert response.header(b"vary") == b"Accept-Encoding"


def test_several_accept_encoding_fields_are_combined(server: Gunicorn) -> None:
    with RawConnection(server.port) as conn:
        conn.send(http_request("GET", "/body", [("Accept-Encoding", "br"), ("Accept-Encoding", "gzip")]))
        response = conn.read_response()
    assert response.header(b"content-encoding") == b"gzip"


# -- what gets compressed ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 499, 500, 20_000, 300_000])
def test_gzip_round_trip_with_exact_content_length(server: Gunicorn, size: int) -> None:
    response = get(server, f"/body?size={size}")
    if size < 500:  # POUNCE_COMPRESSION_MIN_SIZE's default
        assert response.header(b"content-encoding") is None
        assert response.header(b"vary") is None  # too small to ever vary
        assert response.body == text(size)
        return
    assert response.header(b"content-encoding") == b"gzip"
    assert b"transfer-encoding" not in {k.lower() for k, _ in response.headers}  # h11 keeps the sent case
    assert int(response.header(b"content-length") or -1) == len(response.body) < size
    assert gzip.decompress(response.body) == text(size)


def test_min_size_without_content_length_decides_by_the_body(server: Gunicorn) -> None:
    small = get(server, "/body?size=100&nolength")
    assert small.header(b"content-encoding") is None and small.body == text(100)
    big = get(server, "/body?size=5000&nolength")
    assert big.header(b"content-encoding") == b"gzip"
    assert int(big.header(b"content-length") or -1) == len(big.body)
    assert gzip.decompress(big.body) == text(5000)


@pytest.mark.parametrize(
    ("ctype", "encoded"),
    [("text/plain", True), ("text/html; charset=utf-8", True), ("application/json", True),
     ("application/javascript", True), ("image/svg+xml", True), ("Application/JSON", True),
     ("image/png", False), ("application/octet-stream", False), ("application/jsonx", False)],
)
def test_content_type_allow_list(server: Gunicorn, ctype: str, encoded: bool) -> None:
    response = get(server, "/body?" + urlencode({"size": 2000, "type": ctype}))
    assert (response.header(b"content-encoding") == b"gzip") is encoded
    assert (response.header(b"vary") is not None) is encoded


def test_already_encoded_body_is_untouched(server: Gunicorn) -> None:
    response = get(server, "/encoded?size=4000")
    assert response.headers.count((b"content-encoding", b"gzip")) == 1
    assert gzip.decompress(response.body) == text(4000)


@pytest.mark.parametrize("code", [204, 304, 206])
def test_no_body_and_partial_statuses_are_untouched(server: Gunicorn, code: int) -> None:
    response = get(server, f"/status?code={code}&size=3000")
    assert response.status == code
    assert response.header(b"content-encoding") is None
    assert response.header(b"vary") is None
    if code == 206:
        assert response.body == text(3000)


def test_no_transform_is_respected(server: Gunicorn) -> None:
    response = get(server, "/body?" + urlencode({"size": 3000, "cache_control": "public, no-transform"}))
    assert response.header(b"content-encoding") is None
    assert response.body == text(3000)


def test_head_has_gets_headers_and_no_body(server: Gunicorn) -> None:
    head = get(server, "/body?size=3000", method="HEAD")
    full = get(server, "/body?size=3000")
    assert head.body == b""
    for name in (b"content-encoding", b"vary", b"content-type", b"content-length"):
        assert head.header(name) == full.header(name), name


@pytest.mark.parametrize(
    ("vary", "expected"),
    [("Origin", b"Origin, Accept-Encoding"), ("accept-encoding", b"accept-encoding"),
     ("Origin, Accept-Encoding", b"Origin, Accept-Encoding"), ("*", b"*")],
)
def test_vary_is_merged(server: Gunicorn, vary: str, expected: bytes) -> None:
    response = get(server, "/body?" + urlencode({"size": 3000, "vary": vary}))
    assert response.header(b"content-encoding") == b"gzip"
    assert [v for k, v in response.headers if k == b"vary"] == [expected]


def test_strong_etag_becomes_weak(server: Gunicorn) -> None:
    response = get(server, '/body?' + urlencode({"size": 3000, "etag": '"v1"'}))
    assert response.header(b"etag") == b'W/"v1"'


def test_accept_ranges_is_dropped_from_a_compressed_response_only(server: Gunicorn) -> None:
    """Ranges name bytes of the identity body: offered on a compressed one, a client's next
    Range request would splice identity bytes into the encoded ones (nginx's gzip drops it too)."""
    target = "/body?" + urlencode({"size": 3000, "accept_ranges": "bytes"})
    compressed = get(server, target)
    assert compressed.header(b"content-encoding") == b"gzip"
    assert compressed.header(b"accept-ranges") is None
    plain = get(server, target, accept=None)
    assert plain.header(b"content-encoding") is None and plain.header(b"accept-ranges") == b"bytes"


def test_keep_alive_survives_compressed_responses(server: Gunicorn) -> None:
    with httpx.Client(base_url=server.url, headers={"accept-encoding": "gzip"}) as client:
        for size in (3000, 10, 70_000):
            response = client.get(f"/body?size={size}")
            assert response.content == text(size)  # httpx decodes gzip
        streamed = client.get("/stream?size=2000&chunks=4")
        assert streamed.headers["content-encoding"] == "gzip"
        assert streamed.content == b"".join(text(2000)[i % 7:] + b"%d" % i for i in range(4))


# -- streaming ----------------------------------------------------------------------------------------


def _read_chunked_until(sock: socket.socket, decoder: zlib._Decompress, want: bytes, buf: bytearray) -> bytes:
    """Read chunked, gzip-encoded data from ``sock`` until ``want`` bytes have decompressed."""
    out = b""
    while len(out) < len(want):
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(bytes(buf[:line_end]), 16)
            if len(buf) < line_end + 2 + size + 2:
                break
            chunk = bytes(buf[line_end + 2: line_end + 2 + size])
            del buf[: line_end + 2 + size + 2]
            out += decoder.decompress(chunk)
            if size == 0:
                return out
        if len(out) >= len(want):
            break
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return out


@pytest.mark.timeout(60)
def test_streamed_chunks_decompress_as_they_arrive(server: Gunicorn) -> None:
    token = uuid.uuid4().hex
    pieces = [text(3000)[i % 7:] + b"%d" % i for i in range(3)]
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(http_request("GET", f"/stream?size=3000&chunks=3&token={token}",
                                  [("Accept-Encoding", "gzip")]))
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower()
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"content-length" not in head.lower()
        buf = bytearray(rest)
        decoder = zlib.decompressobj(31)
        # The second piece waits for /release: the first must decompress on its own, now.
        first = _read_chunked_until(sock, decoder, pieces[0], buf)
        assert first == pieces[0]
        released = httpx.get(f"{server.url}/release?token={token}", timeout=10)
        assert released.status_code == 200
        rest_out = _read_chunked_until(sock, decoder, pieces[1] + pieces[2], buf)
        rest_out += decoder.flush()
        assert rest_out == pieces[1] + pieces[2]
        assert decoder.eof


# -- settings ---------------------------------------------------------------------------------------


def _config(**env: str) -> ServerConfig:
    return ServerConfig.from_gunicorn(Config(), {"POUNCE_WORKER_MODE": "processes", **env})


def test_compression_is_off_by_default() -> None:
    assert _config().compression is None
    assert _config(POUNCE_COMPRESSION="off").compression is None


def test_compression_settings_are_parsed() -> None:
    policy = _config(POUNCE_COMPRESSION="zstd, gzip", POUNCE_COMPRESSION_MIN_SIZE="100",
                     POUNCE_COMPRESSION_TYPES="text/*, application/json").compression
    assert policy is not None
    assert policy.encodings == (("zstd", "gzip") if "zstd" in SUPPORTED else ("gzip",))
    assert policy.min_size == 100
    assert policy.compressible(b"text/csv") and policy.compressible(b"application/json; charset=utf-8")
    assert not policy.compressible(b"application/xml")


@pytest.mark.parametrize(
    ("env", "message"),
    [({"POUNCE_COMPRESSION": "brotli"}, "POUNCE_COMPRESSION='brotli': unknown coding"),
     ({"POUNCE_COMPRESSION": "gzip", "POUNCE_COMPRESSION_TYPES": "json"}, "POUNCE_COMPRESSION_TYPES"),
     ({"POUNCE_COMPRESSION": "gzip", "POUNCE_COMPRESSION_MIN_SIZE": "big"}, "POUNCE_COMPRESSION_MIN_SIZE")],
)
def test_bad_compression_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**env)


@pytest.mark.skipif("zstd" in SUPPORTED, reason="this Python has compression.zstd")
def test_zstd_alone_without_the_module_fails_the_boot() -> None:
    server = Gunicorn("tests.feature_apps:app", mode="processes", env={"POUNCE_COMPRESSION": "zstd"})
    returncode = server.boot_failure(20)
    assert returncode != 0
    assert "POUNCE_COMPRESSION='zstd'" in server.output()
    assert "zstd needs CPython 3.14" in server.output()


def test_zstd_as_a_preference_falls_back_to_gzip_where_missing(mode: str) -> None:
    env = {"POUNCE_COMPRESSION": "zstd,gzip"}
    with Gunicorn("tests.feature_apps:app", mode=mode, env=env) as server:
        response = get(server, "/body?size=4000", "zstd, gzip;q=0.9")
        gz = get(server, "/body?size=4000", "gzip")
    if "zstd" in SUPPORTED:
        from compression import zstd  # type: ignore[import-not-found]

        assert response.header(b"content-encoding") == b"zstd"
        assert zstd.decompress(response.body) == text(4000)
    else:
        assert response.header(b"content-encoding") == b"gzip"
        assert gzip.decompress(response.body) == text(4000)
    assert gz.header(b"content-encoding") == b"gzip"


def test_policy_unit_eligibility() -> None:
    policy = CompressionPolicy.from_settings("gzip", "text/*", 10)
    assert policy is not None and policy.type_prefixes == (b"text/",)
    assert CompressionPolicy.from_settings("off", "text/*", 10) is None


def test_zstd_encoder_flushes_every_chunk() -> None:
    zstd = pytest.importorskip("compression.zstd", reason="compression.zstd is CPython 3.14+")
    from pounce_worker.asgi.compression import _ENCODERS

    encoder = _ENCODERS["zstd"]()
    decoder = zstd.ZstdDecompressor()
    assert decoder.decompress(encoder.chunk(text(3000))) == text(3000)
    assert decoder.decompress(encoder.last(b"end")) == b"end"
    assert decoder.eof


def test_gzip_encoder_flushes_every_chunk() -> None:
    from pounce_worker.asgi.compression import _ENCODERS

    encoder = _ENCODERS["gzip"]()
    decoder = zlib.decompressobj(31)
    assert decoder.decompress(encoder.chunk(text(3000))) == text(3000)
    assert decoder.decompress(encoder.last(b"end")) == b"end"
    assert decoder.eof
