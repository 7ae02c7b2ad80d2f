"""``max_requests`` counted across all loop threads of a worker process.

Gunicorn restarts a worker after it served ``max_requests`` (+ jitter)
requests. With several loops in one process the count is shared mutable state,
so it lives here behind a lock: on a free-threaded build two loops finishing a
request at the same instant would otherwise lose an increment. The lock is
taken once per request and held for two integer operations.
"""

from __future__ import annotations

import sys
import threading


class RequestBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit if limit > 0 else sys.maxsize
        self._lock = threading.Lock()  # guards _spent across loop threads
        self._spent = 0

    def spend(self) -> bool:
        """Count one served request; True exactly once, when the budget runs out.

        Without ``max_requests`` nothing is counted, so the lock costs nothing
        on the hot path of a worker that never recycles.
        """
        if self.limit == sys.maxsize:
            return False
        with self._lock:
            self._spent += 1
            return self._spent == self.limit

    @property
    def exhausted(self) -> bool:
        """Read without the lock: an int read is atomic, and a stale answer only delays by one accept."""
        return self._spent >= self.limit

    @property
    def spent(self) -> int:
        with self._lock:
            return self._spent
