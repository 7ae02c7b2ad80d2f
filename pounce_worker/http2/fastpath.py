"""h2's state machine with its hot spots cut: HPACK cached (``hpack_cache``), frames written directly.

h2 stays the authority for every state it keeps (streams, windows, settings,
errors): each shortcut here does what h2 does for the commonest case and hands
everything else to h2 unchanged, at the same point h2 would have handled it.

- A request HEADERS frame opening a new stream, whose block is one the
  connection decoded and validated before (``CachingDecoder.lookup``), skips
  HPACK decoding and h2's field validation; the stream is opened and its state
  machine driven exactly as h2's ``_receive_headers_frame`` does. Such frames,
  arriving whole while h2 holds no partial frame, are read without h2's
  ``FrameBuffer`` and hyperframe objects (``receive_data``); at the first other
  frame the rest of the bytes go to h2.
- Every header block we send is stateless (``StatelessEncoder``).
- h2 formats every received frame for a trace log line nobody reads (``_receive_frame``):
  not here.
- HEADERS and DATA frames without padding or priority are serialised directly
  (``_prepare_for_sending``): hyperframe builds a ``Flags`` set and packs with
  ``struct`` field by field; the bytes are the same.

tests/http2/test_h2_fastpath*.py hold this against plain h2 (``ServerMachine``)
on generated frame sequences: same events, same errors and GOAWAY codes, same
frames out (header blocks compared decoded).
"""

from __future__ import annotations

from typing import Any

from h2.connection import AllowedStreamIDs, ConnectionInputs, TooManyStreamsError
from h2.errors import ErrorCodes
from h2.events import RequestReceived
from h2.exceptions import FlowControlError, FrameTooLargeError, ProtocolError, StreamClosedError, StreamIDTooLowError
from h2.stream import StreamInputs
from h2.utilities import extract_method_header, is_informational_response
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame

from .hpack_cache import MAX_CACHED, MAX_CACHED_BYTES, CachingDecoder, StatelessEncoder, encode_block, held_size
from .machine import ServerMachine

_RECV_HEADERS = ConnectionInputs.RECV_HEADERS
_STREAM_RECV_HEADERS = StreamInputs.RECV_HEADERS
_STREAM_RECV_END_STREAM = StreamInputs.RECV_END_STREAM
_ODD = AllowedStreamIDs.ODD
_SEND_HEADERS = ConnectionInputs.SEND_HEADERS
_SEND_DATA = ConnectionInputs.SEND_DATA
_STREAM_SEND_HEADERS = StreamInputs.SEND_HEADERS
_STREAM_SEND_INFORMATIONAL = StreamInputs.SEND_INFORMATIONAL_HEADERS
_STREAM_SEND_END_STREAM = StreamInputs.SEND_END_STREAM
_STREAM_SEND_DATA = StreamInputs.SEND_DATA
#: Flag bits of the two frame types serialised here (RFC 9113 §6.1, §6.2); PADDED and PRIORITY
#: frames go to hyperframe.
_DATA_FLAGS = {"END_STREAM": 0x01}
_HEADERS_FLAGS = {"END_STREAM": 0x01, "END_HEADERS": 0x04}


