"""The marker every process the suite starts carries, and the session's last-resort cleanup by it."""

from __future__ import annotations

import contextlib
import os
import signal as _signal
import time
from pathlib import Path

# -- the processes the suite starts -----------------------------------------------------------------

#: In every process the suite starts (through os.environ): a value unique to one pytest
#: process (each xdist worker has its own), set by tests/conftest.py.
SESSION_ENV = "POUNCE_TEST_SESSION"
#: In every process of one ``Gunicorn`` (master and workers): a value unique to that server.
SERVER_ENV = "POUNCE_TEST_SERVER"


def marked_processes(name: str, value: str) -> dict[int, str]:
    """``{pid: command line}`` of live processes whose environment has ``name=value`` (not this one)."""
    needle = f"{name}={value}".encode()
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
            if needle not in environ.split(b"\0"):
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone, or a zombie (its environ reads empty)
            continue
        found[int(entry.name)] = cmdline
    return found


def kill_marked(name: str, value: str, grace: float = 0.0) -> dict[int, str]:
    """Wait up to ``grace`` seconds for the marked processes to end, then SIGKILL the rest by PID.

    Returns what had to be killed. Only processes carrying ``name=value`` (ours) are touched.
    """
    deadline = time.monotonic() + grace
    survivors = marked_processes(name, value)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.1)
        survivors = marked_processes(name, value)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, _signal.SIGKILL)
    return survivors


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in KiB (``VmRSS`` now, ``VmHWM`` the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")
