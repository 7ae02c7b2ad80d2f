"""Response compression: which coding a client gets, and a compressor per response.

Opt-in per deployment (``POUNCE_COMPRESSION``), because compressing costs CPU on
every response and a reverse proxy often does it already. When on, the request
cycle hands the app a ``CompressingSend`` instead of its own ``send``: it sees
the ASGI messages before the response head is framed, so the fast path and h11
frame the rewritten head (``Content-Encoding``, ``Vary``, the new length) like
any other. Everything here is per response except ``CompressionPolicy``, which
is frozen and shared by every loop thread.

Compressed responses keep streaming: every chunk is flushed (``Z_SYNC_FLUSH``,
zstd's ``FLUSH_BLOCK``) so a client sees each chunk when the app sends it. A
response sent as one body message gets an exact ``Content-Length``: the head
waits for that first body message, which is the one behavioural difference a
compressed response has (its head is not sent before its first body chunk).
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .defaults import NO_BODY_STATUS

try:  # CPython 3.14+
    from compression import zstd as _zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    _zstd = None

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]

#: Codings this interpreter can produce, in the order they are documented.
SUPPORTED = ("gzip", "zstd") if _zstd is not None else ("gzip",)
KNOWN = ("gzip", "zstd")
DEFAULT_TYPES = (
    "text/*, application/json, application/javascript, application/xml, image/svg+xml, "
    "application/ld+json, application/manifest+json, application/wasm, application/x-ndjson"
)
#: Statuses whose body is never compressed: no body (204, 304) or a part of one (206).
_UNTOUCHED_STATUS = NO_BODY_STATUS | {206}
GZIP_LEVEL = 6
ZSTD_LEVEL = 3


@dataclass(frozen=True, slots=True)
class CompressionPolicy:
    """The deployment's compression settings, parsed once at boot (immutable, shared)."""

    encodings: tuple[str, ...]  # server preference order, only those this interpreter has
    min_size: int
    types: frozenset[bytes]  # exact media types, lower case
    type_prefixes: tuple[bytes, ...]  # from "text/*": b"text/"

    @classmethod
    def from_settings(cls, encodings: str, types: str, min_size: int) -> CompressionPolicy | None:
        """None when compression is off; ValueError naming the setting for a value we cannot run with."""
        wanted = [item.strip().lower() for item in encodings.split(",") if item.strip()]
        if not wanted or wanted == ["off"]:
            return None
        unknown = [item for item in wanted if item not in KNOWN]
        if unknown:
            raise ValueError(f"POUNCE_COMPRESSION={encodings!r}: unknown coding(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(KNOWN)} or off")
        usable = tuple(dict.fromkeys(item for item in wanted if item in SUPPORTED))
        if not usable:
            # Only codings this Python lacks (zstd before 3.14): refuse rather than silently not compress.
            raise ValueError(f"POUNCE_COMPRESSION={encodings!r}: {', '.join(wanted)} is not available on this "
                             "Python (zstd needs CPython 3.14+); add gzip or turn compression off")
        exact: set[bytes] = set()
        prefixes: list[bytes] = []
        for item in types.split(","):
            media = item.strip().lower().encode("latin-1")
            if not media:
                continue
            if media.endswith(b"/*"):
                prefixes.append(media[:-1])
            elif b"/" in media:
                exact.add(media)
            else:
                raise ValueError(f"POUNCE_COMPRESSION_TYPES: {item.strip()!r} is not a media type "
                                 "(type/subtype or type/*)")
        return cls(usable, min_size, frozenset(exact), tuple(prefixes))

    def compressible(self, content_type: bytes) -> bool:
        media = content_type.partition(b";")[0].strip().lower()
        return media in self.types or media.startswith(self.type_prefixes)


def negotiate(accept_encoding: bytes | None, offered: tuple[str, ...]) -> str | None:
    """The coding to use for a request's ``Accept-Encoding`` (RFC 9110 §12.5.3), None for identity.

    A missing header means the client said nothing, and we send identity (as
    nginx and Caddy do). ``q=0`` refuses a coding; ``*`` stands for every
    coding not named; the highest q wins and ties go to the server's order.
    Identity competes only when the client names it (or ``*``) with a q above
    the codings': ``gzip;q=0.5`` alone still means "gzip, please".
    """
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.decode("latin-1").split(","):
        token, _, params = item.partition(";")
        token = token.strip().lower()
        if not token:
            continue
        if token == "x-gzip":
            token = "gzip"
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:
                    q = -1.0  # malformed: ignore the element
        if q >= 0.0:
            weights[token] = max(q, weights.get(token, q))  # named twice: the kinder weight
    star = weights.get("*")
    best = None
    best_q = 0.0
    for coding in offered:
        q = weights.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    identity_q = weights.get("identity")
    if identity_q is not None and identity_q > best_q:
        return None
    return best


class _Gzip:
    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip container

    def chunk(self, data: bytes) -> bytes:
        z = self._z
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)

    def last(self, data: bytes) -> bytes:
        z = self._z
        return z.compress(data) + z.flush(zlib.Z_FINISH)


class _Zstd:
    __slots__ = ("_z",)

    def __init__(self) -> None:
        assert _zstd is not None
        self._z = _zstd.ZstdCompressor(level=ZSTD_LEVEL)

    def chunk(self, data: bytes) -> bytes:
        return bytes(self._z.compress(data, mode=_zstd.ZstdCompressor.FLUSH_BLOCK))

    def last(self, data: bytes) -> bytes:
        return bytes(self._z.compress(data, mode=_zstd.ZstdCompressor.FLUSH_FRAME))


