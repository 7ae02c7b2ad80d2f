"""What a trusted proxy may tell us: PROXY protocol headers and forwarding headers.

Gunicorn computes these for WSGI in its request parser, which is bound to a
blocking socket reader; here the same rules are applied sans-I/O so the h11
connection can use them:

* ``proxy_protocol`` (off/v1/v2/auto) with ``proxy_allow_ips``: the PROXY line
  (v1) or binary header (v2) before the first request replaces the peer and
  local addresses; from a peer not allowed to send it, 403.
* ``forwarded_allow_ips`` with ``secure_scheme_headers``: a trusted peer's
  header sets the scheme; two such headers that disagree are a 400, as in
  Gunicorn. ``forwarder_headers`` containing ``SCRIPT_NAME`` lets a trusted
  peer set the mount point (``root_path``).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from gunicorn.http.message import PP_V2_SIGNATURE

from .validate import Rejection

#: How many bytes a PROXY header may take before we call it garbage (v1 max is 107).
V1_MAX = 108


def ip_allowed(ip: str | None, allow_all: bool, networks: tuple[Any, ...]) -> bool:
    """Gunicorn's allow-list rule; non-IP peers (unix sockets) are trusted, as in Gunicorn."""
    if allow_all or ip is None:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in networks)


def parse_proxy_header(
    buf: bytes, mode: str
) -> tuple[bool, int, tuple[str, int] | None, tuple[str, int] | None]:
    """Parse a PROXY header at the start of ``buf``.

    Returns ``(complete, consumed, client, local)``: ``complete`` False means
    more bytes are needed; ``consumed`` 0 with ``complete`` True means the
    connection does not start with a PROXY header (plain HTTP, allowed in
    ``auto``-less modes too, as Gunicorn allows). Raises ``Rejection``.
    """
    if mode in ("v2", "auto"):
        if len(buf) < 12 and PP_V2_SIGNATURE.startswith(buf):
            return False, 0, None, None
        if buf.startswith(PP_V2_SIGNATURE):
            return _parse_v2(buf)
    if mode in ("v1", "auto"):
        if len(buf) < 6 and b"PROXY ".startswith(buf):
            return False, 0, None, None
        if buf.startswith(b"PROXY "):
            return _parse_v1(buf)
    return True, 0, None, None


def _parse_v1(buf: bytes) -> tuple[bool, int, tuple[str, int] | None, tuple[str, int] | None]:
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise Rejection(400, "PROXY v1 line too long")
        return False, 0, None, None
    line = buf[:end].decode("latin-1")
    bits = line.split(" ")
    if len(bits) >= 2 and bits[1] == "UNKNOWN":  # the proxy could not tell; keep real addresses
        return True, end + 2, None, None
    if len(bits) != 6:
        raise Rejection(400, f"Invalid PROXY line {line!r}")
    proto, src, dst = bits[1], bits[2], bits[3]
    family = {"TCP4": socket.AF_INET, "TCP6": socket.AF_INET6}.get(proto)
    if family is None:
        raise Rejection(400, f"PROXY protocol {proto!r} not supported")
    try:
        socket.inet_pton(family, src)
        socket.inet_pton(family, dst)
        sport, dport = int(bits[4]), int(bits[5])
    except (OSError, ValueError):
        raise Rejection(400, f"Invalid PROXY line {line!r}") from None
    if not (0 <= sport <= 65535 and 0 <= dport <= 65535):
        raise Rejection(400, f"Invalid port in PROXY line {line!r}")
    return True, end + 2, (src, sport), (dst, dport)


def _parse_v2(buf: bytes) -> tuple[bool, int, tuple[str, int] | None, tuple[str, int] | None]:
    if len(buf) < 16:
        return False, 0, None, None
    ver_cmd, fam_proto = buf[12], buf[13]
    (length,) = struct.unpack(">H", buf[14:16])
    if ver_cmd >> 4 != 2:
        raise Rejection(400, f"PROXY v2: unsupported version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise Rejection(400, f"PROXY v2: unsupported command {command}")
    total = 16 + length
    if len(buf) < total:
        return False, 0, None, None
    if command == 0:  # LOCAL: health check from the proxy itself; keep real addresses
        return True, total, None, None
    family, proto = fam_proto >> 4, fam_proto & 0x0F
    data = buf[16:total]
    if family == 0:
        return True, total, None, None
    if proto != 1:
        raise Rejection(400, "PROXY v2: only TCP (STREAM) is supported")
    if family == 1 and length >= 12:
        src = socket.inet_ntop(socket.AF_INET, data[0:4])
        dst = socket.inet_ntop(socket.AF_INET, data[4:8])
        sport, dport = struct.unpack(">HH", data[8:12])
    elif family == 2 and length >= 36:
        src = socket.inet_ntop(socket.AF_INET6, data[0:16])
        dst = socket.inet_ntop(socket.AF_INET6, data[16:32])
        sport, dport = struct.unpack(">HH", data[32:36])
    elif family == 3:
        return True, total, None, None
    else:
        raise Rejection(400, "PROXY v2: address block too short")
    return True, total, (src, sport), (dst, dport)
