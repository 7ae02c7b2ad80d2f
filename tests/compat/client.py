"""A raw-socket HTTP/1.x client that reports exactly what came over the wire.

It sends bytes verbatim and parses responses itself, so it can tell framing
apart (chunked, content-length, close-delimited, none), see interim 1xx
responses, notice a body cut short, and tell whether the server kept the
connection open. Every read is bounded by a deadline.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
PROBE = b"GET /plain HTTP/1.1\r\nHost: compat\r\n\r\n"
NO_BODY_STATUSES = frozenset({204, 304})


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    framing: str = "none"
    complete: bool = True
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Closed(Exception):
    """The server closed (or reset) the connection before a complete response head."""


class Conn:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Close with a RST instead of a FIN, like a client that crashed."""
        import struct

        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline: float) -> bool:
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("response not complete before the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except TimeoutError:
            raise TimeoutError("response not complete before the deadline") from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_until(self, marker: bytes, deadline: float) -> bytes | None:
        while marker not in self.buf:
            if not self._fill(deadline):
                return None
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _read_exact(self, n: int, deadline: float) -> tuple[bytes, bool]:
        while len(self.buf) < n:
            if not self._fill(deadline):
                data, self.buf = self.buf, b""
                return data, False
        data, self.buf = self.buf[:n], self.buf[n:]
        return data, True

    def read_head(self, timeout: float | None = None) -> Response:
        deadline = time.monotonic() + (timeout or self.timeout)
        head = self._read_until(b"\r\n\r\n", deadline)
        if head is None:
            raise Closed(f"connection closed before a response head ({len(self.buf)} stray bytes)")
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        status, _, reason = rest.partition(b" ")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()))
        return Response(version.decode("latin-1"), int(status), reason.decode("latin-1"), headers)

    def read_response(self, method: str = "GET", timeout: float | None = None, head: Response | None = None,
                      ) -> Response:
        """The next final response (interim 1xx responses are collected on it)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim: list[int] = []
        while True:
            resp = head or self.read_head(max(0.01, deadline - time.monotonic()))
            head = None
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp.status)
                continue
            break
        resp.interim = interim
        te = (resp.header("transfer-encoding") or "").lower()
        length = resp.header("content-length")
        if method == "HEAD" or resp.status in NO_BODY_STATUSES or resp.status < 200:
            resp.framing = "none"
            # A declared length on a body-less response is a promise about the GET, not bytes to read.
            if te == "chunked":
                resp.framing = "none (chunked declared)"
            elif length is not None:
                resp.framing = "none (content-length declared)"
        elif te == "chunked":
            resp.framing = "chunked"
            resp.body, resp.complete = self._read_chunked(deadline)
        elif length is not None:
            resp.framing = "content-length"
            resp.body, resp.complete = self._read_exact(int(length), deadline)
        else:
            resp.framing = "close"
            while self._fill(deadline):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def _read_chunked(self, deadline: float) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            line = self._read_until(b"\r\n", deadline)
            if line is None:
                body += self.buf
                self.buf = b""
                return bytes(body), False
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = self._read_until(b"\r\n", deadline)
                    if trailer is None:
                        return bytes(body), False
                    if trailer == b"":
                        return bytes(body), True
            data, ok = self._read_exact(size, deadline)
            body += data
            if not ok:
                return bytes(body), False
            _crlf, ok = self._read_exact(2, deadline)
            if not ok:
                return bytes(body), False

    def try_response(self, method: str = "GET", timeout: float | None = None) -> Response | None:
        """A response, or None when the server closed the connection instead."""
        try:
            return self.read_response(method, timeout)
        except Closed:
            return None

    def still_open(self, timeout: float = 3.0) -> bool:
        """Send a probe request on this connection: did a response come back?"""
        if self.eof:
            return False
        if not self.send(PROBE):
            return False
        try:
            resp = self.read_response("GET", timeout)
        except (Closed, TimeoutError):
            return False
        return resp.status == 200

    def wait_closed(self, timeout: float = 3.0) -> bool:
        """Without sending anything: does the server close the connection within ``timeout``?"""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False
        return True
