"""The cycle's ``http.response.pathsend`` through the HTTP/1.1 exchange, in process.

The fake transport takes no ``loop.sendfile``, so the file goes the way it goes on
TLS and uvloop: read in blocks (inline here: tests/inprocess.py's executor) and
written, waiting for the transport to drain between blocks. Checked: the framing
(Content-Length given, or declared from the file's size on the fast path, or a
chunk on h11), HEAD, and the 500 a file that cannot be sent becomes while
nothing of the response has left. tests/test_pathsend.py covers the kernel's
sendfile end to end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.http1.apps import GET, start

#: A block of the fallback (io/sendfile.py FALLBACK_BLOCK): files over it are read and written in pieces.
BLOCK = 256 * 1024


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789" * 10)
    return path


def pathsend_app(path: str, headers: list[tuple[bytes, bytes]], seen: list[Any] | None = None) -> Any:
    async def app(scope, receive, send):
        await send(start(200, headers))
        try:
            await send({"type": "http.response.pathsend", "path": path})
        except Exception as exc:
            if seen is not None:
                seen.append(type(exc).__name__)
            raise

    return app


HEAD_200 = b"HTTP/1.1 200 OK\r\nserver: pounce\r\ndate: DATE\r\n"


def error_page() -> bytes:
    return (b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: 21\r\n\r\nInternal Server Error")


def test_file_with_its_content_length_is_sent_after_the_head(make_rig, fast, data_file):
    rig = make_rig(pathsend_app(str(data_file), [(b"content-length", b"100")]), fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert conn.writes() == [HEAD_200 + b"content-length: 100\r\n\r\n", data_file.read_bytes()]
    assert conn.open
    conn.send(GET)  # keep-alive: the next response is whole
    assert conn.output().count(data_file.read_bytes()) == 2


def test_file_without_a_content_length_is_framed_by_its_size(make_rig, fast, data_file):
    """The fast path declares the size in the head still waiting; h11 sends the file as one chunk."""
    rig = make_rig(pathsend_app(str(data_file), [(b"content-type", b"application/octet-stream")]), fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    head = HEAD_200 + b"content-type: application/octet-stream\r\n"
    if fast:
        assert conn.writes() == [head + b"content-length: 100\r\n\r\n", data_file.read_bytes()]
    else:
        assert conn.output() == head + b"Transfer-Encoding: chunked\r\n\r\n64\r\n" + data_file.read_bytes() + (
            b"\r\n0\r\n\r\n")


def test_head_request_gets_the_head_of_the_file_and_no_body(make_rig, fast, data_file):
    rig = make_rig(pathsend_app(str(data_file), [(b"content-length", b"100")]), fast_path=fast)
    conn = rig.connect()
    conn.send(b"HEAD / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert conn.output() == HEAD_200 + b"content-length: 100\r\n\r\n"
    assert conn.open


def test_file_over_a_block_waits_for_the_client_between_blocks(make_rig, fast, tmp_path):
    path = tmp_path / "big.bin"
    content = os.urandom(BLOCK + 10)
    path.write_bytes(content)
    rig = make_rig(pathsend_app(str(path), [(b"content-length", b"%d" % len(content))]), fast_path=fast)
    conn = rig.connect()
    conn.stop_reading()
    conn.read_buffered()
    conn.send(GET)
    # The head and the first block go (the wait is after each block), then the full buffer
    # holds the rest until the client reads.
    head = HEAD_200 + b"content-length: %d\r\n\r\n" % len(content)
    assert conn.writes() == [head, content[:BLOCK]]
    rig.advance(30.0)
    assert conn.writes() == [head, content[:BLOCK]]
    conn.read_buffered()
    assert conn.writes() == [head, content[:BLOCK], content[BLOCK:]]
    conn.start_reading()
    conn.send(GET)  # the response completed: the connection serves on
    assert conn.output().count(content) == 2


@pytest.mark.parametrize(
    ("name", "error"),
    [("missing.bin", "FileNotFoundError"), ("relative", "TypeError"), ("dir", "OSError"),
     ("short", "RuntimeError")],
)
def test_file_that_cannot_be_sent_becomes_a_500_while_nothing_has_left(make_rig, fast, tmp_path, name, error):
    (tmp_path / "dir").mkdir()
    (tmp_path / "short").write_bytes(b"12345")
    path = "data.bin" if name == "relative" else str(tmp_path / name)
    headers = [(b"content-length", b"10")] if name == "short" else []  # a Content-Length that is not the size
    seen: list[str] = []
    rig = make_rig(pathsend_app(path, headers, seen), fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert seen == [error]
    assert conn.output() == error_page()
    assert conn.kinds() == ["write", "write_eof"]
    assert "Exception in ASGI application" in rig.log.text("exception")


def test_file_after_a_started_body_is_refused_and_the_response_cut(make_rig, fast, data_file):
    seen: list[str] = []

    async def app(scope, receive, send):
        await send(start(200))
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        try:
            await send({"type": "http.response.pathsend", "path": str(data_file / "nope")})
        except OSError as exc:
            seen.append(type(exc).__name__)
            raise

    rig = make_rig(app, fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    assert seen == ["NotADirectoryError"]
    assert conn.output() == HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    assert conn.kinds() == ["write", "write_eof"]
