"""Bounds on what an HTTP/2 peer may make us do without asking for anything.

h2 answers PING and SETTINGS itself, accepts PRIORITY and empty DATA frames,
and lets a client open a stream and reset it at once (Rapid Reset,
CVE-2023-44487): each costs us CPU (an app call, for a reset stream) and the
peer almost nothing. h2 bounds the rest itself (a CONTINUATION backlog of 64
frames, the header list size while decoding, frame sizes, flow-control windows).
So each kind of unproductive frame gets a budget per window of time, and a peer
over any budget is told ENHANCE_YOUR_CALM and closed: legitimate clients send a
handful of these per second, a flood sends thousands.

The window is measured on the loop's tick clock (``LoopServer.last_tick``), not
a clock read per frame: it may be up to one tick longer than ``WINDOW``.
"""

from __future__ import annotations

#: Seconds over which the budgets below are counted.
WINDOW = 1.0
#: Frames of each kind a connection may send per WINDOW before it is closed.
PINGS = 100
SETTINGS = 100
PRIORITIES = 1000
EMPTY_DATA = 1000
#: Rapid Reset credit, on top of twice http2_max_concurrent_streams: each RST_STREAM from the
#: client costs 2, each stream we refuse 1, each response completed gives 1 back (up to the
#: start). Not a rate: the flood's pace follows ours, so a slow server would never see a
#: per-second budget exceeded while it serves every stream. Browsers cancel a few streams
#: among many answered; a flood resets them all (answered ones too: their RST still comes).
RESETS = 200


class Flood(Exception):
    """The peer went over a budget: the message names the frame kind, for the one log line."""


class FloodGuard:
    """Per-connection counters of unproductive frames, reset every WINDOW."""

    __slots__ = ("empty_data", "pings", "priorities", "reset_credit", "reset_limit", "settings", "since")

    def __init__(self, max_streams: int, now: float) -> None:
        self.reset_limit = self.reset_credit = RESETS + 2 * min(max_streams, 10_000)
        self.since = now
        self.pings = self.settings = self.priorities = self.empty_data = 0

    def _roll(self, now: float) -> None:
        if now - self.since >= WINDOW:
            self.since = now
            self.pings = self.settings = self.priorities = self.empty_data = 0

    def ping(self, now: float) -> None:
        self._roll(now)
        self.pings += 1
        if self.pings > PINGS:
            raise Flood(f"more than {PINGS} PING frames in {WINDOW:g}s")

    def setting(self, now: float) -> None:
        self._roll(now)
        self.settings += 1
        if self.settings > SETTINGS:
            raise Flood(f"more than {SETTINGS} SETTINGS frames in {WINDOW:g}s")

    def priority(self, now: float) -> None:
        self._roll(now)
        self.priorities += 1
        if self.priorities > PRIORITIES:
            raise Flood(f"more than {PRIORITIES} PRIORITY frames in {WINDOW:g}s")

    def empty(self, now: float) -> None:
        self._roll(now)
        self.empty_data += 1
        if self.empty_data > EMPTY_DATA:
            raise Flood(f"more than {EMPTY_DATA} empty DATA frames in {WINDOW:g}s")

    def reset(self, cost: int = 2) -> None:
        """A stream reset (``cost`` 2: by the client; 1: refused by us)."""
        self.reset_credit -= cost
        if self.reset_credit < 0:
            raise Flood(f"streams reset far more often than answered (rapid reset: credit {self.reset_limit} spent)")

    def answered(self) -> None:
        """A response completed: some reset credit back."""
        if self.reset_credit < self.reset_limit:
            self.reset_credit += 1
