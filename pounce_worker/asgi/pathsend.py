"""The ASGI ``http.response.pathsend`` extension: a file sent by the kernel.

An app serving a file through ``http.response.body`` reads it into Python
bytes, chunk by chunk, and every chunk is copied again into the socket. With
pathsend the app names the file and the server hands it to ``os.sendfile``
(through ``loop.sendfile``): the bytes go from the page cache to the socket
without entering the process. Where the kernel cannot do that (TLS, whose
encryption happens in the process; uvloop, which has no ``loop.sendfile``) the
file is read and written in blocks, still never whole in memory, waiting for
the transport to drain between blocks.

The response is framed by whatever framed its head (the fast writer or h11),
told the file's length up front, so ``Content-Length`` bookkeeping and
keep-alive stay theirs. A head still waiting to go out without a
Content-Length gets the file's size as one (on the fast path, where the head
is bytes we made); otherwise the file goes out as one chunk.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import TYPE_CHECKING, BinaryIO

import h11

from . import ClientDisconnected, Message

if TYPE_CHECKING:
    from ..http1.connection import RequestCycle

EXTENSION = "http.response.pathsend"
#: Bytes read per block when the kernel cannot send the file itself.
FALLBACK_BLOCK = 256 * 1024
_ERROR_PAGE = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 21\r\n\r\nInternal Server Error"
)


class FileSpan:
    """Stands for the file's bytes in h11's ``send_with_data_passthrough`` (it only needs a length)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


async def send_path(cycle: RequestCycle, message: Message) -> None:
    """Send the file named by a pathsend message as the response body, then complete the response."""

    cycle.connection.release()  # what an earlier response left held goes before this file
    path = message.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        _fail_unsent(cycle)
        raise TypeError(f"ASGI: 'http.response.pathsend' path must be an absolute path string, got {path!r}")
    try:
        # O_NONBLOCK: a FIFO named by mistake must not block the loop in open() (it is refused below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        _fail_unsent(cycle)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"pathsend: {path} is not a regular file")
        file = open(fd, "rb")  # closed in the finally below
    except OSError:
        os.close(fd)
        _fail_unsent(cycle)
        raise
    try:
        size = info.st_size
        pieces = _frame(cycle, size, path)
        connection = cycle.connection
        cycle.flush_head()
        if cycle.head_only:
            pieces = []
        for piece in pieces:
            if isinstance(piece, FileSpan):
                if connection.closed:
                    raise ClientDisconnected("the client disconnected")
                try:
                    sent = await _send_file(cycle, file, size)
                except ConnectionError as exc:
                    raise ClientDisconnected("the client disconnected") from exc
                except RuntimeError as exc:  # asyncio: "Transport is closing"
                    if connection.closed or connection.transport.is_closing():
                        raise ClientDisconnected("the client disconnected") from exc
                    raise
                if sent != size:
                    raise RuntimeError(f"pathsend: {path} shrank while being sent ({sent} of {size} bytes)")
                cycle.sent += size
            elif piece and not connection.closed:
                connection.transport.write(piece)
    finally:
        file.close()
    cycle._write_body(b"", False)


def _frame(cycle: RequestCycle, size: int, path: str) -> list[bytes | FileSpan]:
    """What goes on the wire for the file: framing bytes around a ``FileSpan`` (nothing for HEAD)."""
    length = None
    for name, value in cycle.response_headers:
        if name == b"content-length":
            length = int(value) if value.isdigit() else -1
    if length is not None and length != size:
        _fail_unsent(cycle)
        raise RuntimeError(f"pathsend: Content-Length {length} does not match the size of {path} ({size} bytes)")
    writer = cycle.fast_writer
    if writer is not None and length is None and cycle.pending_head is not None:
        head = writer.declare_length(cycle.pending_head, size, cycle.head_only)
        if head is not None:
            cycle.pending_head = head
    if cycle.head_only or not size:
        return []
    if writer is not None:
        if writer.chunked:
            return [b"%x\r\n" % size, FileSpan(size), b"\r\n"]
        writer.remaining -= size  # == size: checked against Content-Length above
        return [FileSpan(size)]
    conn = cycle.h11
    assert conn is not None
    return list(conn.send_with_data_passthrough(h11.Data(data=FileSpan(size))))  # type: ignore[arg-type]


def _fail_unsent(cycle: RequestCycle) -> None:
    """When nothing of the response left yet, turn it into a 500 that goes out as the connection closes."""
    if cycle.pending_head is not None:
        cycle.pending_head = _ERROR_PAGE
        cycle.status = 500
        cycle.sent = 21
        cycle.keep_alive = False


async def _send_file(cycle: RequestCycle, file: BinaryIO, size: int) -> int:
    connection = cycle.connection
    loop = connection.loop
    transport = connection.transport
    if transport.get_extra_info("sslcontext") is None and isinstance(loop, asyncio.BaseEventLoop):
        try:
            return await loop.sendfile(transport, file, 0, size, fallback=False)
        except (asyncio.SendfileNotAvailableError, NotImplementedError):
            file.seek(0)  # raised before a byte was sent: the blocks below start over
        except RuntimeError:
            if transport.is_closing():
                raise
            file.seek(0)  # a transport that cannot take sendfile (asyncio says so before sending)
    return await _send_blocks(cycle, file, size)


async def _send_blocks(cycle: RequestCycle, file: BinaryIO, size: int) -> int:
    """Read and write in blocks (TLS, uvloop), draining between blocks; reads happen off the loop."""
    connection = cycle.connection
    loop = connection.loop
    sent = 0
    while sent < size:
        block = await loop.run_in_executor(None, file.read, min(FALLBACK_BLOCK, size - sent))
        if not block:
            break
        if connection.closed:
            raise ConnectionResetError("the client disconnected")
        connection.transport.write(block)
        sent += len(block)
        await connection.drain()
    return sent
