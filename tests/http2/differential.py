"""The cases of the differential suite (test_h2_hypercorn.py): what a server answers and what its app saw.

Each case drives one h2c connection frame by frame and returns a record: for each request,
the response (status, fields but the volatile ones, body or the app's JSON view of the
scope, trailers) or how the stream ended (a reset and its code). Records from two servers
serving the same app compare with ``==`` once the explained differences are normalised.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperframe.frame import DataFrame, GoAwayFrame, RstStreamFrame

from tests.harness import wait_until
from tests.http2.h2_harness import ERROR_NAMES, Peer

Record = dict[str, Any]

#: Response fields that differ by server by design and say nothing of HTTP/2 handling.
VOLATILE = {"date", "server"}


def _outcome(peer: Peer, stream_id: int) -> Record:
    try:
        fields, body, trailers = peer.exchange(stream_id)
    except AssertionError:
        for frame in peer.frames:
            if isinstance(frame, GoAwayFrame) or (isinstance(frame, RstStreamFrame) and frame.stream_id == stream_id):
                kind = "GOAWAY" if isinstance(frame, GoAwayFrame) else "RST_STREAM"
                return {"ended": f"{kind} {error_name(frame.error_code)}"}
        return {"ended": f"without a response: {peer.describe()}"}
    record: Record = {
        "status": dict(fields).get(":status"),
        "fields": sorted((n, v) for n, v in fields if n not in VOLATILE and n != ":status"),
        "trailers": sorted(trailers),
    }
    if dict(fields).get("content-type") == "application/json":
        record["app_saw"] = json.loads(body)
    else:
        record["body"] = body if len(body) <= 64 else f"{len(body)} bytes"
    return record


def _request(peer: Peer, stream_id: int, path: str, method: str = "GET", extra: list[tuple[str, str]] | None = None,
             body: list[bytes] | None = None) -> Record:
    peer.send(peer.headers(stream_id, path, method=method, end_stream=not body, extra=extra))
    for i, chunk in enumerate(body or []):
        peer.send(DataFrame(stream_id, data=chunk, flags=["END_STREAM"] if i == len(body or []) - 1 else []))
    return _outcome(peer, stream_id)


def simple(path: str, method: str = "GET", extra: list[tuple[str, str]] | None = None,
           body: list[bytes] | None = None) -> Callable[[Peer, Path], Record]:
    return lambda peer, tmp: _request(peer, 1, path, method, extra, body)


def multiplexed(peer: Peer, tmp: Path) -> Record:
    """Three streams open at once, answered in whatever order; each must carry its own response."""
    for sid, path in ((1, "/scope?s=1"), (3, "/scope?s=3"), (5, "/a")):
        peer.send(peer.headers(sid, path))
    return {f"stream {sid}": _outcome(peer, sid) for sid in (1, 3, 5)}


def _watch(peer: Peer, tmp: Path, end: Callable[[Peer], object]) -> Record:
    """An app waiting for a body; ``end`` cuts the stream or the connection: what the app was told."""
    probe = tmp / f"watch-{time.monotonic_ns()}"
    peer.send(peer.headers(1, f"/watch?{probe}", method="POST", end_stream=False))
    peer.send(DataFrame(1, data=b"partial"))
    # Cut only once the app runs (it says so with FILE.started): what it is told is then the server's doing.
    if not wait_until(Path(f"{probe}.started").exists, timeout=10, interval=0.02):
        return {"app_told": "never started in 10s"}
    end(peer)
    seen = wait_until(probe.exists, timeout=10, interval=0.02)
    return {"app_told": probe.read_text() if seen else "nothing in 10s"}


def reset_by_client(peer: Peer, tmp: Path) -> Record:
    return _watch(peer, tmp, lambda p: p.send(RstStreamFrame(1, error_code=0x8)))


def connection_lost(peer: Peer, tmp: Path) -> Record:
    return _watch(peer, tmp, lambda p: p.close())


CASES: dict[str, Callable[[Peer, Path], Record]] = {
    "get-query": simple("/scope?a=1&b=%20x&c"),
    "encoded-path": simple("/scope/a%2Fb/%C3%A9%20x;p=1"),
    "post-body-no-length": simple("/scope", "POST", body=[b"a" * 1000, b"b" * 1000, b"c"]),
    "post-content-length": simple("/scope", "POST", extra=[("content-length", "4")], body=[b"ab", b"cd"]),
    "post-empty-end-data": simple("/scope", "POST", body=[b""]),
    "fields": simple("/scope", extra=[("x-multi", "a"), ("x-multi", "b"), ("cookie", "a=1"), ("cookie", "b=2"),
                                     ("user-agent", "diff/1")]),
    "te-trailers": simple("/scope", extra=[("te", "trailers")]),
    "head": simple("/", "HEAD"),
    "status-204": simple("/status/204"),
    "status-404": simple("/status/404"),
    "trailers": simple("/trailers"),
    "big-body": simple("/big"),
    "echo-upload": simple("/echo", "POST", body=[b"x" * 16384] * 3 + [b"y" * 1000]),
    "multiplexed": multiplexed,
    # RFC 9113 8.2.1 / 8.2.2 / 8.3.1: malformed requests, a stream error PROTOCOL_ERROR
    "uppercase-field": simple("/scope", extra=[("X-Upper", "1")]),
    "connection-field": simple("/scope", extra=[("connection", "keep-alive")]),
    "te-not-trailers": simple("/scope", extra=[("te", "gzip")]),
    "content-length-mismatch": simple("/scope", "POST", extra=[("content-length", "10")], body=[b"abc"]),
    "reset-by-client": reset_by_client,
    "connection-lost": connection_lost,
}


def run_case(port: int, case: str, tmp: Path) -> Record:
    with Peer(port) as peer:
        peer.handshake()
        return CASES[case](peer, tmp)


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, str(code))
