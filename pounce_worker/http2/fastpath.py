"""h2's state machine with its hot spots cut: HPACK cached (``hpack_cache``), frames written directly.

h2 stays the authority for every state it keeps (streams, windows, settings,
errors): each shortcut here does what h2 does for the commonest case and hands
everything else to h2 unchanged, at the same point h2 would have handled it.

- A request HEADERS frame opening a new stream, whose block is one the
  connection decoded and validated before (``CachingDecoder.lookup``), skips
  HPACK decoding and h2's field validation; the stream is opened and its state
  machine driven exactly as h2's ``_receive_headers_frame`` does.
- Every header block we send is stateless (``StatelessEncoder``).
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
from h2.events import RequestReceived
from h2.stream import StreamInputs
from hyperframe.frame import DataFrame, HeadersFrame

from .hpack_cache import CachingDecoder, StatelessEncoder
from .machine import ServerMachine

_RECV_HEADERS = ConnectionInputs.RECV_HEADERS
_STREAM_RECV_HEADERS = StreamInputs.RECV_HEADERS
_STREAM_RECV_END_STREAM = StreamInputs.RECV_END_STREAM
_ODD = AllowedStreamIDs.ODD
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
        raw, validated = cached
        # From here on, h2's _receive_headers_frame and H2Stream.receive_headers, minus the decoding
        # and validation whose result ``cached`` holds.
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
        if "END_STREAM" in frame.flags:
            ended = machine.process_input(_STREAM_RECV_END_STREAM)
            event.stream_ended = ended[0]
            stream_events += ended
        stream._initialize_content_length(raw)
        event.headers = list(validated)
        return [], events + stream_events

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
            out.append(b"".join((size.to_bytes(3, "big"), bytes((frame.type, flag_byte)),
                                 (frame.stream_id & 0x7FFFFFFF).to_bytes(4, "big"), data)))
        self._data_to_send += b"".join(out)
