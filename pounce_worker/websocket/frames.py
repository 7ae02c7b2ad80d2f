"""Incoming frames (the fast path for the common ones, wsproto for the rest) and our own frames.

The fast path takes whole unfragmented masked text/binary frames, compressed
ones too (deflate.py), and frames our unfragmented messages; everything else
goes to wsproto at a frame boundary. ``tests/websocket/test_frames.py`` proves
the two paths equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..asgi import Message
from .deflate import USABLE as INFLATE
from .deflate import deflate, inflate
from .mask import unmask

try:
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        BytesMessage,
        CloseConnection,
        Ping,
        Pong,
        TextMessage,
    )
    from wsproto.events import Message as WSMessage
except ImportError:  # pragma: no cover - session.AVAILABLE tells the worker
    pass

if TYPE_CHECKING:
    from .session import WebSocketSession


#: Messages the app may leave unconsumed before the session stops reading (uvicorn's ws_max_queue).
MAX_QUEUE = 32
#: Bytes of unconsumed messages above which the session stops reading, whatever their number.
QUEUE_HIGH_WATER = 65536
#: With permessage-deflate, input is fed to wsproto in slices of this size: wsproto inflates
#: a slice at once, and deflate expands up to ~1000x, so a slice bounds what one step allocates
#: before the size check runs (a 256 KiB read could otherwise inflate to 256 MiB).
DEFLATE_SLICE = 4096


def too_big(limit: int) -> str:
    """The reason of the 1009 close for a message over ``websocket_max_message_size``."""
    return f"Message exceeds the maximum size ({limit} bytes)"


def feed(self: WebSocketSession, data: bytes) -> None:
    """Frames the fast path handles are handled here; every other byte goes to wsproto, whole frames.

    The fast path takes an unfragmented, masked text or binary frame with
    no RSV bit (or RSV1 alone when permessage-deflate was agreed) and a
    minimal length, complete in this chunk, while the connection is open
    and wsproto is not inside a fragmented message: it unmasks (mask.py)
    and inflates (deflate.py) it and delivers the message as wsproto would
    have. Anything else (control frames, fragments, malformed frames, a
    compressed frame whose outcome only wsproto decides, a frame that is
    not all here) is passed to wsproto from its first byte, with the
    same chunk boundaries it would have had, so wsproto sees a stream of
    whole frames and decides everything it decides today.
    ``tests/websocket/test_frames.py`` proves the two paths equal.
    """
    if not self.fast:
        self._feed_wsproto(data)
        return
    pending = self._fp_head
    if pending:
        # A frame header split over reads: its first bytes already went to wsproto.
        data = pending + data
        self._fp_head = b""
    pos = len(pending)  # bytes of data wsproto has already been given
    start = 0  # the frame being looked at starts here
    n = len(data)
    ws = self.ws
    ext = self.deflate
    inflating = ext is not None and INFLATE and ext.enabled()
    limit = self.config.ws_max_size
    # wsproto's state and the transport's change only inside wsproto or a close of ours
    # (which sets close_sent; until then wsproto's state is OPEN once accepted): the
    # transport is looked at once here and both again after each frame given to wsproto.
    gone = self.transport.is_closing()
    while start < n or pending:
        if self.close_sent or gone:
            self.fast = False  # closing: wsproto alone from here, to the end
            if pos < n:
                self._feed_wsproto(data[pos:])
            return
        owed = self._fp_owed
        if owed:  # the rest of a frame wsproto has started
            end = n if n - pos < owed else pos + owed
            self._fp_owed = owed - (end - pos)
            chunk = data[pos:end]
            pos = start = end
            self._feed_wsproto(chunk)
            gone = ws.state is not ConnectionState.OPEN or self.transport.is_closing()
            continue
        pending = b""
        avail = n - start
        if avail < 2:
            self._fp_head = data[start:]
            if pos < n:
                self._feed_wsproto(data[pos:])
            return
        b0 = data[start]
        b1 = data[start + 1]
        length = b1 & 0x7F
        head = 2 if length < 126 else 4 if length == 126 else 10
        if b1 & 0x80:
            head += 4
        if avail < head:
            self._fp_head = data[start:]
            if pos < n:
                self._feed_wsproto(data[pos:])
            return
        minimal = True
        if length == 126:
            length = int.from_bytes(data[start + 2:start + 4], "big")
            minimal = length > 125
        elif length == 127:
            length = int.from_bytes(data[start + 2:start + 10], "big")
            minimal = 0xFFFF < length < 1 << 63
        total = head + length
        opcode = b0 & 0x0F
        rsv = b0 & 0x70
        if b0 & 0x80 and b1 & 0x80 and (opcode == 1 or opcode == 2) and minimal \
                and (not rsv or (rsv == 0x40 and inflating)) \
                and not self._fp_fragmented and total <= avail and pos == start:
            end = start + total
            mask = data[end - length - 4:end - length]
            payload = unmask(data[end - length:end], mask)
            if rsv:
                got = inflate(self.deflate, payload, self.config.ws_max_size, opcode == 1)
                if got is not None:
                    pos = start = end
                    self._on_fast_data(got[0], got[1])
                    continue
            elif opcode == 1:
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                if text is not None:
                    pos = start = end
                    if limit and length > limit:
                        self._fail(1009, too_big(limit))
                    else:  # _on_fast_data, inline: once per message
                        self._enqueue({"type": "websocket.receive", "text": text}, length)
                    continue
            else:
                pos = start = end
                if limit and length > limit:
                    self._fail(1009, too_big(limit))
                else:
                    self._enqueue({"type": "websocket.receive", "bytes": payload}, length)
                continue
        # wsproto's frame: from its first byte (pos may be past it when its header was split).
        if opcode == 0 and b0 & 0x80:
            self._fp_fragmented = False
        elif opcode in (1, 2):
            self._fp_fragmented = not b0 & 0x80
        end = start + total
        if end > n:
            self._fp_owed = end - n
            end = n
        chunk = data[pos:end]
        pos = start = end
        self._feed_wsproto(chunk)
        gone = ws.state is not ConnectionState.OPEN or self.transport.is_closing()


def feed_wsproto(self: WebSocketSession, data: bytes) -> None:
    ws = self.ws
    step = DEFLATE_SLICE if self.deflate is not None and self.deflate.enabled() else len(data)
    for start in range(0, len(data), max(step, 1)):
        if ws.state is ConnectionState.CLOSED or self.transport.is_closing():
            return  # after the close handshake, anything more is ignored
        ws.receive_data(data[start:start + step] if step < len(data) else data)
        self._handle_events()


def on_fast_data(self: WebSocketSession, data: str | bytes, size: int) -> None:
    """A whole message from the fast path: ``_on_data`` for a message in one frame."""
    limit = self.config.ws_max_size
    if limit and size > limit:
        self._fail(1009, too_big(limit))
        return
    if isinstance(data, str):
        self._enqueue({"type": "websocket.receive", "text": data}, size)
    else:
        self._enqueue({"type": "websocket.receive", "bytes": data}, size)


def enqueue(self: WebSocketSession, message: Message, size: int) -> None:
    """A whole message for the app (either path); reading pauses while the app is behind."""
    queue = self.queue
    queue.append((message, size))
    self.queued_bytes += size
    self.server.request_done()
    if len(queue) >= MAX_QUEUE or self.queued_bytes >= QUEUE_HIGH_WATER:
        self._pause_reading()
    waiter = self.waiter  # wakeup.wake, inline: once per message
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
    if self.waiters:
        self._wake()


def handle_events(self: WebSocketSession) -> None:
    for event in self.ws.events():
        kind = type(event)
        if kind is TextMessage or kind is BytesMessage:
            self._on_data(event)  # type: ignore[arg-type]
        elif kind is Ping:
            if self.ws.state is ConnectionState.OPEN:
                self._write(self.ws.send(event.response()))  # type: ignore[attr-defined]
        elif kind is Pong:
            self._on_pong(event)  # type: ignore[arg-type]
        elif kind is CloseConnection:
            self._on_close(event)  # type: ignore[arg-type]
            return


def on_data(self: WebSocketSession, event: WSMessage[Any]) -> None:
    if self.close_sent:
        return  # data after our close frame is discarded (RFC 6455 §5.5.1)
    data = event.data
    if isinstance(data, str):
        self.part_size += len(data) if data.isascii() else len(data.encode("utf-8"))
    else:
        self.part_size += len(data)
    limit = self.config.ws_max_size
    if limit and self.part_size > limit:
        self.parts.clear()
        self._fail(1009, too_big(limit))
        return
    self.parts.append(data)
    if not event.message_finished:
        return
    parts, size = self.parts, self.part_size
    self.parts, self.part_size = [], 0
    if isinstance(data, str):
        self._enqueue({"type": "websocket.receive", "text": parts[0] if len(parts) == 1 else "".join(parts)}, size)
    else:
        self._enqueue({"type": "websocket.receive", "bytes": b"".join(parts)}, size)


def on_close(self: WebSocketSession, event: CloseConnection) -> None:
    if self.close_sent:
        # The peer answered our close frame: the closing handshake is complete.
        self._close_transport()
        return
    if self.ws.state is ConnectionState.REMOTE_CLOSING:
        self._write(self.ws.send(event.response()))  # wsproto leaves the echo to us
    elif self.ws.state is ConnectionState.OPEN:
        # wsproto reports a frame it could not parse (1002, 1007...) as a close
        # event without closing: the close frame naming the error is ours to send.
        self._write(self.ws.send(CloseConnection(code=event.code, reason=event.reason)))
    self.close_sent = True
    self._disconnected(event.code, event.reason or "")
    self._close_transport()


def send_frame(self: WebSocketSession, first: int, payload: bytes) -> None:
    """One unfragmented frame of ours, unmasked: what wsproto's send writes for it.

    Only while the connection is open (our close frame is not out, so wsproto would
    accept the message and the socket is not lost: of ``_write``'s checks one is left).
    With permessage-deflate (``out_deflate``) the payload is compressed as wsproto
    would, with the same compressor (deflate.py).
    """
    ext = self.out_deflate
    if ext is not None:
        payload = deflate(ext, payload)
        first |= 0x40
    n = len(payload)
    transport = self.transport
    if transport.is_closing():
        return  # as _write: nothing more reaches a socket being torn down
    # One write, header and payload joined: writelines would save the copy, but asyncio's
    # (3.12, 3.13.0) does not pause the protocol, so send would lose its backpressure.
    if n < 126:
        transport.write(bytes((first, n)) + payload)
    elif n < 65536:
        transport.write(bytes((first, 126)) + n.to_bytes(2, "big") + payload)
    else:
        transport.write(bytes((first, 127)) + n.to_bytes(8, "big") + payload)
