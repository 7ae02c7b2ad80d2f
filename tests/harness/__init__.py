"""Run a real ``gunicorn`` master in a subprocess and talk to it over loopback.

Every test server is a real arbiter with real forked workers, started with the
interpreter running the tests (so the same suite exercises 3.11, 3.13 or a
free-threaded build). The listening socket is created here and handed over as
``fd://N``: the port is known before gunicorn starts and no other process can
race us for it. Processes are stopped by the PID we started, never by name.

No port is ever probed and then bound later (another test, or any process,
could take it in between): a server either gets a socket made here (``fd://N``),
or binds port 0 itself and the port is read back (uvicorn in tests/compat), or,
when it must bind a port by number itself (``bind_fd=False``, nginx,
systemd-socket-activate: all set SO_REUSEADDR), gets a port this process keeps
reserved (``reserve_port``) until the server listens on it or stops.

Every process the suite starts carries ``SESSION_ENV`` (set per pytest process by
tests/conftest.py) in its environment, and every ``Gunicorn`` its own
``SERVER_ENV``: ``stop()`` kills what is left of a master's process tree (workers
orphaned by a SIGKILLed master), and the session ends by killing, by PID, and
naming anything still carrying the session's marker (``marked_processes``).

The package: ``ports`` (sockets made here), ``processes`` (the session marker),
``gunicorn`` (a real master), ``client`` (raw HTTP/1.1), ``waiting`` (observing, not sleeping),
``conf`` (conf/ examples, config files, tools), ``settings`` (subject and reference servers).
Everything public is importable from ``tests.harness``.
"""

from __future__ import annotations

from tests.harness.client import (
    ParsedResponse,
    RawConnection,
    build_request,
    exchange,
    http_request,
    parse_response,
    raw_request,
    read_until_close,
    response_statuses,
)
from tests.harness.conf import (
    CONF,
    CONF_ENV,
    GUNICORN_CONF,
    WORKER_BOOT_LINE,
    ConfGunicorn,
    conf_environ,
    conf_values,
    require_tool,
    write_config,
)
from tests.harness.gunicorn import BOOT_TIMEOUT, LIVE, Gunicorn, serve
from tests.harness.ports import HOST, ROOT, listening_socket, reserve_port, reserve_port_run
from tests.harness.processes import SERVER_ENV, SESSION_ENV, kill_marked, marked_processes, proc_status_kb
from tests.harness.settings import SETTINGS_WORKER_ENV, config_file, reference, running, subject
from tests.harness.waiting import poll_until, stamp_until, wait_accepted, wait_connections, wait_until

__all__ = [
    "BOOT_TIMEOUT",
    "CONF",
    "CONF_ENV",
    "GUNICORN_CONF",
    "HOST",
    "LIVE",
    "ROOT",
    "SERVER_ENV",
    "SESSION_ENV",
    "SETTINGS_WORKER_ENV",
    "WORKER_BOOT_LINE",
    "ConfGunicorn",
    "Gunicorn",
    "ParsedResponse",
    "RawConnection",
    "build_request",
    "conf_environ",
    "conf_values",
    "config_file",
    "exchange",
    "http_request",
    "kill_marked",
    "listening_socket",
    "marked_processes",
    "parse_response",
    "poll_until",
    "proc_status_kb",
    "raw_request",
    "read_until_close",
    "reference",
    "require_tool",
    "reserve_port",
    "reserve_port_run",
    "response_statuses",
    "running",
    "serve",
    "stamp_until",
    "subject",
    "wait_accepted",
    "wait_connections",
    "wait_until",
    "write_config",
]
