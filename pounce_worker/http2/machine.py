"""h2's connection state machine, with the few things a server needs that h2 does not offer.

Each leans on one h2 internal, named here and nowhere else (h2 is pinned below 5):

- every RST_STREAM the client sends is counted, even for a stream already
  closed: Rapid Reset (CVE-2023-44487) resets streams as fast as they open,
  and a stream whose app answered at once is closed by the time its reset is
  read, so h2 reports nothing (``_receive_rst_stream_frame``);
- a frame whose head announces more than ``SETTINGS_MAX_FRAME_SIZE`` is judged
  on its head, not after its payload arrived (h2 waits for the whole frame
  before checking: the peer could make us buffer 16 MB; ``incoming_buffer._data``);
- a header block split over CONTINUATION frames is bounded in bytes, not only
  in frames (h2 allows 64 of them, each up to the frame size;
  ``incoming_buffer._headers_buffer``);
- hpack's per-field DEBUG logging is silenced (``hpack.hpack.log``);
- the error code of a connection error follows RFC 9113 where h2 reports every
  invalid frame as PROTOCOL_ERROR: COMPRESSION_ERROR for an HPACK decoding error
  (§4.3), FRAME_SIZE_ERROR for a frame of a size its type forbids (§4.2, §6.5).
"""

from __future__ import annotations

import logging
from typing import Any

import h2.config
import h2.connection
import h2.exceptions
import hpack.hpack
from h2.errors import ErrorCodes
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hyperframe.exceptions import InvalidDataError, InvalidFrameError

#: Bytes of one GOAWAY frame without debug data, as h2 queues it on a connection error.
GOAWAY_SIZE = 17
#: What the client sends is checked by h2 (RFC 9113 §8.2-8.3). What we send was checked and
#: lower-cased by headers.response already: h2's second pass over it was a fifth of its cost.
CONFIG = h2.config.H2Configuration(
    client_side=False, header_encoding=None, validate_inbound_headers=True,
    validate_outbound_headers=False, normalize_outbound_headers=False,
)


class _Quiet:
    """hpack logs each integer and field it codes at DEBUG (a call and a level check, ~20 a request)."""

    @staticmethod
    def debug(*args: Any, **kwargs: Any) -> None:
        return None


def quiet_hpack() -> None:
    """Silence hpack's per-field DEBUG calls, unless someone listens to them.

    The patch is process-wide (hpack keeps one module logger), so it is made once, from the
    worker's main thread before any loop serves (worker.run), not by whichever loop first
    speaks HTTP/2; and only when hpack's logger does not log DEBUG at that moment, so an
    app that turned it on (to debug its own httpx or grpclib traffic) keeps its lines.
    """
    if not logging.getLogger(hpack.hpack.__name__).isEnabledFor(logging.DEBUG):
        hpack.hpack.log = _Quiet()  # type: ignore[assignment]


class Oversized(h2.exceptions.ProtocolError):
    """A frame head or a header block past our limits (FRAME_SIZE_ERROR or ENHANCE_YOUR_CALM)."""

    def __init__(self, message: str, code: ErrorCodes) -> None:
        super().__init__(message)
        self.error_code = code


class ServerMachine(h2.connection.H2Connection):
    """One server-side h2 connection; ``resets`` counts the client's RST_STREAM frames."""

    def __init__(self) -> None:
        super().__init__(config=CONFIG)
        self.resets = 0

    def _receive_rst_stream_frame(self, frame: Any) -> Any:
        self.resets += 1
        return super()._receive_rst_stream_frame(frame)

    def check_buffered(self, header_block_limit: int) -> None:
        """After ``receive_data``: refuse what h2 would otherwise wait for and buffer."""
        buffer = self.incoming_buffer
        pending = buffer._data
        if len(pending) >= 9:
            length = int.from_bytes(pending[:3], "big")
            if length > self.max_inbound_frame_size:
                raise Oversized(f"a frame of {length} bytes announced, SETTINGS_MAX_FRAME_SIZE is "
                                f"{self.max_inbound_frame_size}", ErrorCodes.FRAME_SIZE_ERROR)
        held = buffer._headers_buffer
        if held and sum(len(frame.data) for frame in held) > header_block_limit:
            raise Oversized(f"a header block of more than {header_block_limit} bytes in CONTINUATION frames",
                            ErrorCodes.ENHANCE_YOUR_CALM)


def error_code(exc: h2.exceptions.ProtocolError) -> ErrorCodes:
    """The RFC 9113 code for the connection error ``exc`` (h2 says PROTOCOL_ERROR too often)."""
    cause = exc.__cause__
    if (isinstance(cause, HPACKError) and not isinstance(cause, OversizedHeaderListError)) or str(exc).startswith(
            "Error decoding header block"):
        return ErrorCodes.COMPRESSION_ERROR
    if isinstance(cause, InvalidFrameError) or (
            isinstance(cause, InvalidDataError) and "payload" in str(cause)):
        return ErrorCodes.FRAME_SIZE_ERROR
    code = getattr(exc, "error_code", None)
    return ErrorCodes(code) if code is not None else ErrorCodes.PROTOCOL_ERROR


def replace_goaway(data: bytes, code: ErrorCodes, last_stream_id: int) -> bytes:
    """h2's queued output with its closing GOAWAY carrying ``code`` instead."""
    from hyperframe.frame import GoAwayFrame

    if len(data) >= GOAWAY_SIZE and data[-GOAWAY_SIZE + 3] == 0x7:
        data = data[:-GOAWAY_SIZE]
    return data + GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code).serialize()
