"""The ASGI ``http.response.pathsend`` extension: files sent by the kernel (or in blocks).

Masters in both forced modes serve tests/feature_apps.py's ``/file`` route:
with asyncio (``loop.sendfile`` → ``os.sendfile``), with uvloop where installed
(no ``loop.sendfile``: the block fallback), with the fast path off (h11 frames
the file), and over TLS (the block fallback again). Bodies are compared byte
for byte with the file.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.harness import HOST, Gunicorn, RawConnection, http_request, wait_until
from tests.test_settings_tls import _client_context, _tls_args, certs  # noqa: F401 - certs is a fixture

SERVERS = [
    ("threads", "asyncio", "1"),
    ("processes", "asyncio", "1"),
    ("threads", "asyncio", "0"),
    ("processes", "asyncio", "0"),
    ("threads", "uvloop", "1"),
]
SIZE = 5 * 1024 * 1024 + 7


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pathsend")
    big = d / "big.bin"
    big.write_bytes(os.urandom(SIZE))
    empty = d / "empty.bin"
    empty.write_bytes(b"")
    small = d / "small.txt"
    small.write_bytes(b"hello pathsend\n" * 400)
    return {"big": big, "empty": empty, "small": small, "dir": d}


@pytest.fixture(scope="module", params=SERVERS, ids=["-".join(p) for p in SERVERS])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    mode, loop, fast = request.param
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    s = Gunicorn("tests.feature_apps:app", "--asgi-loop", loop, mode=mode, env={"POUNCE_FAST_PATH": fast})
    s.args += ["--access-logfile", str(s.tmp / "access.log"), "--access-logformat", "%(r)s %(s)s %(b)s"]
    with s:
        yield s


def target(path: Path | str, **params: object) -> str:
    return "/file?" + urlencode({"path": str(path), **params})


def fast(server: Gunicorn) -> bool:
    return server.extra_env.get("POUNCE_FAST_PATH") == "1"


def test_file_bytes_and_length_without_a_declared_length(server: Gunicorn, files: dict[str, Path]) -> None:
    with RawConnection(server.port, timeout=20) as conn:
        conn.send(http_request("GET", target(files["big"])))
        response = conn.read_response()
    assert response.status == 200
    assert response.body == files["big"].read_bytes()
    names = {k.lower(): v for k, v in response.headers}  # h11 keeps the case it was sent in
    if fast(server):
        # The head was still unsent: it carries the file's size.
        assert response.header(b"content-length") == str(SIZE).encode()
        assert b"transfer-encoding" not in names
    else:
        # h11 framed the head already: the file goes out as one chunk.
        assert names[b"transfer-encoding"] == b"chunked"


def test_declared_length_is_kept(server: Gunicorn, files: dict[str, Path]) -> None:
    with httpx.Client(base_url=server.url, timeout=20) as client:
        for _ in range(3):  # keep-alive across file responses
            response = client.get(target(files["big"], length=SIZE))
            assert response.status_code == 200
            assert response.headers["content-length"] == str(SIZE)
            assert response.content == files["big"].read_bytes()
        small = client.get(target(files["small"]))
        assert small.content == files["small"].read_bytes()


def test_head_sends_no_body_and_the_connection_stays_usable(server: Gunicorn, files: dict[str, Path]) -> None:
    with RawConnection(server.port, timeout=20) as conn:
        conn.send(http_request("HEAD", target(files["big"], length=SIZE)))
        head = conn.read_response(b"HEAD")
        conn.send(http_request("HEAD", target(files["big"])))
        bare = conn.read_response(b"HEAD")
        conn.send(http_request("GET", target(files["small"])))
        after = conn.read_response()
    assert head.status == 200 and head.body == b""
    assert head.header(b"content-length") == str(SIZE).encode()
    assert bare.status == 200 and bare.body == b""
    if fast(server):
        assert bare.header(b"content-length") == str(SIZE).encode()
    assert after.body == files["small"].read_bytes()


def test_empty_file(server: Gunicorn, files: dict[str, Path]) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = client.get(target(files["empty"]))
        again = client.get(target(files["empty"], length=0))
    assert response.status_code == again.status_code == 200
    assert response.content == again.content == b""
    assert again.headers["content-length"] == "0"


@pytest.mark.parametrize(
    ("params", "logged"),
    [({"path": "/nonexistent/pounce-file"}, "FileNotFoundError"),
     ({"path": "relative/file"}, "must be an absolute path"),
     ({"length": 12}, "does not match the size"),
     ({"path": "DIR"}, "not a regular file")],
    ids=["missing", "relative", "wrong-length", "directory"],
)
def test_unservable_file_is_a_logged_500_when_nothing_was_sent(
    server: Gunicorn, files: dict[str, Path], params: dict[str, object], logged: str
) -> None:
    params = {"path": str(files["big"]), **params}
    if params["path"] == "DIR":
        params["path"] = str(files["dir"])
    with RawConnection(server.port) as conn:
        conn.send(http_request("GET", "/file?" + urlencode(params)))
        response = conn.read_response()
        assert conn.closed_by_server(5)
    assert response.status == 500
    assert response.body == b"Internal Server Error"
    assert wait_until(lambda: logged in server.log(), 10), server.output()


def test_access_log_counts_the_file(server: Gunicorn, files: dict[str, Path]) -> None:
    marker = f"len{time.monotonic_ns()}"
    httpx.get(server.url + target(files["big"], marker=marker), timeout=20).raise_for_status()
    access = server.tmp / "access.log"
    pattern = rf"GET /file\?\S*marker={marker}\S* HTTP/1.1 200 (\d+)"
    assert wait_until(lambda: access.exists() and re.search(pattern, access.read_text()), 10)
    found = re.search(pattern, access.read_text())
    assert found is not None and int(found[1]) == SIZE


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(120)
def test_a_large_file_never_enters_the_worker(mode: str, tmp_path: Path) -> None:
    """64 MB through pathsend while the client reads slowly: the worker's peak RSS barely moves."""
    big = tmp_path / "huge.bin"
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1024 * 1024))
    with Gunicorn("tests.feature_apps:app", "--asgi-loop", "asyncio", mode=mode) as server:
        pid = server.worker_pids()[0]
        httpx.get(server.url + target(tmp_path / "missing"))  # warm the worker up
        before = _peak_rss_kb(pid)
        with socket.create_connection((HOST, server.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(http_request("GET", target(big)))
            received = 0
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += len(data)
                if received < 4 * 1024 * 1024:
                    time.sleep(0.001)  # a slow start: the server must wait, not buffer
                if received >= 64 * 1024 * 1024:
                    break
        after = _peak_rss_kb(pid)
    assert received >= 64 * 1024 * 1024
    assert after - before < 16 * 1024, f"peak RSS grew by {after - before} kB sending a 64 MB file"


def test_with_compression_on_a_file_is_sent_as_it_is(mode: str, files: dict[str, Path]) -> None:
    with Gunicorn("tests.feature_apps:app", mode=mode, env={"POUNCE_COMPRESSION": "gzip"}) as server:
        response = httpx.get(server.url + target(files["small"], type="text/plain"),
                             headers={"accept-encoding": "gzip"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == files["small"].read_bytes()


def test_over_tls_the_file_goes_in_blocks(certs: dict[str, Path], mode: str, files: dict[str, Path]) -> None:  # noqa: F811
    with Gunicorn("tests.feature_apps:app", "--asgi-loop", "asyncio", *_tls_args(certs), mode=mode) as server:
        ctx: ssl.SSLContext = _client_context(certs)
        with httpx.Client(base_url=f"https://127.0.0.1:{server.port}", verify=ctx, timeout=30) as client:
            response = client.get(target(files["big"]))
            head = client.head(target(files["big"]))
            again = client.get(target(files["small"]))
    assert response.status_code == 200
    assert response.headers["content-length"] == str(SIZE)
    assert response.content == files["big"].read_bytes()
    assert head.content == b"" and head.headers["content-length"] == str(SIZE)
    assert again.content == files["small"].read_bytes()


@pytest.mark.timeout(60)
def test_client_leaving_mid_file_is_a_quiet_disconnect(server: Gunicorn, tmp_path: Path) -> None:
    big = tmp_path / "leave.bin"
    with open(big, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(1024 * 1024))
    quiet = server.log().count("Request ended by the client disconnecting")
    loud = server.log().count("Exception in ASGI application")
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.sendall(http_request("GET", target(big)))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.2)  # the server is now blocked on a full socket, mid-file
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    assert wait_until(lambda: server.log().count("Request ended by the client disconnecting") > quiet, 10), \
        server.output()
    assert server.log().count("Exception in ASGI application") == loud
    # The worker still serves files.
    with httpx.Client(base_url=server.url, timeout=20) as client:
        assert client.get(target(big)).content == big.read_bytes()


def test_a_client_that_stops_reading_a_file_is_let_go_at_the_send_timeout(tmp_path: Path) -> None:
    """The kernel's sendfile (asyncio) waits for the socket as long as it takes: a client that
    stops reading a large file is aborted after POUNCE_SEND_TIMEOUT, with its one log line."""
    big = tmp_path / "stalled.bin"
    with open(big, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(1024 * 1024))
    with Gunicorn("tests.feature_apps:app", "--asgi-loop", "asyncio", mode="threads",
                  env={"POUNCE_SEND_TIMEOUT": "1"}) as server:
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.sendall(http_request("GET", target(big)))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            assert wait_until(lambda: "POUNCE_SEND_TIMEOUT=1s" in server.log(), 20), server.output()
        assert "Exception in ASGI application" not in server.log()
