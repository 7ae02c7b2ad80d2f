"""pounce_worker's own cost per WebSocket message, without sockets: what bench/ws.py cannot isolate.

Opens ``--sessions`` WebSocket sessions on one LoopServer through the real
handshake path (HTTPConnection, then ``upgrade``), over fake transports that
count what is written, then feeds each one masked client frame per loop
iteration and runs the loop until every session has written its echo
(``bench.ws_app:app``): the Python path of a message and the loop's, the same
way every time; CPU time of this process (process_time), not wall time. Kernel
and syscalls are left out, so the figure is below what bench/ws.py reads from /proc.

    python bench/ws_cost.py                        # µs per echoed message, 64 B text
    python bench/ws_cost.py --size 65536 --binary --deflate
    python bench/ws_cost.py --profile              # cProfile, the top functions by own time
    python bench/ws_cost.py --size 65536 --pure-mask   # without websockets' C unmasking
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ws_app import app as ws_app  # noqa: E402
from bench.ws_client import DEFLATE_OFFER, frame, payload  # noqa: E402
from bench.ws_driver import make_server, open_session  # noqa: E402


async def drive(size: int, binary: bool, deflate: bool, sessions: int, messages: int,
                profile: cProfile.Profile | None) -> float:
    server = make_server(ws_app)
    pairs = [await open_session(server, DEFLATE_OFFER if deflate else None) for _ in range(sessions)]
    data = payload(size)
    if deflate:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        body = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        out = frame(2 if binary else 1, body[:-4], rsv1=True)
    else:
        out = frame(2 if binary else 1, data)

    async def round_trip() -> None:
        before = [t.writes for _, t in pairs]
        for session, _ in pairs:
            session.data_received(out)
        for _ in range(1000):
            if all(t.writes > old for (_, t), old in zip(pairs, before, strict=True)):
                return
            await asyncio.sleep(0)
        raise RuntimeError("no echo")

    for _ in range(20):
        await round_trip()
    rounds = max(1, messages // sessions)
    if profile is not None:
        profile.enable()
    start = time.process_time()
    for _ in range(rounds):
        await round_trip()
    elapsed = time.process_time() - start
    if profile is not None:
        profile.disable()
    return elapsed / (rounds * sessions)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--binary", action="store_true")
    ap.add_argument("--deflate", action="store_true")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--messages", type=int, default=40000)
    ap.add_argument("--pure-mask", action="store_true",
                    help="unmask in pure Python even where websockets' C routine is installed")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    profile = cProfile.Profile() if args.profile else None
    from pounce_worker.websocket import frames, mask
    if args.pure_mask:
        frames.unmask = mask.unmask_py
    masking = "C (websockets)" if frames.unmask is mask.SPEEDUP else "pure Python"
    seconds = asyncio.run(drive(args.size, args.binary, args.deflate, args.sessions, args.messages, profile))
    print(f"pounce_worker ws {args.size} B {'binary' if args.binary else 'text'}"
          f"{' deflate' if args.deflate else ''} on {sys.version.split()[0]}, unmasking in {masking}: "
          f"{seconds * 1e6:.1f} µs/message"
          f"{' (under cProfile)' if profile else ''}")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
