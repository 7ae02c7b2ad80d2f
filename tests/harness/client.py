"""Raw HTTP/1.1 over loopback: requests written byte for byte, responses read whole."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence

from tests.harness.ports import HOST


def raw_request(port: int, data: bytes | Sequence[bytes], timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send bytes on a fresh connection and return everything read until EOF (or timeout)."""
    chunks = [data] if isinstance(data, bytes) else list(data)
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        for chunk in chunks:
            s.sendall(chunk)
        if not read_until_close:
            return s.recv(65536)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            out += part
        return out


class ParsedResponse:
    """One response read off a raw socket: status, lower-cased headers, body, informational 1xx seen."""

    def __init__(self, status: int, http_version: bytes, headers: list[tuple[bytes, bytes]],
                 body: bytes, informational: list[int]) -> None:
        self.status = status
        self.http_version = http_version
        self.headers = headers
        self.body = body
        self.informational = informational

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def __repr__(self) -> str:
        return f"<ParsedResponse {self.status} {self.headers!r} {self.body[:80]!r}>"


class RawConnection:
    """A raw client socket on loopback that parses the server's responses with h11.

    Bytes are sent exactly as given (pipelining, hand-made framing, bad requests); h11
    only frames what comes back, so a HEAD response carrying a body, or a response
    out of order, breaks the parse of the following one.
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        import h11

        self._h11 = h11
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.timeout = timeout
        self.conn = h11.Connection(h11.CLIENT)
        self.local_port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self, method: bytes = b"GET", timeout: float | None = None) -> ParsedResponse:
        """The next complete response (1xx responses are recorded in ``informational``)."""
        h11 = self._h11
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if conn.our_state is h11.IDLE:
            # Tell h11 which request this response answers; the bytes were sent already.
            conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"x")]))
            conn.send(h11.EndOfMessage())
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        informational: list[int] = []
        head = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return ParsedResponse(head.status_code, head.http_version, list(head.headers.raw_items()),
                                      body, informational)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed before a complete response")

    def recv_raw(self, timeout: float = 1.0) -> bytes:
        """Whatever arrives within ``timeout`` (empty on timeout or EOF)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return b""

    def closed_by_server(self, timeout: float) -> bool:
        """True when the server closes (EOF or reset) within ``timeout`` without sending more."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if data:
            raise AssertionError(f"expected EOF, got {data!r}")
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_request(method: str = "GET", target: str = "/", headers: Sequence[tuple[str, str]] = (),
                 body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    """Request bytes exactly as written: ``Host`` first, then ``headers``, then ``body`` (no framing added)."""
    lines = [f"{method} {target} {version}", "Host: test"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def build_request(
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    method: str = "GET",
    body: bytes = b"",
    close: bool = True,
) -> bytes:
    """An HTTP/1.1 request as bytes, with Host (and Connection: close unless ``close`` is False)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers, body)`` of one raw HTTP/1.x response; status 0 when there is none."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/"):
        return 0, {}, data
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (as far as it is complete)."""
    out = b""
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def exchange(
    port: int, data: bytes, timeout: float = 10.0, host: str = HOST
) -> tuple[int, dict[str, str], bytes, int]:
    """Send ``data`` on a new connection, read to EOF: ``(status, headers, body, local_port)``."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        local_port = s.getsockname()[1]
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not part:
                break
            out += part
    status, headers, body = parse_response(out)
    return status, headers, body, local_port


def read_until_close(
    sock: socket.socket, timeout: float, until: Callable[[bytes], bool] | None = None
) -> tuple[bytes, str]:
    """Everything the peer sends until it closes: ``(data, how)``, how is eof, reset or timeout
    (or ``done``, once ``until(data)`` holds)."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        if until is not None and until(out):
            return out, "done"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return out, "timeout"
        sock.settimeout(remaining)
        try:
            part = sock.recv(65536)
        except TimeoutError:
            return out, "timeout"
        except ConnectionResetError:
            return out, "reset"
        if not part:
            return out, "eof"
        out += part


def response_statuses(data: bytes) -> list[int]:
    """Status codes of the consecutive HTTP/1.x responses in ``data`` (framed by Content-Length).

    Stops at the first thing that is not a complete response head; a response
    without Content-Length takes the rest of the data as its body.
    """
    statuses: list[int] = []
    while data.startswith(b"HTTP/1."):
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        head = data[:end].decode("latin-1").split("\r\n")
        statuses.append(int(head[0].split(" ")[1]))
        length = 0 if statuses[-1] < 200 or statuses[-1] in (204, 304) else None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            break
        data = data[end + 4 + length:]
    return statuses
