"""The client side of bench/ws.py: the cells, the frames, and the client processes that echo them.

A client process holds ``nconns`` connections, each with one message in flight: pre-built
masked frames, epoll, as little work per message as Python allows, so that the server is
what is measured. bench/ws_cost.py feeds the same frames (``frame``, ``payload``,
``DEFLATE_OFFER``) to sessions without sockets.
"""

from __future__ import annotations

import base64
import os
import random
import select
import socket
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any

from bench.procs import HOST

MASK = b"\x37\xfa\x21\x3d"
#: Offered when a cell asks for compression: each client message is compressed once, ahead of
#: time (``client_no_context_takeover``); the server keeps its own context.
DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover; client_max_window_bits"


@dataclass(frozen=True)
class Cell:
    size: int
    binary: bool
    deflate: bool

    @property
    def key(self) -> str:
        size = "64k" if self.size == 65536 else str(self.size)
        return f"{size}-{'bin' if self.binary else 'text'}{'-deflate' if self.deflate else ''}"


CELLS = {c.key: c for c in (Cell(s, b, d) for d in (False, True) for s in (64, 65536) for b in (False, True))}


def payload(size: int) -> bytes:
    """ASCII words, deterministic, ``size`` bytes: text that compresses about as well as prose."""
    rng = random.Random(14)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(600)
    ]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words).encode() + b" "
    return bytes(out[:size])


def frame(opcode: int, data: bytes, rsv1: bool = False) -> bytes:
    """One masked client frame (the mask is fixed: the server does not care, and it is built once)."""
    head = bytearray([0x80 | (0x40 if rsv1 else 0) | opcode])
    n = len(data)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = (MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big") if n else b""
    return bytes(head) + MASK + masked


def handshake(port: int, deflate: bool) -> tuple[socket.socket, bytes, str]:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET /echo HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if deflate:
        head += f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n"
    sock.sendall((head + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        buf += chunk
    response, rest = buf.split(b"\r\n\r\n", 1)
    lines = response.decode("latin-1").split("\r\n")
    if lines[0].split()[1] != "101":
        raise ConnectionError(f"handshake answered {lines[0]!r}")
    extensions = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-extensions":
            extensions = value.strip()
    return sock, rest, extensions


def client_frame(cell: Cell, extensions: list[str]) -> tuple[bytes, bool]:
    """The frame every client sends for ``cell`` and whether permessage-deflate is on, given the
    Sec-WebSocket-Extensions each connection's 101 answered (compressed once, ahead of time)."""
    opcode = 2 if cell.binary else 1
    data = payload(cell.size)
    negotiated = all("permessage-deflate" in ext for ext in extensions)
    if not (cell.deflate and negotiated):
        return frame(opcode, data), negotiated
    wbits = 15
    for part in extensions[0].split(";"):
        name, _, value = part.strip().partition("=")
        if name == "client_max_window_bits" and value:
            wbits = int(value.strip('"'))
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return frame(opcode, body[:-4] if body.endswith(b"\x00\x00\xff\xff") else body, rsv1=True), True


def client(port: int, cell: Cell, nconns: int, index: int, counts: Any, status: Any, stop: Any) -> None:
    """One client process: ``nconns`` connections, each echoing one message at a time until ``stop``."""
    try:
        conns = [handshake(port, cell.deflate) for _ in range(nconns)]
        out, negotiated = client_frame(cell, [ext for _, _, ext in conns])
        status[2 * index + 1] = 1 if negotiated else 0
        epoll = select.epoll()
        # per fd: [socket, bytes of data-frame payload still to skip, that frame is final, partial header]
        state: dict[int, list[Any]] = {}
        for sock, _rest, _ext in conns:
            state[sock.fileno()] = [sock, 0, False, b""]
            epoll.register(sock.fileno(), select.EPOLLIN)
        status[2 * index] = 1  # connected
        while status[2 * index] == 1 and not stop[0]:
            time.sleep(0.005)  # wait for the go: every client process connected
        for sock, rest, _ext in conns:
            if rest:
                raise ConnectionError("unexpected bytes after the handshake")
            sock.sendall(out)
        done = 0
        recv = socket.socket.recv
        while not stop[0]:
            for fd, _ev in epoll.poll(0.05):
                st = state[fd]
                sock = st[0]
                chunk = recv(sock, 262144)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                if st[3]:
                    chunk = st[3] + chunk
                    st[3] = b""
                pos, n = 0, len(chunk)
                while pos < n:
                    skip = st[1]
                    if skip:
                        take = n - pos if n - pos < skip else skip
                        st[1] = skip - take
                        pos += take
                        if st[1] == 0 and st[2]:
                            done += 1
                            counts[index] = done
                            sock.sendall(out)
                        continue
                    if n - pos < 2:
                        st[3] = chunk[pos:]
                        break
                    b0, b1 = chunk[pos], chunk[pos + 1] & 0x7F
                    hl = 2 if b1 < 126 else 4 if b1 == 126 else 10
                    if n - pos < hl:
                        st[3] = chunk[pos:]
                        break
                    length = b1 if b1 < 126 else int.from_bytes(chunk[pos + 2:pos + hl], "big")
                    op = b0 & 0x0F
                    if op >= 8:  # control frame: needs its whole payload
                        if n - pos < hl + length:
                            st[3] = chunk[pos:]
                            break
                        body = chunk[pos + hl:pos + hl + length]
                        pos += hl + length
                        if op == 9:
                            sock.sendall(frame(10, body))
                        elif op == 8:
                            raise ConnectionError(f"the server sent a close frame {body[:2].hex()}")
                        continue
                    pos += hl
                    st[1], st[2] = length, bool(b0 & 0x80)
                    if length == 0 and st[2]:
                        done += 1
                        counts[index] = done
                        sock.sendall(out)
        for sock, _rest, _ext in conns:
            try:
                sock.sendall(frame(8, b"\x03\xe8"))
                sock.close()
            except OSError:
                pass
    except BaseException as exc:
        sys.stderr.write(f"client {index}: {type(exc).__name__}: {exc}\n")
        status[2 * index] = -1


def check(port: int, cell: Cell) -> str | None:
    """One echo through the ``websockets`` client: the right bytes and type come back; None when fine."""
    try:
        from websockets.sync.client import connect
    except ImportError:
        return None
    data: Any = payload(cell.size)
    if not cell.binary:
        data = data.decode()
    try:
        with connect(f"ws://{HOST}:{port}/echo", compression="deflate" if cell.deflate else None,
                     max_size=None, open_timeout=5) as ws:
            ws.send(data)
            got = ws.recv(timeout=5)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if got != data:
        return f"echo differs: sent {type(data).__name__} of {len(data)}, got {type(got).__name__} of {len(got)}"
    return None
