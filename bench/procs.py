"""Processes for the benchmarks: started in their own session, stopped by their PID, measured from /proc.

Every server and client a benchmark starts is its own process group whose id is
the PID we got back; it is stopped by that PID (SIGTERM, then SIGKILL to the
group if anything lingers) and nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat_fields(pid) is None:
            continue
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _number_field(path: str, name: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_kb(pids: Sequence[int]) -> tuple[int, int | None]:
    """(summed VmRSS, summed Pss) of ``pids`` in KiB; Pss is None if smaps_rollup is unavailable."""
    rss, pss, have_pss = 0, 0, True
    for pid in pids:
        rss += _number_field(f"/proc/{pid}/status", "VmRSS:") or 0
        value = _number_field(f"/proc/{pid}/smaps_rollup", "Pss:")
        if value is None:
            have_pss = False
        else:
            pss += value
    return rss, (pss if have_pss else None)


def descendants(root: int) -> list[int]:
    """The live processes below ``root``: a gunicorn master's workers, granian's workers."""
    return [pid for pid in process_tree(root) if pid != root]


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime+stime of ``pids`` in seconds."""
    return cpu_ticks(pids) / CLK_TCK


def voluntary_switches(pids: Sequence[int]) -> int:
    """Times the threads of ``pids`` blocked (voluntary context switches), from /proc/PID/task/*/status."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            total += _number_field(f"/proc/{pid}/task/{tid}/status", "voluntary_ctxt_switches:") or 0
    return total


def busy_ticks() -> int:
    """CPU ticks spent on anything but idle and iowait, all CPUs, from /proc/stat.

    Only the first eight columns (user .. steal): guest and guest_nice are already in user and nice.
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return sum(values) - values[3] - values[4]


def cpus_allowed(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Samples the memory of a server's process tree every ``interval`` seconds."""

    def __init__(self, root: int, interval: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.interval = interval
        self.samples: list[tuple[int, int | None, int]] = []
        self.pids_seen: set[int] = set()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        pids = process_tree(self.root)
        self.pids_seen.update(pids)
        rss, pss = memory_kb(pids)
        self.samples.append((rss, pss, len(pids)))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def __enter__(self) -> Sampler:
        self.sample()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.sample()

# -- process handling -----------------------------------------------------------------------------

#: Every process group we started and have not reaped yet, for the emergency cleanup.
_LIVE: dict[int, subprocess.Popen[Any]] = {}


def spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(list(cmd), start_new_session=True, **kwargs)
    _LIVE[proc.pid] = proc
    return proc


def exit_status(proc: subprocess.Popen[Any]) -> int | None:
    """The exit status if the process has ended, else None; it is NOT reaped.

    A zombie keeps its PID, and so its process group id, reserved: while we have
    not reaped the server, SIGKILL to its group cannot reach anyone else's process.
    """
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return -1
    return None if info is None else info.si_status


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def terminate(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM the process we started; SIGKILL its group (id = its PID) if anything lingers; then reap it."""
    pgid = proc.pid
    try:
        if proc.returncode is not None:
            return  # already reaped: its PID may belong to someone else by now
        if exit_status(proc) is None:
            os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while exit_status(proc) is None and time.monotonic() < deadline:
                time.sleep(0.05)
        deadline = time.monotonic() + 3.0
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    finally:
        _LIVE.pop(proc.pid, None)


def forget(proc: subprocess.Popen[Any]) -> None:
    """``proc`` was reaped by its caller (``communicate``): nothing to clean up for it."""
    _LIVE.pop(proc.pid, None)


def cleanup_all() -> None:
    for proc in list(_LIVE.values()):
        terminate(proc, timeout=5.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