class FastMachine(ServerMachine):
    """``ServerMachine`` with the shortcuts above; a drop-in for it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = StatelessEncoder(self.encoder)  # type: ignore[assignment]
        self.decoder = CachingDecoder(self.decoder)  # type: ignore[assignment]
        #: Header lists sent before (plain tuples of bytes) -> (block, informational, :method).
        self.sent_heads: dict[tuple[Any, ...], tuple[bytes, bool, bytes | None]] = {}
        self.sent_held = 0  # what sent_heads holds, counted as hpack_cache.held_size does

    def send_headers(self, stream_id: int, headers: Any, end_stream: bool = False,
                     priority_weight: int | None = None, priority_depends_on: int | None = None,
                     priority_exclusive: bool | None = None) -> None:
        """h2's ``send_headers`` for a header list sent before on an open stream, without h2's per-field work."""
        stream = self.streams.get(stream_id)
        encoder: StatelessEncoder = self.encoder  # type: ignore[assignment]
        entry = key = None
        if (stream is not None and priority_weight is None and priority_depends_on is None
                and priority_exclusive is None and not encoder.real.header_table.resized
                and type(headers) is list):
            key = tuple(headers)
            try:
                entry = self.sent_heads.get(key)
            except TypeError:  # unhashable: h2 says what is wrong with it
                key = None
            if entry is not None and not all(type(f) is tuple for f in headers):
                # A tuple subclass (hpack's NeverIndexedHeaderTuple) equals the plain tuple the
                # entry was made from, but must keep its never-indexed encoding: h2 sends it.
                entry = key = None
        if entry is None:
            super().send_headers(stream_id, headers, end_stream, priority_weight, priority_depends_on,
                                 priority_exclusive)
            if key and all(type(f) is tuple and len(f) == 2 and type(f[0]) is bytes and type(f[1]) is bytes
                           for f in key):
                heads = self.sent_heads
                block = encode_block(key)
                size = held_size(block, key)
                if len(heads) >= MAX_CACHED or self.sent_held + size > MAX_CACHED_BYTES:
                    heads.clear()
                    self.sent_held = 0
                if size <= MAX_CACHED_BYTES:
                    heads[key] = (block, is_informational_response(key), extract_method_header(key))
                    self.sent_held += size
            return
        assert stream is not None
        # From here on, h2's H2Connection.send_headers and H2Stream.send_headers, with the block cached.
        block, informational, method = entry
        self.state_machine.process_input(_SEND_HEADERS)
        if informational:
            if end_stream:
                msg = "Cannot set END_STREAM on informational responses."
                raise ProtocolError(msg)
            stream.state_machine.process_input(_STREAM_SEND_INFORMATIONAL)
        else:
            stream.state_machine.process_input(_STREAM_SEND_HEADERS)
        size = stream.max_outbound_frame_size or 0
        # One frame (the usual case); else h2's split (an empty block or a size of 0 fail as in h2).
        pieces = [block] if 0 < len(block) <= size else [block[i:i + size] for i in range(0, len(block), size)]
        if end_stream:
            stream.state_machine.process_input(_STREAM_SEND_END_STREAM)
        if stream.state_machine.trailers_sent and not end_stream:
            msg = "Trailers must have END_STREAM set."
            raise ProtocolError(msg)
        stream.request_method = method
        last = len(pieces) - 1
        if not last:
            self._data_to_send += _frame(0x1, 0x5 if end_stream else 0x4, stream_id, block)
            return
        out = [_frame(0x1, (0x1 if end_stream else 0) | (0x4 if last == 0 else 0), stream_id, pieces[0])]
        out.extend(_frame(0x9, 0x4 if i == last else 0, stream_id, piece) for i, piece in enumerate(pieces) if i)
        self._data_to_send += b"".join(out)

    def send_data(self, stream_id: int, data: Any, end_stream: bool = False, pad_length: Any = None) -> None:
        """h2's ``send_data`` without the DataFrame (its checks, transitions and windows, in its order)."""
        if pad_length is not None:
            super().send_data(stream_id, data, end_stream, pad_length)
            return
        frame_size = len(data)
        if frame_size > 0 and frame_size > self.local_flow_control_window(stream_id):
            msg = f"Cannot send {frame_size} bytes, flow control window is {self.local_flow_control_window(stream_id)}"
            raise FlowControlError(msg)
        if frame_size > self.max_outbound_frame_size:
            msg = f"Cannot send frame size {frame_size}, max frame size is {self.max_outbound_frame_size}"
            raise FrameTooLargeError(msg)
        self.state_machine.process_input(_SEND_DATA)
        stream = self.streams[stream_id]
        machine = stream.state_machine
        machine.process_input(_STREAM_SEND_DATA)
        if type(data) is not bytes:
            data = data.tobytes() if isinstance(data, memoryview) else data
        if end_stream:
            machine.process_input(_STREAM_SEND_END_STREAM)
        stream.outbound_flow_control_window -= frame_size
        assert stream.outbound_flow_control_window >= 0 or frame_size == 0
        self._data_to_send += _frame(0x0, 0x1 if end_stream else 0, stream_id, data)
        self.outbound_flow_control_window -= frame_size
        assert self.outbound_flow_control_window >= 0 or frame_size == 0

    def receive_data(self, data: Any) -> Any:
        """h2's ``receive_data``, with the commonest frames read here without frame objects.

        A HEADERS frame (END_HEADERS, maybe END_STREAM, no other flag) opening a new odd stream
        past every one seen, whose block the decoder cached, opens the stream here
        (``_open_cached``), as h2's ``FrameBuffer`` and ``_receive_frame`` would. At the first
        frame that is anything else (or when h2 holds bytes or a header block of its own) the
        rest goes to h2, at that frame boundary. A connection error ends the connection as
        h2's does, with the bytes after the frame left in h2's buffer as h2 leaves them.
        """
        buffer = self.incoming_buffer
        if buffer._data or buffer._preamble_len or buffer._headers_buffer or type(data) is not bytes:
            return super().receive_data(data)
        limit = buffer.max_frame_size = self.max_inbound_frame_size
        lookup = self.decoder.lookup  # type: ignore[attr-defined]
        streams = self.streams
        events: list[Any] = []
        pos = 0
        end = len(data)
        while end - pos >= 9:
            flags = data[pos + 4]
            if data[pos + 3] != 0x1 or flags | 0x1 != 0x5:
                break
            length = int.from_bytes(data[pos:pos + 3], "big")
            stop = pos + 9 + length
            if stop > end or length > limit:
                break
            stream_id = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            if not stream_id & 1 or stream_id <= self.highest_inbound_stream_id or stream_id in streams:
                break
            cached = lookup(data[pos + 9:stop])
            if cached is None:
                break
            pos = stop
            try:
                events += self._open_cached(stream_id, cached, flags == 0x5)
            except ProtocolError as e:
                buffer._data += data[pos:]
                self._terminate_connection(e.error_code)
                raise
        if pos < end:
            events += super().receive_data(data[pos:] if pos else data)
        return events

    def _receive_frame(self, frame: Any) -> Any:
        """h2's ``_receive_frame`` without its trace line, whose ``repr(frame)`` ran for every frame."""
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _receive_headers_frame(self, frame: Any) -> Any:
        decoder: CachingDecoder = self.decoder  # type: ignore[assignment]
        data = frame.data
        stream_id = frame.stream_id
        new = stream_id not in self.streams
        cached = decoder.lookup(data) if new else None
        if cached is None or "PRIORITY" in frame.flags:
            frames, events = super()._receive_headers_frame(frame)
            if new and cached is None:
                request = next((event for event in events if type(event) is RequestReceived), None)
                raw = decoder.last_raw(data)
                if request is not None and raw is not None:
                    decoder.store(data, (raw, request.headers))
            return frames, events
        return [], self._open_cached(stream_id, cached, "END_STREAM" in frame.flags)

    def _open_cached(self, stream_id: int, cached: tuple[list[Any], list[Any]], end_stream: bool) -> list[Any]:
        """A new stream's request whose block ``cached`` holds, decoded and validated: its events.

        From here on, h2's ``_receive_headers_frame`` and ``H2Stream.receive_headers``, minus the
        decoding and validation whose result ``cached`` holds.
        """
        raw, validated = cached
        max_open_streams = self.local_settings.max_concurrent_streams
        value = self.open_inbound_streams
        if (value + 1) > max_open_streams:
            msg = f"Max inbound streams is {max_open_streams}, {value} open"
            raise TooManyStreamsError(msg)
        events = self.state_machine.process_input(_RECV_HEADERS)
        stream = self._begin_new_stream(stream_id, _ODD)
        machine = stream.state_machine
        stream_events = machine.process_input(_STREAM_RECV_HEADERS)
        event: Any = stream_events[0]
        if end_stream:
            ended = machine.process_input(_STREAM_RECV_END_STREAM)
            event.stream_ended = ended[0]
            stream_events += ended
        stream._initialize_content_length(raw)
        event.headers = list(validated)
        return events + stream_events

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        if not frames:
            return
        out = []
        limit = self.max_outbound_frame_size
        for frame in frames:
            kind = type(frame)
            flags = frame.flags._flags  # hyperframe's Flags keeps its names in a set
            if kind is DataFrame and "PADDED" not in flags:
                bits = _DATA_FLAGS
            elif kind is HeadersFrame and "PADDED" not in flags and "PRIORITY" not in flags:
                bits = _HEADERS_FLAGS
            else:
                out.append(frame.serialize())
                assert frame.body_len <= limit
                continue
            data = frame.data
            frame.body_len = size = len(data)
            assert size <= limit
            flag_byte = 0
            for flag in flags:
                flag_byte |= bits[flag]
            out.append(_frame(frame.type, flag_byte, frame.stream_id, data))
        self._data_to_send += b"".join(out)


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame's 9-byte head and its payload (RFC 9113 §4.1), as hyperframe's ``serialize`` writes it."""
    return b"".join((len(payload).to_bytes(3, "big"), bytes((kind, flags)),
                     (stream_id & 0x7FFFFFFF).to_bytes(4, "big"), payload))
