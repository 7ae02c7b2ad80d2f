"""Real HTTP/2 clients against every row (issue 13 point 6): curl, httpx, nghttp, h2load.

Each client checks status, headers and body, that the exchange really was HTTP/2 (curl's
``%{http_version}``, httpx's ``http_version``, nghttp's frames, h2load's application
protocol), a request body past the 65,535-byte initial window (flow control both ways),
and response trailers where the client shows them. Over h2c with prior knowledge and over
TLS, where ALPN picks ``h2`` (and a client offering only ``http/1.1`` is served HTTP/1.1).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.harness import Gunicorn, require_tool
from tests.http2.h2_harness import HOST, MAX_CONCURRENT_STREAMS, client_context

pytestmark = pytest.mark.timeout(60)

#: A request body that needs several WINDOW_UPDATEs from the server (4.6 x the initial window).
UPLOAD = os.urandom(300_000)


@pytest.fixture(scope="module")
def upload_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "body.bin"
    path.write_bytes(UPLOAD)
    return path


def _url(server: Gunicorn, path: str, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{HOST}:{server.port}{path}"


def _curl(server: Gunicorn, path: str, tls: bool, certs: dict[str, Path] | None, *args: str,
          tmp: Path) -> tuple[str, int, str, bytes]:
    """``(http_version, status, header dump, body)`` of one curl run (trailers land in the header dump)."""
    curl = require_tool("curl", "curl")
    mode = ["--http2", "--cacert", str(certs["ca.pem"])] if tls and certs else ["--http2-prior-knowledge"]
    headers, body = tmp / "headers.txt", tmp / "body.bin"
    out = subprocess.run(
        [curl, "-sS", "--max-time", "20", *mode, *args, "-D", str(headers), "-o", str(body),
         "-w", "%{http_version} %{response_code}", _url(server, path, tls)],
        capture_output=True, timeout=30, text=True)
    assert out.returncode == 0, f"curl failed ({out.returncode}): {out.stderr}"
    version, status = out.stdout.split()
    return version, int(status), headers.read_text(), body.read_bytes()


def test_curl(h2any: Gunicorn, certs: dict[str, Path], upload_file: Path,
              tmp_path: Path) -> None:
    server, tls = h2any, h2any.tls  # type: ignore[attr-defined]
    version, status, head, body = _curl(server, "/some/path?q=1", tls, certs, tmp=tmp_path)
    assert (version, status, body) == ("2", 200, b"hello")
    assert head.startswith("HTTP/2 200"), head
    assert re.search(r"(?mi)^x-path: /some/path\r?$", head), head
    assert re.search(r"(?mi)^content-length: 5\r?$", head), head

    version, status, head, body = _curl(server, "/echo", tls, certs, "--data-binary", f"@{upload_file}",
                                        "-H", "content-type: application/octet-stream", tmp=tmp_path)
    assert (version, status, len(body)) == ("2", 200, len(UPLOAD))
    assert body == UPLOAD

    version, status, head, body = _curl(server, "/trailers", tls, certs, tmp=tmp_path)
    assert (version, status, body) == ("2", 200, b"with trailers")
    assert re.search(r"(?mi)^x-checksum: abc123\r?$", head), f"no trailer in curl's dump: {head}"


def test_curl_http11_alongside(h2any: Gunicorn, certs: dict[str, Path]) -> None:
    """``http_protocols`` h2,h1: a TLS client offering only ``http/1.1`` over ALPN is served HTTP/1.1.

    (On the h2c port, a trusted peer speaking HTTP/1.1 is refused with 400: Gunicorn's documented
    prior-knowledge behaviour, point 1 of issue 13, not a client test.)
    """
    if not h2any.tls:  # type: ignore[attr-defined]
        pytest.skip("ALPN is a TLS mechanism")
    curl = require_tool("curl", "curl")
    out = subprocess.run(
        [curl, "-sS", "--max-time", "20", "--http1.1", "--cacert", str(certs["ca.pem"]), "-o", "/dev/null",
         "-w", "%{http_version} %{response_code}", _url(h2any, "/", True)],
        capture_output=True, timeout=30, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.1", "200"]


def test_httpx(h2any: Gunicorn, certs: dict[str, Path]) -> None:
    """httpx with h2: several requests multiplexed on one connection, a streamed upload."""
    server, tls = h2any, h2any.tls  # type: ignore[attr-defined]
    kwargs: dict[str, object] = {"http2": True, "timeout": 20}
    if tls:
        kwargs["verify"] = client_context(certs["ca.pem"], alpn=("h2", "http/1.1"))
    else:
        kwargs["http1"] = False  # prior knowledge
    with httpx.Client(**kwargs) as client:  # type: ignore[arg-type]
        response = client.get(_url(server, "/a", tls))
        assert (response.http_version, response.status_code, response.content) == ("HTTP/2", 200, b"hello")
        assert response.headers["x-path"] == "/a"
        assert response.headers["content-type"] == "text/plain"

        def chunks():  # a body without content-length, sent as it is produced
            for i in range(0, len(UPLOAD), 50_000):
                yield UPLOAD[i:i + 50_000]

        response = client.post(_url(server, "/echo", tls), content=chunks())
        assert (response.http_version, response.status_code) == ("HTTP/2", 200)
        assert response.content == UPLOAD
        assert int(response.headers["x-chunks"]) >= 2, "the app got the body in one piece: not streamed"

        statuses = [client.get(_url(server, f"/status/{code}", tls)).status_code for code in (201, 204, 404, 500)]
        assert statuses == [201, 204, 404, 500]


def test_nghttp(h2any: Gunicorn, upload_file: Path) -> None:
    """nghttp (prior knowledge without -u): the frames show the trailers HEADERS and the upload."""
    nghttp = require_tool("nghttp", "nghttp2-client")
    server, tls = h2any, h2any.tls  # type: ignore[attr-defined]
    out = subprocess.run([nghttp, "-v", "-t", "20", _url(server, "/trailers", tls)],
                         capture_output=True, timeout=30)
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, text[-2000:]
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", text), text[-2000:]
    assert re.search(r"recv \(stream_id=\d+\) x-checksum: abc123", text), "no trailer: " + text[-2000:]
    assert "with trailers" in text
    out = subprocess.run([nghttp, "-t", "20", "-d", str(upload_file), _url(server, "/echo", tls)],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == UPLOAD


@pytest.mark.serial
def test_h2load_no_failed_requests(h2any: Gunicorn) -> None:
    """h2load: 4,000 requests on 8 connections x 8 streams, all succeed, over h2 (or h2c).

    Streams per connection stay within ``http2_max_concurrent_streams``: h2load opens its
    streams before the server's SETTINGS arrive, and ``-k asgi`` answers a stream over the
    limit with GOAWAY (see offence.ASGI_WEAKNESSES["beyond-concurrency"]): with
    ``-m 10`` every connection fails after its first streams.
    """
    h2load = require_tool("h2load", "nghttp2-client")
    server, tls = h2any, h2any.tls  # type: ignore[attr-defined]
    out = subprocess.run([h2load, "-n", "4000", "-c", "8", "-m", str(MAX_CONCURRENT_STREAMS), "-T", "20", "-N", "20",
                          _url(server, "/", tls)], capture_output=True, timeout=60, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"Application protocol: {'h2' if tls else 'h2c'}" in out.stdout, out.stdout
    assert "requests: 4000 total, 4000 started, 4000 done, 4000 succeeded, 0 failed, 0 errored, 0 timeout" \
        in out.stdout, out.stdout
    assert "status codes: 4000 2xx" in out.stdout, out.stdout