_ENCODERS: dict[str, Callable[[], _Gzip | _Zstd]] = {"gzip": _Gzip, "zstd": _Zstd}


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _eligible(policy: CompressionPolicy, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether this response's body may be compressed at all (whatever the client accepts)."""
    if status in _UNTOUCHED_STATUS or status < 200:
        return False
    content_type = None
    for key, value in headers:
        key = key.lower()
        if key == b"content-encoding" or key == b"content-range":
            return False
        if key == b"cache-control" and b"no-transform" in value.lower():
            return False
        if key == b"content-type":
            content_type = value
        elif key == b"content-length" and value.strip().isdigit() and int(value) < policy.min_size:
            return False
    return content_type is not None and policy.compressible(content_type)


def _with_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``Accept-Encoding`` in ``Vary`` (merged into the app's Vary, once)."""
    out = []
    merged = False
    for key, value in headers:
        if key.lower() == b"vary" and not merged:
            tokens = [t.strip().lower() for t in value.split(b",")]
            if b"accept-encoding" not in tokens and b"*" not in tokens:
                value = value + b", Accept-Encoding" if value.strip() else b"Accept-Encoding"
            merged = True
        out.append((key, value))
    if not merged:
        out.append((b"vary", b"Accept-Encoding"))
    return out


class CompressingSend:
    """The ``send`` a compressing deployment hands the app, for one response.

    Deciding needs the request's ``Accept-Encoding`` and the response's status
    and headers; compressing needs the body. So ``http.response.start`` is held
    back until the first body message: a single body (``more_body`` false)
    gets an exact ``Content-Length``, a stream goes out chunked, each chunk
    flushed. Anything else (``http.response.pathsend``, a compressed-ineligible
    response) passes through with the start message as the app sent it, plus
    ``Vary`` where the response could have been compressed.
    """

    __slots__ = ("_coding", "_encoder", "_head_only", "_held", "_policy", "_send")

    def __init__(self, send: Send, policy: CompressionPolicy, scope: dict[str, Any]) -> None:
        self._send = send
        self._policy = policy
        accept = None
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value if accept is None else accept + b"," + value
        self._coding = negotiate(accept, policy.encodings)
        self._head_only = scope["method"] == "HEAD"
        self._held: Message | None = None
        self._encoder: _Gzip | _Zstd | None = None

    async def __call__(self, message: Message) -> None:
        encoder = self._encoder
        if encoder is not None and message.get("type") == "http.response.body":
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            data = encoder.chunk(body) if more else encoder.last(body)
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
            return
        held = self._held
        if held is not None:
            self._held = None
            if message.get("type") == "http.response.body":
                await self._first_body(held, message)
                return
            await self._send(held)  # e.g. pathsend: a file is sent as it is
        elif message.get("type") == "http.response.start":
            message = self._start(message)
            if self._held is not None:
                return
        await self._send(message)

    async def release(self) -> None:
        """Send the start message still held for a first body that never came.

        The app returned (or raised) after ``http.response.start`` alone: the client
        then gets that status and a close, as it does with compression off, not the
        500 the cycle answers when no response was started.
        """
        held = self._held
        if held is not None:
            self._held = None
            await self._send(held)

    def _start(self, message: Message) -> Message:
        headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
        if not _eligible(self._policy, message.get("status", 0), headers):
            return message
        headers = _with_vary(headers)
        message = {**message, "headers": headers}
        if self._coding is not None:
            self._held = message
        return message

    async def _first_body(self, start: Message, message: Message) -> None:
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        headers: list[tuple[bytes, bytes]] = start["headers"]
        declared = _header(headers, b"content-length")
        if not more and declared is None and len(body) < self._policy.min_size:
            # One small body and no length to go by: not worth compressing.
            await self._send(start)
            await self._send(message)
            return
        if self._head_only and not more and not body:
            # A HEAD answered without a body: the compressed length is unknown, so none is given.
            await self._send(self._rewrite(start, None))
            await self._send(message)
            return
        assert self._coding is not None
        encoder = _ENCODERS[self._coding]()
        if more:
            self._encoder = encoder
            await self._send(self._rewrite(start, None))
            await self._send({"type": "http.response.body", "body": encoder.chunk(body), "more_body": True})
        else:
            data = encoder.last(body)
            await self._send(self._rewrite(start, len(data)))
            await self._send({"type": "http.response.body", "body": data})

    def _rewrite(self, start: Message, length: int | None) -> Message:
        assert self._coding is not None
        # Accept-Ranges offers ranges of the identity bytes, which the encoded body is not
        # (a client's next Range request would splice the two); nginx's gzip drops it too.
        headers = [(k, v) for k, v in start["headers"] if k.lower() not in (b"content-length", b"accept-ranges")]
        # A strong ETag names the identity bytes; the compressed ones are another representation.
        headers = [(k, b"W/" + v if k.lower() == b"etag" and v.startswith(b'"') else v) for k, v in headers]
        headers.append((b"content-encoding", self._coding.encode("ascii")))
        if length is not None:
            headers.append((b"content-length", b"%d" % length))
        return {**start, "headers": headers}
