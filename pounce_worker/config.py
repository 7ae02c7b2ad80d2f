"""The frozen configuration every loop thread reads.

Gunicorn's ``Config`` is a mutable object with properties that recompute on
each access. Loop threads must not touch it concurrently (nor pay for the
property calls on the hot path), so the worker snapshots what the server needs
once, at boot, into an immutable dataclass that all threads can share freely.

Settings that Gunicorn does not have are read from ``POUNCE_*`` environment
variables (Gunicorn's ``raw_env``/``--env`` sets them for the worker, too);
a malformed value fails the boot with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import mode as _mode
from .asgi import compression as _compression
from .status.bind import StatusBind, parse_bind


class ConfigError(ValueError):
    """A setting has a value the worker cannot run with; the message names it."""


#: Pounce settings: environment variable -> (default, documentation).
ENV_SETTINGS: Mapping[str, tuple[float, str]] = {
    "POUNCE_HEADER_TIMEOUT": (
        15.0,
        "seconds a client may take to send a complete request head (slowloris guard)",
    ),
    "POUNCE_BODY_TIMEOUT": (
        30.0,
        "seconds a client may pause while sending a request body the server is reading; "
        "also how far behind POUNCE_BODY_MIN_RATE it may fall (0: no limit)",
    ),
    "POUNCE_BODY_MIN_RATE": (
        500,
        "bytes per second a request body must average once POUNCE_BODY_TIMEOUT's allowance "
        "is used up (0: only pauses are limited)",
    ),
    "POUNCE_SEND_TIMEOUT": (
        60.0,
        "seconds a client may leave our send buffer full without reading from it (0: no limit)",
    ),
    "POUNCE_MAX_BODY_SIZE": (
        0,
        "largest request body in bytes; larger gets 413 (0: unlimited)",
    ),
    "POUNCE_FAST_PATH": (
        1,
        "1: parse simple requests and frame responses without h11's generic machinery "
        "(byte-for-byte equal to h11); 0: everything through h11",
    ),
    "POUNCE_SHUTDOWN_TICK": (
        0.5,
        "seconds between loop ticks (heartbeat, Date header, shutdown checks)",
    ),
    "POUNCE_LIFESPAN_STARTUP_TIMEOUT": (
        30.0,
        "seconds each event loop's ASGI lifespan startup may take; beyond it the worker exits "
        "with Gunicorn's boot-error code (0: no limit)",
    ),
    "POUNCE_STATUS_ALLOW_REMOTE": (
        0,
        "1: let POUNCE_STATUS_BIND name a non-loopback address",
    ),
    "POUNCE_WS_PING_INTERVAL": (
        20.0,
        "seconds between keep-alive pings on an open WebSocket (0: no pings)",
    ),
    "POUNCE_WS_PING_TIMEOUT": (
        20.0,
        "seconds a WebSocket peer has to answer a ping before it is closed with 1011 (0: no limit)",
    ),
    "POUNCE_WS_PER_MESSAGE_DEFLATE": (
        1,
        "1: offer permessage-deflate to WebSocket clients that ask for it; 0: never compress",
    ),
    "POUNCE_COMPRESSION_MIN_SIZE": (
        500,
        "smallest response body in bytes worth compressing (when POUNCE_COMPRESSION is on)",
    ),
    "POUNCE_SERVER_TIMING": (
        0,
        "1: add a Server-Timing header (parse, queue, app) to every response",
    ),
}


def _env_number(env: Mapping[str, str], name: str) -> float:
    default = ENV_SETTINGS[name][0]
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number ({ENV_SETTINGS[name][1]})") from None
    if not math.isfinite(value):
        # float() takes nan and inf: a nan deadline never fires, an inf tick never ticks, and
        # int() of either fails without naming the variable.
        raise ConfigError(f"{name}={raw!r} is not a finite number ({ENV_SETTINGS[name][1]})")
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative ({ENV_SETTINGS[name][1]})")
    return value


def _underscore_forwarded(cfg: Any) -> frozenset[bytes] | None:
    """forwarder_headers as scope names (``SCRIPT_NAME`` -> ``b"script_name"``); None for ``*``."""
    names = list(getattr(cfg, "forwarder_headers", None) or ())
    if "*" in names:
        return None
    return frozenset(name.strip().lower().encode("latin-1") for name in names)


#: The loop tick's bounds: below, every loop wakes hundreds of times a second for nothing;
#: above, every deadline fires up to two ticks late and the Date header lags as much.
TICK_MIN, TICK_MAX = 0.01, 5.0


def _tick(env: Mapping[str, str]) -> float:
    """POUNCE_SHUTDOWN_TICK (0 or unset: 0.5), refused outside [TICK_MIN, TICK_MAX] naming the variable."""
    value = _env_number(env, "POUNCE_SHUTDOWN_TICK") or 0.5
    if not TICK_MIN <= value <= TICK_MAX:
        raise ConfigError(f"POUNCE_SHUTDOWN_TICK={env['POUNCE_SHUTDOWN_TICK']!r} must be between {TICK_MIN:g} and "
                          f"{TICK_MAX:g} seconds (each loop wakes every tick; deadlines fire up to two ticks late)")
    return value


#: Pounce settings whose value is text: environment variable -> (default, documentation).
ENV_TEXT_SETTINGS: Mapping[str, tuple[str, str]] = {
    "POUNCE_STATUS_BIND": (
        "",
        "where each worker serves its status view (JSON and Prometheus): 127.0.0.1:PORT "
        "(worker k takes the first free port from PORT), 127.0.0.1:0, or unix:/path/status-{pid}.sock; "
        "empty: off",
    ),
    "POUNCE_COMPRESSION": (
        "off",
        "response codings in preference order, e.g. gzip,zstd (zstd on CPython 3.14+), or off",
    ),
    "POUNCE_COMPRESSION_TYPES": (
        _compression.DEFAULT_TYPES,
        "media types worth compressing, comma-separated; type/* matches a whole type",
    ),
}


def _env_text(env: Mapping[str, str], name: str) -> str:
    """A text setting from ``ENV_TEXT_SETTINGS``, stripped; empty means the default."""
    raw = env.get(name, "").strip()
    return raw or ENV_TEXT_SETTINGS[name][0]


def _allowed_networks(
    spec: Any,
) -> tuple[bool, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """Gunicorn's ``forwarded_allow_ips`` / ``proxy_allow_ips`` as (allow_all, networks)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec or [])]
    items = [s for s in items if s]
    if "*" in items:
        return True, ()
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue  # unix-socket style entries; gunicorn ignores them for IP peers too
    return False, tuple(nets)


