"""permessage-deflate (RFC 7692) for the fast path: zlib directly, sharing wsproto's contexts.

wsproto inflates and deflates through its ``PerMessageDeflate`` extension,
one Python object per frame and per 4 KiB slice; for a 64 B message that is
most of its cost. Here a whole compressed frame (complete in one read,
unfragmented) is inflated in one call and our own messages are deflated in
one call, through the very ``zlib`` objects wsproto keeps on the extension
(``_decompressor``/``_compressor``), so context takeover stays one history
whichever path handles a given message. ``tests/websocket/test_frames.py`` proves
the results equal to wsproto alone.

A frame is taken only when wsproto's result is certain: the inflated message
fits ``websocket_max_message_size`` (inflating stops at limit + 1 bytes, so a
bomb costs bounded memory), zlib finds no error and text is valid UTF-8. In
every other case the history is put back as it was (a copy taken before, or
nothing when there is no context to keep) and the frame goes to wsproto,
which then decides what it decides today (1009, 1007 and their reasons).

Our compressor: a 4 KiB window (12 bits, or less if the client asked for
less) and ``memLevel`` 5, the choice of uvicorn's default ``websockets``
implementation; about 40 % less CPU than zlib's defaults on 64 KiB and
~300 KiB less memory per socket, at a somewhat larger output. A window
smaller than the negotiated ``server_max_window_bits`` is always allowed
(the peer's inflater just never sees the far distances). It is installed for
wsproto's sends too, so both paths frame the same bytes.
"""

from __future__ import annotations

import zlib
from typing import Any

#: The four bytes a sync flush ends with, stripped by the sender (RFC 7692 §7.2.1).
TAIL = b"\x00\x00\xff\xff"
#: Our compressor's window (bits) and memory level: uvicorn's ``websockets`` settings.
WINDOW_BITS = 12
MEM_LEVEL = 5

try:
    from wsproto.extensions import PerMessageDeflate

    _probe = PerMessageDeflate()
    #: The extension attributes this module shares with wsproto; absent (another wsproto),
    #: compressed frames stay with wsproto alone.
    USABLE = all(hasattr(_probe, name) for name in (
        "_compressor", "_decompressor", "_inbound_compressed", "client_no_context_takeover",
        "server_no_context_takeover", "client_max_window_bits", "server_max_window_bits"))
    del _probe
except ImportError:  # pragma: no cover - session.AVAILABLE tells the worker
    USABLE = False


def compressor(ext: Any) -> Any:
    """The extension's compressor, ours if wsproto has not made one (for this message, without
    context takeover): both paths then deflate with it."""
    comp = ext._compressor
    if comp is None:
        bits = min(WINDOW_BITS, ext.server_max_window_bits)
        comp = ext._compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, MEM_LEVEL)
    return comp


def deflate(ext: Any, payload: bytes) -> bytes:
    """One whole message compressed as wsproto's ``frame_outbound`` does (sync flush, tail removed)."""
    comp = compressor(ext)
    data = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
    if ext.server_no_context_takeover:
        ext._compressor = None
    return data[:-4]


def inflate(ext: Any, payload: bytes | bytearray, limit: int, text: bool) -> tuple[str | bytes, int] | None:
    """The message in one compressed frame (``payload`` unmasked, without the tail) and its size,
    or None when wsproto must decide: over ``limit`` (0: none), a zlib error, text that is not
    UTF-8. The history is then as it was before."""
    backup = ext._decompressor
    if backup is None:
        inflater = zlib.decompressobj(-int(ext.client_max_window_bits))
    else:
        try:
            inflater, backup = backup, backup.copy()
        except ValueError:  # a history past the end of its stream (a final block) cannot be copied
            return None
    try:
        out = inflater.decompress(payload + TAIL, limit + 1) if limit else inflater.decompress(payload + TAIL)
        if limit and len(out) > limit:
            ext._decompressor = backup
            return None
        out += inflater.flush()
    except zlib.error:
        ext._decompressor = backup
        return None
    size = len(out)
    if limit and size > limit:
        ext._decompressor = backup
        return None
    message: str | bytes = out
    if text:
        try:
            message = out.decode("utf-8")
        except UnicodeDecodeError:
            ext._decompressor = backup
            return None
    ext._decompressor = None if ext.client_no_context_takeover else inflater
    return message, size
