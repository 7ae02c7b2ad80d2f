"""One WebSocket session on the in-process rig: what the end-to-end tests cannot pin down.

Found in review (session 6): a second ``receive()`` whose caller gave up (a
``wait_for`` that timed out) left the first waiting on a future nobody would
wake, so the app never got its messages nor ``websocket.disconnect`` and kept
its slot; and a ``websocket.http.response`` denial streamed to a client that
reads nothing had no deadline at all (there are no pings before an accept).
"""

from __future__ import annotations

import asyncio
from typing import Any

HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
NO_PINGS = {"POUNCE_WS_PING_INTERVAL": "0"}


def text_frame(payload: bytes) -> bytes:
    """A masked, unfragmented text frame from the client (payload under 126 bytes)."""
    mask = b"\x01\x02\x03\x04"
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def two_receivers(seen: list[Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})

        async def reader() -> None:
            while True:
                message = await receive()
                seen.append(message)
                if message["type"] == "websocket.disconnect":
                    return

        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(receive(), 0.5)  # a second, short-lived receive beside it
        except asyncio.TimeoutError:
            pass
        await task

    return app


def test_a_receive_that_gave_up_does_not_strand_another(make_rig):
    seen: list[Any] = []
    rig = make_rig(two_receivers(seen), env=NO_PINGS)
    conn = rig.connect()
    conn.send(HANDSHAKE)
    assert conn.take().startswith(b"HTTP/1.1 101 ")
    rig.advance(1.0)  # the wait_for times out
    conn.send(text_frame(b"hello"))
    assert seen == [{"type": "websocket.receive", "text": "hello"}]
    conn.reset()
    rig.advance(1.0)
    assert seen[-1]["type"] == "websocket.disconnect"
    assert not rig.server.connections


def test_a_denial_to_a_client_that_reads_nothing_ends_at_the_send_timeout(make_rig):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        for _ in range(10):
            await send({"type": "websocket.http.response.body", "body": b"x" * 100_000, "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b""})

    rig = make_rig(app)
    conn = rig.connect()
    conn.transport.full = True  # the client reads nothing: every write leaves our buffer full
    conn.send(HANDSHAKE)
    rig.advance(59.9)
    assert not conn.lost
    rig.advance(0.1)
    assert conn.lost and "abort" in conn.kinds()
    assert "POUNCE_SEND_TIMEOUT=60s" in rig.log.text("info")