def _disconnect_grace(cfg: Any) -> float:
    """Gunicorn's ``asgi_disconnect_grace_period`` (default 3; 0 cancels at once)."""
    grace = getattr(cfg, "asgi_disconnect_grace_period", 3)
    try:
        value = float(grace)
    except (TypeError, ValueError):
        raise ConfigError(f"asgi_disconnect_grace_period={grace!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"asgi_disconnect_grace_period={grace!r} must not be negative")
    return value


def _root_path(cfg: Any) -> str:
    """Gunicorn's ``root_path`` (``--root-path``), without a trailing slash.

    It is prepended to every request's ``raw_path``, which is bytes of the
    request target (ASCII: RFC 9112 §3.2 and RFC 3986 leave anything else
    percent-encoded). A value that cannot be one must fail the boot, naming the
    setting, rather than fail every request.
    """
    root_path = (getattr(cfg, "root_path", "") or "").rstrip("/")
    if not root_path.isascii() or not root_path.isprintable() or " " in root_path:
        raise ConfigError(
            f"root_path={root_path!r} must be printable ASCII without spaces: it prefixes every "
            "request's raw_path, the bytes of a request target"
        )
    return root_path


def http2_settings(cfg: Any) -> dict[str, Any]:
    """Gunicorn 27's six HTTP/2 settings, checked as Gunicorn's validators check them.

    Gunicorn validates them when they are set; a Config built by other means
    (tests, an older Gunicorn without them) gets Gunicorn's defaults, and an
    out-of-range value fails the boot naming its setting, never a connection.
    """
    protocols = getattr(cfg, "http_protocols", None) or ["h1"]
    if isinstance(protocols, str):
        protocols = [p.strip().lower() for p in protocols.split(",") if p.strip()]
    for proto in protocols:
        if proto not in ("h1", "h2"):
            raise ConfigError(f"http_protocols: {proto!r} is not one of h1, h2")
    cleartext = getattr(cfg, "http2_cleartext", "off")
    if cleartext is True or cleartext is False or cleartext is None:
        cleartext = "prior-knowledge" if cleartext else "off"
    cleartext = str(cleartext).strip().lower()
    if cleartext not in ("off", "prior-knowledge", "upgrade", "both"):
        raise ConfigError(f"http2_cleartext={cleartext!r} is not one of off, prior-knowledge, upgrade, both")
    bounds = {
        "http2_max_concurrent_streams": (100, 1, 2**31 - 1),
        "http2_initial_window_size": (65535, 0, 2**31 - 1),
        "http2_max_frame_size": (16384, 16384, 16777215),
        "http2_max_header_list_size": (65536, 0, 2**32 - 1),
    }
    values: dict[str, Any] = {"http_protocols": tuple(protocols), "http2_cleartext": cleartext}
    for name, (default, low, high) in bounds.items():
        raw = getattr(cfg, name, default)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={value} is outside {low}..{high}")
        values[name] = value
    return values


def share(total: int, loops: int, index: int) -> int:
    """Loop ``index``'s share of ``total`` connections; the shares add up to ``total``."""
    base, extra = divmod(total, loops)
    return max(1, base + (1 if index < extra else 0))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the loop threads need, immutable and shared by all of them."""

    mode: _mode.Mode
    loops: int
    worker_connections: int
    keepalive: float
    timeout: float
    graceful_timeout: float
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    root_path: str
    lifespan: str
    loop_kind: str
    is_ssl: bool
    header_timeout: float
    max_body_size: int
    tick: float
    fast_path: bool
    #: Gunicorn's asgi_disconnect_grace_period: seconds an app whose client left may run on (0: cancelled at once).
    disconnect_grace: float = 3.0
    body_timeout: float = 30.0
    body_min_rate: float = 500.0
    send_timeout: float = 60.0
    forwarded_allow_all: bool = False
    forwarded_allow_nets: tuple[Any, ...] = ()
    secure_scheme_headers: tuple[tuple[bytes, bytes], ...] = ()
    secure_scheme_names: frozenset[bytes] = frozenset()
    forward_script_name: bool = False
    script_name: str = ""
    proxy_protocol: str = "off"
    proxy_allow_all: bool = False
    proxy_allow_nets: tuple[Any, ...] = ()
    #: Gunicorn's protocol: "http" or "uwsgi" (uwsgi.py; check_config refuses anything else).
    protocol: str = "http"
    uwsgi_allow_all: bool = False
    uwsgi_allow_nets: tuple[Any, ...] = ()
    permit_obsolete_folding: bool = False
    permit_unconventional_http_method: bool = False
    server_header: bytes = b"pounce"
    #: Request header names ``proxy.forwarded`` acts on for a trusted peer.
    forwarded_names: frozenset[bytes] = frozenset()
    #: Gunicorn's header_map: what a header name with an underscore gets (drop, refuse or
    #: dangerous), and the names a trusted peer may send anyway (forwarder_headers, lower-cased;
    #: None: every name, for ``*``).
    header_map: str = "drop"
    underscore_forwarded: frozenset[bytes] | None = frozenset()
    status_bind: StatusBind | None = None
    #: Gunicorn's reuse_port where the OS has SO_REUSEPORT: then each worker binds listening
    #: sockets of its own (Gunicorn's spawn_worker), which a stop may close (loop/gate.py).
    reuse_port: bool = False
    #: POUNCE_LIFESPAN_STARTUP_TIMEOUT: seconds a loop's lifespan startup may take (0: no limit).
    lifespan_startup_timeout: float = 30.0
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_per_message_deflate: bool = True
    #: Gunicorn's websocket_max_message_size (0: no limit).
    ws_max_size: int = 16 * 1024 * 1024
    compression: _compression.CompressionPolicy | None = None
    server_timing: bool = False
    #: Gunicorn's http_protocols in preference order, e.g. ("h2", "h1") (see http2_settings).
    http_protocols: tuple[str, ...] = ("h1",)
    #: Gunicorn's http2_cleartext: "off", "prior-knowledge", "upgrade" or "both".
    http2_cleartext: str = "off"
    http2_max_concurrent_streams: int = 100
    http2_initial_window_size: int = 65535
    http2_max_frame_size: int = 16384
    #: 0: no limit (Gunicorn's meaning).
    http2_max_header_list_size: int = 65536
    #: A request head of at most this many bytes cannot break any limit_request_* limit
    #: (derived: its request line is shorter, and it has room for fewer field lines of 4+ bytes).
    head_within_limits: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        bounds = [self.limit_request_line, 4 * self.limit_request_fields, self.limit_request_field_size]
        object.__setattr__(self, "head_within_limits", min((bound for bound in bounds if bound > 0), default=1 << 62))

    @property
    def max_head_size(self) -> int:
        """Upper bound on a request head, handed to h11 so it stops buffering early."""
        line = self.limit_request_line or 65536
        field_size = self.limit_request_field_size or 65536
        fields = self.limit_request_fields or 32768
        return line + 2 + fields * (field_size + 2) + 2

    @property
    def http2(self) -> bool:
        """Whether HTTP/2 may be spoken at all (``h2`` in http_protocols, protocol "http")."""
        return "h2" in self.http_protocols and self.protocol == "http"

    @property
    def alpn_protocols(self) -> list[str]:
        """What TLS offers by ALPN, in http_protocols order (Gunicorn's sock._get_alpn_protocols)."""
        if not self.http2:
            return ["http/1.1"]
        return [{"h1": "http/1.1", "h2": "h2"}[p] for p in self.http_protocols]

    @property
    def h2c_prior_knowledge(self) -> bool:
        """Whether a trusted cleartext peer may open with the HTTP/2 preface."""
        return self.http2 and not self.is_ssl and self.http2_cleartext in ("prior-knowledge", "both")

    @property
    def h2c_upgrade(self) -> bool:
        """Whether a trusted cleartext peer may ask for ``Upgrade: h2c``."""
        return self.http2 and not self.is_ssl and self.http2_cleartext in ("upgrade", "both")

    def connections_for(self, index: int) -> int:
        return share(self.worker_connections, self.loops, index)

    @classmethod
    def from_gunicorn(cls, cfg: Any, env: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if env is None else env
        try:
            chosen, _why = _mode.choose(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        loops = _mode.loop_count(chosen, cfg.threads)
        if cfg.worker_connections < loops:
            raise ConfigError(
                f"worker_connections={cfg.worker_connections} is smaller than the "
                f"{loops} event loops of a worker; each loop needs at least one"
            )
        loop_kind = getattr(cfg, "asgi_loop", "auto")
        if loop_kind not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(f"asgi_loop={loop_kind!r} is not one of: auto, asyncio, uvloop")
        lifespan = getattr(cfg, "asgi_lifespan", "auto")
        if lifespan not in ("auto", "on", "off"):
            raise ConfigError(f"asgi_lifespan={lifespan!r} is not one of: auto, on, off")
        fwd_all, fwd_nets = _allowed_networks(cfg.forwarded_allow_ips)
        proxy_all, proxy_nets = _allowed_networks(cfg.proxy_allow_ips)
        uwsgi_all, uwsgi_nets = _allowed_networks(getattr(cfg, "uwsgi_allow_ips", "127.0.0.1,::1"))
        secure = tuple(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (cfg.secure_scheme_headers or {}).items()
        )
        try:
            compression = _compression.CompressionPolicy.from_settings(
                _env_text(env, "POUNCE_COMPRESSION"),
                _env_text(env, "POUNCE_COMPRESSION_TYPES"),
                int(_env_number(env, "POUNCE_COMPRESSION_MIN_SIZE")),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None  # the message names the setting
        forward_script_name = bool({"SCRIPT_NAME", "*"} & set(cfg.forwarder_headers or ()))
        proxy_protocol = cfg.proxy_protocol
        if proxy_protocol is True:
            proxy_protocol = "auto"
        elif not proxy_protocol or proxy_protocol is False:
            proxy_protocol = "off"
        try:
            status_bind = parse_bind(
                _env_text(env, "POUNCE_STATUS_BIND"),
                allow_remote=bool(_env_number(env, "POUNCE_STATUS_ALLOW_REMOTE")),
                workers=int(getattr(cfg, "workers", 1) or 1),
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            mode=chosen,
            loops=loops,
            worker_connections=cfg.worker_connections,
            keepalive=float(cfg.keepalive),
            timeout=float(cfg.timeout),
            graceful_timeout=float(cfg.graceful_timeout),
            limit_request_line=cfg.limit_request_line,
            limit_request_fields=cfg.limit_request_fields,
            limit_request_field_size=cfg.limit_request_field_size,
            root_path=_root_path(cfg),
            lifespan=lifespan,
            loop_kind=loop_kind,
            is_ssl=bool(cfg.is_ssl),
            header_timeout=_env_number(env, "POUNCE_HEADER_TIMEOUT"),
            max_body_size=int(_env_number(env, "POUNCE_MAX_BODY_SIZE")),
            disconnect_grace=_disconnect_grace(cfg),
            body_timeout=_env_number(env, "POUNCE_BODY_TIMEOUT"),
            body_min_rate=_env_number(env, "POUNCE_BODY_MIN_RATE"),
            send_timeout=_env_number(env, "POUNCE_SEND_TIMEOUT"),
            tick=_tick(env),
            fast_path=bool(_env_number(env, "POUNCE_FAST_PATH")),
            forwarded_allow_all=fwd_all,
            forwarded_allow_nets=fwd_nets,
            secure_scheme_headers=secure,
            secure_scheme_names=frozenset(name for name, _ in secure),
            forward_script_name=forward_script_name,
            header_map=str(getattr(cfg, "header_map", "drop") or "drop"),
            underscore_forwarded=_underscore_forwarded(cfg),
            forwarded_names=frozenset(name for name, _ in secure) | (
                {b"script_name"} if forward_script_name else frozenset()
            ),
            script_name=env.get("SCRIPT_NAME", "").rstrip("/"),
            proxy_protocol=str(proxy_protocol),
            permit_obsolete_folding=bool(getattr(cfg, "permit_obsolete_folding", False)),
            permit_unconventional_http_method=bool(getattr(cfg, "permit_unconventional_http_method", False)),
            proxy_allow_all=proxy_all,
            proxy_allow_nets=proxy_nets,
            protocol=str(getattr(cfg, "protocol", "http")),
            uwsgi_allow_all=uwsgi_all,
            uwsgi_allow_nets=uwsgi_nets,
            status_bind=status_bind,
            # The listeners are this worker's own only where Gunicorn bound them in it: an fd://
            # bind (systemd, a supervisor) is the master's socket, shared by every worker.
            reuse_port=bool(getattr(cfg, "reuse_port", False)) and hasattr(socket, "SO_REUSEPORT")
            and not any(str(address).startswith("fd://") for address in (getattr(cfg, "bind", None) or ())),
            lifespan_startup_timeout=_env_number(env, "POUNCE_LIFESPAN_STARTUP_TIMEOUT"),
            ws_ping_interval=_env_number(env, "POUNCE_WS_PING_INTERVAL"),
            ws_ping_timeout=_env_number(env, "POUNCE_WS_PING_TIMEOUT"),
            ws_per_message_deflate=bool(_env_number(env, "POUNCE_WS_PER_MESSAGE_DEFLATE")),
            ws_max_size=int(getattr(cfg, "websocket_max_message_size", 16 * 1024 * 1024) or 0),
            compression=compression,
            server_timing=bool(_env_number(env, "POUNCE_SERVER_TIMING")),
            **http2_settings(cfg),
        )
