"""An HTTP/2 client (h2's client side) on the in-process rig (tests/inprocess.py)."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events

from tests.inprocess import Rig

#: Gunicorn settings under which the rig's peer (127.0.0.1) speaks h2c with prior knowledge.
SETTINGS = {"http_protocols": "h2,h1", "http2_cleartext": "prior-knowledge", "forwarded_allow_ips": "127.0.0.1"}


class Client:
    """h2's client side over one in-process connection."""

    def __init__(self, rig: Rig, before: tuple[bytes, ...] = (), **transport_options: Any) -> None:
        """``before``: what comes ahead of the preface (a PROXY header), each part one read,
        the last in the same read as the preface."""
        self.rig = rig
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.conn = rig.connect(**transport_options)
        self.events: list[Any] = []
        for part in before[:-1]:
            self.conn.send(part)
        if before:
            self.conn.send(before[-1] + self.h2.data_to_send())
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.conn.send(data)
        out = self.conn.take()
        if out:
            self.events += self.h2.receive_data(out)
            more = self.h2.data_to_send()
            if more:
                self.conn.send(more)

    def post(self, body: bytes = b"", method: str = "POST", end: bool = False) -> int:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, [(":method", method), (":path", "/"), (":scheme", "http"),
                                      (":authority", "test")], end_stream=end and not body)
        if body:
            self.h2.send_data(stream, body, end_stream=end)
        self.flush()
        return stream

    def send(self, stream: int, body: bytes, end: bool = False) -> None:
        self.h2.send_data(stream, body, end_stream=end)
        self.flush()

    def status(self, stream: int) -> int | None:
        self.flush()
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                return int(dict(event.headers)[b":status"])
        return None

    def body(self, stream: int) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream)
