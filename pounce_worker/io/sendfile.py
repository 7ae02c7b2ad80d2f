"""A file onto a transport without reading it whole: the kernel's sendfile, or blocks.

``loop.sendfile`` hands the file to ``os.sendfile`` where it can: the bytes go
from the page cache to the socket without entering the process. It cannot on
TLS (the encryption happens in the process) nor on uvloop (no ``loop.sendfile``);
there the file is read in blocks, off the loop, and each block waits for the
transport to drain, so memory stays bounded by one block.

The kernel's path goes ``KERNEL_PIECE`` bytes per ``loop.sendfile`` call, each
bounded by the send timeout: asyncio waits for the socket to take a piece for as
long as it takes, and a client that stops reading a large file must not keep its
connection slot (the blocks path has the same bound through ``drain``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import BinaryIO

#: Bytes read per block when the kernel cannot send the file itself.
FALLBACK_BLOCK = 256 * 1024
#: Bytes per kernel sendfile call: a client must take this much per send timeout (17 KiB/s for
#: the default 60 s), and a large file costs a call per MiB (a few µs each).
KERNEL_PIECE = 1024 * 1024


async def send_file(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    file: BinaryIO,
    size: int,
    closed: Callable[[], bool],
    drain: Callable[[], Awaitable[None]],
    timeout: float = 0.0,
    on_stall: Callable[[], None] | None = None,
) -> int:
    """Send ``size`` bytes of ``file`` from its start; the number sent (fewer if the file shrank).

    ``on_stall`` (which aborts the connection) when a kernel piece is not taken in ``timeout``
    seconds; then ConnectionResetError.
    """
    if transport.get_extra_info("sslcontext") is None and isinstance(loop, asyncio.BaseEventLoop):
        sent = 0
        try:
            while sent < size:
                piece = loop.sendfile(transport, file, sent, min(KERNEL_PIECE, size - sent), fallback=False)
                count = await (asyncio.wait_for(piece, timeout) if timeout else piece)
                if not count:
                    return sent  # the file shrank
                sent += count
            return sent
        except (asyncio.SendfileNotAvailableError, NotImplementedError) as exc:
            if sent:
                # asyncio says "not available" for any failure before a call's first byte, and
                # a later piece's first byte failing is the connection's (a reset, mostly).
                raise ConnectionResetError(f"sendfile failed after {sent} bytes: {exc}") from exc
            file.seek(0)  # raised before a byte was sent: the blocks below start over
        except RuntimeError:
            if sent or transport.is_closing():
                raise
            file.seek(0)  # a transport that cannot take sendfile (asyncio says so before sending)
        except asyncio.TimeoutError:
            if on_stall is not None:
                on_stall()
            raise ConnectionResetError("the client took nothing of the file within the send timeout") from None
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
