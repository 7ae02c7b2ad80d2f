"""A small blocking HTTP/2 client over a real socket (h2 as the client side), for the core tests.

Real clients (curl, httpx) show the happy paths; this one lets a test see the
frames that matter (SETTINGS values, GOAWAY codes, RST_STREAM, 1xx, trailers)
and control its own window. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.harness import HOST


@dataclass
class Stream:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


class H2Client:
    """One HTTP/2 connection; ``auto_ack=False`` keeps our receive windows closed."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0,
                 auto_ack: bool = True, settings: dict[int, int] | None = None, preface: bool = True) -> None:
        raw = socket.create_connection((HOST, port), timeout=timeout)
        self.sock: Any = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls is not None else raw
        self.timeout = timeout
        self.auto_ack = auto_ack
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        if settings:
            self.conn.local_settings.update(settings)  # type: ignore[arg-type]
        self.streams: dict[int, Stream] = {}
        self.remote_settings: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        if preface:
            self.conn.initiate_connection()
            self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes = b"", headers: list[tuple[bytes, bytes]] = (),
                end: bool = True) -> int:  # type: ignore[assignment]
        stream_id = self.conn.get_next_available_stream_id()
        block = [(b":method", method.encode()), (b":path", path.encode()), (b":scheme", b"http"),
                 (b":authority", b"127.0.0.1"), *headers]
        self.streams[stream_id] = Stream()
        self.conn.send_headers(stream_id, block, end_stream=end and not body)
        if body:
            self.send_body(stream_id, body, end)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes, end: bool = True) -> None:
        """Send as much as the windows allow, waiting for WINDOW_UPDATEs for the rest."""
        view = memoryview(body)
        while view:
            window = self.conn.local_flow_control_window(stream_id)
            if window <= 0:
                self.flush()
                if not self.read_once():
                    raise ConnectionError("the server closed while we waited for its window")
                continue
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(stream_id, view[:size].tobytes())
            view = view[size:]
        if end:
            self.conn.end_stream(stream_id)
        self.flush()

    def read_once(self) -> bool:
        """Read and handle one chunk of frames; False when the server closed."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for event in events:
            self._event(event)
        self.flush()
        return True

    def _event(self, event: Any) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream:
            stream.headers = list(event.headers)
        elif isinstance(event, h2.events.InformationalResponseReceived) and stream:
            stream.informational.append(list(event.headers))
        elif isinstance(event, h2.events.DataReceived) and stream:
            stream.body += event.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived) and stream:
            stream.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded) and stream:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream:
            stream.reset = event.error_code
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            if event.error_code == 0:
                # A graceful GOAWAY: the streams up to last_stream_id still complete (RFC 9113
                # §6.8), but h2 closes its client state machine on any GOAWAY; reopen it.
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def wait(self, predicate: Any, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            if self.closed or time.monotonic() > deadline:
                return bool(predicate())
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.read_once()
            except TimeoutError:
                pass
        return True

    def response(self, stream_id: int, timeout: float | None = None) -> Stream:
        stream = self.streams[stream_id]
        assert self.wait(lambda: stream.ended or stream.reset is not None, timeout), f"stream {stream_id} unfinished"
        return stream

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
