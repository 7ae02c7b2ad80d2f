"""Thread safety: 8 loop threads in one worker, forced interleavings, zero cross-talk.

One worker in thread mode with 8 event loops, the interpreter's switch interval
at its minimum (set in ``post_worker_init``, so the GIL, where there is one,
changes hands as often as it can; on a free-threaded build the loops run in
parallel anyway), hundreds of keep-alive connections from asyncio clients, and
an app (``tests.apps:isolation``) that yields to its loop between every step of
a request. Each request carries its own id in the path, a header and the body;
the app answers with the ids it saw after its awaits (and from a context
variable), and the response echoes the id in a header. Any scope, receive/send
or response mixed between requests shows up as a mismatch, on either side.

The app's shared counter follows the README's pattern (a ``threading.Lock``)
and must equal the number of requests served.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.harness import HOST, Gunicorn, build_request, config_file, exchange

LOOPS = 8
CONNECTIONS = 256
REQUESTS = 100_000

SWITCH_CONF = """
import sys


def post_worker_init(worker):
    # The smallest interval CPython accepts: the GIL (where there is one) changes hands
    # as often as possible, so loop threads interleave in the middle of requests.
    sys.setswitchinterval(1e-6)
"""


async def client(port: int, index: int, quota: int, mismatches: list[str]) -> int:
    """Send ``quota`` requests one after another on one keep-alive connection; return how many
    were answered correctly (every other outcome is appended to ``mismatches``)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    ok = 0
    try:
        for n in range(quota):
            rid = f"k{index}n{n}"
            body = rid.encode()
            writer.write(
                f"POST /iso/{rid} HTTP/1.1\r\nHost: x\r\nX-Id: {rid}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status, *lines = head[:-4].split(b"\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            data = await reader.readexactly(int(headers[b"content-length"]))
            seen = json.loads(data)
            expected = {"path": rid, "header": rid, "body": rid, "context": rid}
            if status != b"HTTP/1.1 200 OK" or headers.get(b"x-id") != body or seen != expected:
                mismatches.append(f"{rid}: {status!r} x-id={headers.get(b'x-id')!r} saw {seen}")
            else:
                ok += 1
    finally:
        writer.close()
    return ok


async def hammer(port: int) -> tuple[int, list[str]]:
    mismatches: list[str] = []
    quotas = [REQUESTS // CONNECTIONS + (1 if i < REQUESTS % CONNECTIONS else 0) for i in range(CONNECTIONS)]
    results = await asyncio.gather(*(client(port, i, q, mismatches) for i, q in enumerate(quotas)))
    return sum(results), mismatches


def count(port: int) -> dict[str, object]:
    status, _, body, _ = exchange(port, build_request("/count"), timeout=30)
    assert status == 200, body
    return dict(json.loads(body))


@pytest.mark.timeout(300)
def test_no_cross_talk_between_requests_on_8_loop_threads(tmp_path) -> None:
    server = Gunicorn("tests.apps:isolation", "--keep-alive", "120", mode="threads", threads=LOOPS)
    server.args += ["-c", str(config_file(server, SWITCH_CONF))]
    with server:
        before = count(server.port)
        assert before["switchinterval"] < 1e-5, before
        started = time.monotonic()
        served, mismatches = asyncio.run(hammer(server.port))
        elapsed = time.monotonic() - started
        after = count(server.port)
        log = server.log()
    per_thread = dict(after["per_thread"])  # type: ignore[call-overload]
    print(f"\n[measure] {REQUESTS} requests on {CONNECTIONS} keep-alive connections, {LOOPS} loop threads, "
          f"switch interval {after['switchinterval']}: {elapsed:.1f}s ({REQUESTS / elapsed:.0f} req/s); "
          f"{len(mismatches)} mismatches; locked counter {after['served']}; "
          f"per loop {sorted(per_thread.values())}")
    assert mismatches == [], mismatches[:10]
    assert served == REQUESTS
    assert after["mixups"] == 0
    assert after["served"] == REQUESTS, "the lock-guarded counter must be exact"
    assert set(per_thread) == {f"pounce-loop-{i}" for i in range(LOOPS)}, per_thread
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
