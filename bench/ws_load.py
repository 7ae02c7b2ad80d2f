"""The load of bench/ws.py: client processes echoing one message at a time per connection.

Two clients, one interface (``Load``):

* ``compiled`` (the default where ``cc`` builds bench/ws_load.c): the upgrade is done here
  in Python, then a C process per ``--client-procs`` echoes on the inherited sockets. It
  costs a few microseconds per message, so the server always has work queued and its CPU
  per message is its work per message.
* ``python`` (bench/ws_client.py): a pure-Python epoll client. Per message it costs about
  what a server does, so the two fall into a lock-step in which each sleeps while the other
  works, and a server's figure depends on how often it is woken: one that answers faster
  sleeps more, and a wake-up on a loaded core costs more (bench/README.rst, WebSockets).

Both count echoed messages in memory shared with this process and are stopped by their
PID (SIGTERM, then SIGKILL); nothing else is signalled.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ws_client import Cell, client, client_frame, handshake

SOURCE = Path(__file__).with_name("ws_load.c")


def build() -> tuple[Path | None, str]:
    """The compiled client (built once per source version, in the temp dir), or None and why."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc or gcc) on PATH"
    source = SOURCE.read_bytes()
    target = Path(tempfile.gettempdir()) / f"pounce-bench-ws_load-{hashlib.sha256(source).hexdigest()[:12]}"
    if target.exists():
        return target, ""
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run([compiler, "-O2", "-o", str(partial), str(SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"{compiler} failed: {done.stderr.strip()[:300]}"
    partial.replace(target)
    return target, ""


def split(connections: int, procs: int) -> list[int]:
    return [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]


class Load:
    """Client processes echoing on ``connections`` connections; ``count()`` is messages echoed so far."""

    pids: list[int]

    def count(self) -> int:
        raise NotImplementedError

    def failed(self) -> bool:
        raise NotImplementedError

    def deflate(self) -> bool:
        """Whether every connection negotiated permessage-deflate."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class PythonLoad(Load):
    def __init__(self, port: int, cell: Cell, connections: int, procs: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.counts = ctx.Array("q", procs, lock=False)
        self.status = ctx.Array("i", 2 * procs, lock=False)
        self.stop_flag = ctx.Array("b", 1, lock=False)
        per = split(connections, procs)
        self.procs = [ctx.Process(target=client, args=(port, cell, per[i], i, self.counts, self.status,
                                                       self.stop_flag), daemon=True) for i in range(procs)]
        for p in self.procs:
            p.start()
        self.pids = [p.pid for p in self.procs if p.pid]
        deadline = time.monotonic() + 15
        while any(self.status[2 * i] == 0 for i in range(procs)):
            if time.monotonic() > deadline or self.failed():
                self.stop()
                raise RuntimeError("clients did not connect")
            time.sleep(0.01)
        for i in range(procs):
            self.status[2 * i] = 2  # go

    def count(self) -> int:
        return sum(self.counts)

    def failed(self) -> bool:
        return any(self.status[2 * i] == -1 for i in range(len(self.procs)))

    def deflate(self) -> bool:
        return all(self.status[2 * i + 1] for i in range(len(self.procs)))

    def stop(self) -> None:
        self.stop_flag[0] = 1
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()


class CompiledLoad(Load):
    def __init__(self, binary: Path, port: int, cell: Cell, connections: int, procs: int) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="pounce-ws-load-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.maps: list[mmap.mmap] = []
        socks: list[Any] = []
        try:
            conns = [handshake(port, cell.deflate) for _ in range(connections)]
            socks = [sock for sock, _rest, _ext in conns]
            if any(rest for _sock, rest, _ext in conns):
                raise RuntimeError("unexpected bytes after the handshake")
            frame, self.negotiated = client_frame(cell, [ext for _sock, _rest, ext in conns])
            frame_file = Path(self.dir.name) / "frame"
            frame_file.write_bytes(frame)
            start = 0
            for i, n in enumerate(split(connections, procs)):
                counter = Path(self.dir.name) / f"count-{i}"
                counter.write_bytes(bytes(8))
                with open(counter, "r+b") as f:
                    self.maps.append(mmap.mmap(f.fileno(), 8))
                fds = [s.fileno() for s in socks[start:start + n]]
                start += n
                self.procs.append(subprocess.Popen([str(binary), str(frame_file), str(counter), *map(str, fds)],
                                                   pass_fds=fds, start_new_session=True, stdin=subprocess.DEVNULL))
        except OSError as exc:  # ConnectionError among them: a handshake refused or cut
            self.stop()
            raise RuntimeError(f"clients did not connect: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        finally:
            for sock in socks:  # the client processes hold their own copies
                sock.close()
        self.pids = [p.pid for p in self.procs]

    def count(self) -> int:
        return sum(struct.unpack("=Q", m[:8])[0] for m in self.maps)

    def failed(self) -> bool:
        return any(p.poll() not in (None, 0) for p in self.procs)

    def deflate(self) -> bool:
        return self.negotiated

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # its own session: the group id is its PID
                p.wait()
        for m in self.maps:
            m.close()
        self.maps = []
        self.dir.cleanup()
