"""Unmasking a client frame's payload (RFC 6455 §5.3): XOR with its repeated 4-byte key.

For a 64 KiB message this is most of our CPU in pure Python (about 60 µs: a
bytes XOR has no faster pure-Python form than the ones below), against ~3 µs
in C. UvicornWorker unmasks with the C routine of the ``websockets`` package
(``websockets.speedups.apply_mask``); when that package is installed it is
used here too, which is what closes the gap at 64 KiB.

It is optional and never required: pounce_worker does not depend on
``websockets``. On a free-threaded build it is imported only from websockets
16.0 on, whose extension declares that it does not need the GIL
(``Py_MOD_GIL_NOT_USED``): an older one would switch the GIL back on for the
whole process at import, the same rule as for uvloop. The version is read from
the package itself (``websockets/__init__`` imports no C code) before the
extension is imported. Otherwise the pure-Python
``unmask_py`` is used, and ``tests/websocket/test_frames.py`` proves both equal
to wsproto's unmasking.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..mode import gil_enabled
from ..versions import release

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


#: The first websockets whose C extension declares ``Py_MOD_GIL_NOT_USED`` (its PR #1682).
FREE_THREADED_SINCE = (16, 0)


def declares_no_gil(version: str | None) -> bool:
    """Whether a websockets of this version (None: not installed) may be imported on a
    free-threaded build without switching the GIL back on."""
    installed = release(version) if version is not None else None
    return installed is not None and installed >= FREE_THREADED_SINCE


def _installed_websockets() -> str | None:
    """The version of the websockets that would be imported (its package, which imports
    no C code, not its metadata: a copy earlier on the path may not be the one pip saw)."""
    try:
        import websockets
    except Exception:
        return None
    version = getattr(websockets, "__version__", None)
    return version if isinstance(version, str) else None


def _speedup() -> Callable[[bytes, bytes], bytes] | None:
    """websockets' C ``apply_mask`` where it imports without costing the GIL, else None.

    On a free-threaded CPython (``sys._is_gil_enabled``) only a websockets that declares it
    needs no GIL; on the nogil-3.12 fork (no such declaration exists there) never."""
    if not gil_enabled() and not (hasattr(sys, "_is_gil_enabled") and declares_no_gil(_installed_websockets())):
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
