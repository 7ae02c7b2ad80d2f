"""The ASGI ``http.response.pathsend`` extension: a file sent by the kernel.

An app serving a file through ``http.response.body`` reads it into Python
bytes, chunk by chunk, and every chunk is copied again into the socket. With
pathsend the app names the file and the server sends it without reading it
whole: on HTTP/1.1 with ``os.sendfile`` (through ``loop.sendfile``), the bytes
going from the page cache to the socket without entering the process, or in
blocks where the kernel cannot (TLS, uvloop: io/sendfile.py); on HTTP/2 as
DATA frames read block by block.

This side is the ASGI one: the message checks, opening the file (never
blocking the loop on a FIFO), the Content-Length the app declared against the
file's size, and the error policy (nothing of the response sent yet: a 500).
The wire side is ``Exchange.send_file``: its framing knows the length up front,
so Content-Length bookkeeping and keep-alive stay the exchange's.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from . import Message

if TYPE_CHECKING:
    from .cycle import RequestCycle

EXTENSION = "http.response.pathsend"


async def send_path(cycle: RequestCycle, message: Message) -> None:
    """Send the file named by a pathsend message as the response body, then complete the response."""
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
        length = None
        for name, value in cycle.response_headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
        if length is not None and length != size:
            _fail_unsent(cycle)
            raise RuntimeError(f"pathsend: Content-Length {length} does not match the size of {path} ({size} bytes)")
        try:
            cycle.sent += await cycle.exchange.send_file(file, size)
        except EOFError as exc:
            raise RuntimeError(f"pathsend: {path} shrank while being sent ({exc} of {size} bytes)") from None
    finally:
        file.close()
    cycle.end_response(b"")


def _fail_unsent(cycle: RequestCycle) -> None:
    """When nothing of the response left yet, turn it into a 500 that goes out as the exchange ends."""
    if cycle.exchange.fail_unsent():
        cycle.status = 500
        cycle.sent = 21
