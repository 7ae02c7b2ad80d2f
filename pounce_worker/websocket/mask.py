"""Unmasking a client frame's payload (RFC 6455 §5.3): XOR with its repeated 4-byte key.

For a 64 KiB message this is most of our CPU in pure Python (about 60 µs: a
bytes XOR has no faster pure-Python form than the ones below), against ~3 µs
in C. UvicornWorker unmasks with the C routine of the ``websockets`` package
(``websockets.speedups.apply_mask``); when that package is installed it is
used here too, which is what closes the gap at 64 KiB.

It is optional and never required: pounce_worker does not depend on
``websockets``, and on a free-threaded build it is not imported at all (an
extension built without free-threading support would switch the GIL back on
for the whole process; the same rule as for uvloop). The pure-Python
``unmask_py`` is then used, and ``tests/websocket/test_frames.py`` proves both
equal to wsproto's unmasking.
"""

from __future__ import annotations

from collections.abc import Callable

from ..mode import gil_enabled

#: XOR tables, one per mask byte: ``_XOR[k]`` maps every byte b to b ^ k (as wsproto unmasks).
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]


def unmask_py(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask``: one big-int XOR for small payloads (fewer
    steps), four ``translate`` passes over the strided slices for large ones (linear in size)."""
    n = len(payload)
    if n <= 256:
        if not n:
            return b""
        return (int.from_bytes(payload, "little")
                ^ int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
    out = bytearray(payload)
    out[0::4] = out[0::4].translate(_XOR[mask[0]])
    out[1::4] = out[1::4].translate(_XOR[mask[1]])
    out[2::4] = out[2::4].translate(_XOR[mask[2]])
    out[3::4] = out[3::4].translate(_XOR[mask[3]])
    return bytes(out)


def _speedup() -> Callable[[bytes, bytes], bytes] | None:
    """websockets' C ``apply_mask`` on a GIL build where it imports, else None."""
    if not gil_enabled():
        return None
    try:
        from websockets.speedups import apply_mask
    except Exception:  # not installed, or a build without its extension: pure Python
        return None
    if apply_mask(b"\x00\x01\x02\x03\x04", b"\x01\x02\x03\x04") != b"\x01\x03\x01\x07\x05":
        return None  # pragma: no cover - a broken build
    return apply_mask


#: What frames.py unmasks with: the C routine when present, else ``unmask_py``.
SPEEDUP = _speedup()
unmask: Callable[[bytes, bytes], bytes] = SPEEDUP or unmask_py
