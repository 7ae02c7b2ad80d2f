"""worker.settle_allocator: glibc keeps the memory a round of large bodies used.

Each case runs in a fresh interpreter (glibc's thresholds are process-wide and only
rise): allocate 64 request-sized blocks as a loop does in one iteration, free them,
and read the heap's size with mallinfo2. Unsettled, glibc gives the heap's top back
to the kernel (and faults it in again on the next round); settled, it keeps it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import subprocess
import sys

import pytest

from pounce_worker.mode import gil_enabled

pytestmark = [
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"),
    # Free-threaded builds allocate objects (request bodies among them) with mimalloc, not
    # glibc's malloc: its trim threshold is not what a loop's bodies go through there.
    pytest.mark.skipif(not gil_enabled(), reason="free-threaded build: objects come from mimalloc"),
]

PROBE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "settled":
    from pounce_worker.worker import settle_allocator
    settle_allocator()
else:
    import pounce_worker.worker  # the same imports, not the call
for _ in range(3):
    blocks = [bytes(range(256)) * 256 for _ in range(64)]  # 64 x 64 KiB, touched
    peak = libc.mallinfo2().arena
    del blocks
    print(peak, libc.mallinfo2().arena)
"""


def heap_after_rounds(mode: str) -> list[tuple[int, int]]:
    """(heap size with the round's blocks alive, heap size once they are freed), per round."""
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    rounds = []
    for line in out.stdout.splitlines():
        peak, after = line.split()
        rounds.append((int(peak), int(after)))
    return rounds


@pytest.mark.skipif(not hasattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "mallinfo2"),
                    reason="glibc without mallinfo2 (before 2.33)")
def test_settled_heap_keeps_a_round_of_large_bodies() -> None:
    unsettled = heap_after_rounds("unsettled")
    settled = heap_after_rounds("settled")
    # Unsettled: after each round the heap's top went back to the kernel (most of 4 MiB).
    assert all(after < peak - 2 * 1024 * 1024 for peak, after in unsettled), unsettled
    # Settled: the heap keeps what the round used, ready for the next one.
    assert all(after >= peak - 256 * 1024 for peak, after in settled), settled
