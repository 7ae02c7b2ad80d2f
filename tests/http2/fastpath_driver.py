"""Two server machines fed the same steps: plain h2 (``ServerMachine``) and ``FastMachine``.

A step is what a client sends (bytes: frames valid or not) or what the server does
(send headers, data, a reset...). After each step both machines must have reported
the same thing (events with every attribute, or the same exception and error code)
and queued the same frames: byte for byte, except header blocks, which are compared
decoded, each side by its own client decoder (plain h2 indexes, the fast path never
does, so the bytes differ by design). The fast side's client decoder must also keep
an empty dynamic table: a stateless block that changed it would be a bug.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import Decoder
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame

from pounce_worker.http2.fastpath import FastMachine
from pounce_worker.http2.machine import ServerMachine, error_code

#: An object's address in an error message (hpack names the memoryview it failed on).
ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def normal(value: Any) -> Any:
    """An event attribute in a form two machines' events can be compared in."""
    if isinstance(value, h2.events.Event):
        return describe(value)
    if isinstance(value, Frame):  # UnknownFrameReceived carries one
        return repr(value)
    if isinstance(value, list):
        return [normal(item) for item in value]
    if isinstance(value, tuple):
        return (type(value).__name__, *[normal(item) for item in value])
    if isinstance(value, dict):
        return {normal(k): normal(v) for k, v in value.items()}
    if hasattr(value, "original_value"):  # h2's ChangedSetting
        return ("setting", value.setting, value.original_value, value.new_value)
    return value


def describe(event: h2.events.Event) -> Any:
    return (type(event).__name__, {name: normal(value) for name, value in sorted(vars(event).items())})


def outcome(call: Any) -> Any:
    """What one call did: ("ok", events) or ("error", exception type, its RFC 9113 code)."""
    try:
        result = call()
    except h2.exceptions.ProtocolError as exc:
        return ("error", type(exc).__name__, error_code(exc), ADDRESS.sub("", str(exc)))
    except (h2.exceptions.H2Error, ValueError, KeyError, AssertionError) as exc:
        return ("error", type(exc).__name__, str(exc))
    if isinstance(result, list):
        return ("ok", [describe(event) for event in result])
    return ("ok", result)


@dataclass
class Side:
    machine: ServerMachine
    decoder: Decoder = field(default_factory=Decoder)
    pending: bytes = b""
    #: Every header block received, as bytes.
    blocks: list[bytes] = field(default_factory=list)

    def frames(self) -> list[Any]:
        """The frames queued since last time; a header block with its CONTINUATIONs decoded as one item."""
        data = self.pending + self.machine.data_to_send()
        out: list[Any] = []
        block: list[Any] | None = None
        while len(data) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(data[:9]))
            if len(data) < 9 + length:
                break
            frame.parse_body(memoryview(data[9:9 + length]))
            raw = data[:9 + length]
            data = data[9 + length:]
            if isinstance(frame, (HeadersFrame, ContinuationFrame)):
                if block is None:
                    block = [frame.stream_id, sorted(set(frame.flags) - {"END_HEADERS"}), b""]
                block[2] += frame.data
                if "END_HEADERS" in frame.flags:
                    self.blocks.append(block[2])
                    try:
                        headers: Any = [tuple(h) for h in self.decoder.decode(block[2], raw=True)]
                    except Exception as exc:
                        headers = ("undecodable", type(exc).__name__)
                    out.append(("headers", block[0], block[1], headers))
                    block = None
            else:
                out.append(("frame", raw))
        self.pending = data
        return out


class Pair:
    """The two machines, started as H2Connection starts them."""

    def __init__(self, max_streams: int = 100, header_list: int = 0) -> None:
        self.plain = Side(ServerMachine())
        self.fast = Side(FastMachine())
        for side in (self.plain, self.fast):
            side.decoder.max_allowed_table_size = 2**32
            machine = side.machine
            values = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams}
            if header_list:
                values[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = header_list
                machine.decoder.max_header_list_size = header_list
            machine.local_settings = h2.settings.Settings(client=False, initial_values=values)  # type: ignore[arg-type]
            machine.initiate_connection()
        self.check("initiate")

    def both(self, label: str, act: Any, sent: Any = None) -> Any:
        """``act(machine)`` on each side; the same outcome and the same frames, or AssertionError.

        One difference is h2's, not the fast path's: h2 encodes a header block (indexing its
        fields) before it checks the stream may send it, so a refused ``send_headers`` leaves
        h2's encoder ahead of what the client saw, and every later block undecodable. The
        stateless encoder has no such state; plain h2's is rolled back after a refused call,
        so the comparison goes on.
        """
        plain = self.plain.machine
        saved = copy.deepcopy(plain.encoder)
        results = [outcome(lambda machine=side.machine: act(machine)) for side in (self.plain, self.fast)]
        if results[0][0] == "error":
            plain.encoder = saved
        assert results[0] == results[1], f"{label}: plain h2 {results[0]!r}\nfast path {results[1]!r}"
        self.check(label, sent)
        return results[0]

    def receive(self, data: bytes) -> Any:
        def act(machine: ServerMachine) -> Any:
            events = machine.receive_data(data)
            machine.check_buffered(2**20)
            return events
        return self.both(f"receive {data[:64]!r}", act)

    def check(self, label: str, sent: Any = None) -> None:
        """The frames both sides queued are the same; ``sent``: the header list just sent, if any.

        hpack (4.2.0) loses a pending table size update when the same size is set again
        (``HeaderTable.maxsize``'s setter resets ``resized``), then indexes into a table the
        client never heard of: plain h2's later blocks do not decode. The stateless blocks
        index nothing, so the missing update is harmless to them: where plain h2's block
        does not decode, the fast path's must decode to exactly what was sent.
        """
        plain, fast = self.plain.frames(), self.fast.frames()
        if sent is not None and len(plain) == len(fast):
            for i, (mine, theirs) in enumerate(zip(plain, fast, strict=True)):
                if (mine[0] == "headers" and isinstance(mine[3], tuple) and theirs[0] == "headers"
                        and mine[:3] == theirs[:3] and theirs[3] == [tuple(h) for h in sent]):
                    fast[i] = mine
        assert plain == fast, f"{label}: frames differ\nplain h2  {plain!r}\nfast path {fast!r}"
        assert not self.fast.decoder.header_table.dynamic_entries, "a stateless block indexed a field"
        assert len(self.plain.machine.streams) == len(self.fast.machine.streams)


ERROR_CODES = list(h2.errors.ErrorCodes)
