"""POUNCE_STATUS_BIND parsed: where each worker's status view listens.

Apart from the listener so the frozen config (config.py) can validate the setting at
boot without importing a server.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

BIND_ENV = "POUNCE_STATUS_BIND"
ALLOW_REMOTE_ENV = "POUNCE_STATUS_ALLOW_REMOTE"
#: Ports beyond ``workers`` a worker may also try: room for the workers TTIN adds, which the
#: setting cannot know of (the arbiter counts them; ``workers`` in the config does not change).
TTIN_HEADROOM = 32
#: Seconds one status client may take to send its request; the view serves one client at a time.

# -- the setting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusBind:
    """Where each worker's status view listens, as parsed from ``POUNCE_STATUS_BIND``.

    ``span`` is how many consecutive ports a worker may try from ``port``:
    twice the number of workers, so a replacement worker booting while the
    one it replaces still drains finds a free port, and at least
    ``TTIN_HEADROOM`` more than the workers, so workers added by TTIN find one too.
    """

    family: int
    host: str = ""
    port: int = 0
    path: str = ""
    span: int = 1

    def candidates(self, pid: int) -> list[Any]:
        """The addresses this worker tries, in order."""
        if self.family == socket.AF_UNIX:
            return [self.path.replace("{pid}", str(pid))]
        if self.port == 0:
            return [(self.host, 0)]
        return [(self.host, port) for port in range(self.port, min(65536, self.port + self.span))]


def parse_bind(text: str, allow_remote: bool, workers: int) -> StatusBind | None:
    """``POUNCE_STATUS_BIND`` to a ``StatusBind``; None when empty (the view is off).

    Accepts ``HOST:PORT`` with an IP literal or ``localhost`` (``[::1]:PORT``
    for IPv6) and ``unix:PATH`` where PATH contains ``{pid}``. Raises
    ``ValueError`` naming the setting for anything else, and for a
    non-loopback host unless ``POUNCE_STATUS_ALLOW_REMOTE=1``: the view tells
    anyone who can reach it how loaded the worker is.
    """
    text = text.strip()
    if not text:
        return None
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if "{pid}" not in path or not path.startswith("/"):
            raise ValueError(
                f"{BIND_ENV}={text!r}: a unix socket path must be absolute and contain {{pid}} "
                "so that every worker process gets its own file, e.g. unix:/run/pounce/status-{pid}.sock"
            )
        return StatusBind(socket.AF_UNIX, path=path)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(
            f"{BIND_ENV}={text!r} is not HOST:PORT (e.g. 127.0.0.1:9100, [::1]:9100) "
            "or unix:PATH-with-{pid}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{BIND_ENV}={text!r}: the host must be an IP address or localhost") from None
    if not address.is_loopback and not allow_remote:
        raise ValueError(
            f"{BIND_ENV}={text!r} is not a loopback address; the status view is meant for "
            f"operators on the machine. Set {ALLOW_REMOTE_ENV}=1 to expose it anyway."
        )
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return StatusBind(family, host=host, port=int(port_text), span=max(2 * workers, workers + TTIN_HEADROOM))


