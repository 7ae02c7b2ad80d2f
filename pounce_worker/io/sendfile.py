"""A file onto a transport without reading it whole: the kernel's sendfile, or blocks.

``loop.sendfile`` hands the file to ``os.sendfile`` where it can: the bytes go
from the page cache to the socket without entering the process. It cannot on
TLS (the encryption happens in the process) nor on uvloop (no ``loop.sendfile``);
there the file is read in blocks, off the loop, and each block waits for the
transport to drain, so memory stays bounded by one block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import BinaryIO

#: Bytes read per block when the kernel cannot send the file itself.
FALLBACK_BLOCK = 256 * 1024


async def send_file(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    file: BinaryIO,
    size: int,
    closed: Callable[[], bool],
    drain: Callable[[], Awaitable[None]],
) -> int:
    """Send ``size`` bytes of ``file`` from its start; the number sent (fewer if the file shrank)."""
    if transport.get_extra_info("sslcontext") is None and isinstance(loop, asyncio.BaseEventLoop):
        try:
            return await loop.sendfile(transport, file, 0, size, fallback=False)
        except (asyncio.SendfileNotAvailableError, NotImplementedError):
            file.seek(0)  # raised before a byte was sent: the blocks below start over
        except RuntimeError:
            if transport.is_closing():
                raise
            file.seek(0)  # a transport that cannot take sendfile (asyncio says so before sending)
    sent = 0
    while sent < size:
        block = await loop.run_in_executor(None, file.read, min(FALLBACK_BLOCK, size - sent))
        if not block:
            break
        if closed():
            raise ConnectionResetError("the client disconnected")
        transport.write(block)
        sent += len(block)
        await drain()
    return sent
