#!/usr/bin/env python3
"""WebSocket echo benchmark: server CPU per message, pounce_worker against its peers (issue 14).

    python bench/ws.py              # full matrix, about 10 minutes
    python bench/ws.py --quick      # smoke run, about 3 minutes
    python bench/ws.py --list       # which servers are installed, then exit
    python bench/ws.py --peers pounce-asyncio,uvicorn --cells 64-text,64k-bin-deflate

Every server serves ``bench.ws_app:app`` (accept, echo each message as it came)
from one worker process, pinned to one CPU; the clients run pinned to the other.
The clients are a few processes of a small raw-socket client (pre-built masked
frames, epoll, one message in flight per connection: ``--connections`` clients
sending one message at a time, as in the issue), cheap enough per message that
the server is what is measured. Cells: 64 B and 64 KiB messages, text and
binary, without and with permessage-deflate (the client offers
``client_no_context_takeover``, so each of its messages is compressed once,
ahead of time; the server keeps its own context).

The figure is **server CPU per echoed message**: utime+stime from
/proc/PID/stat of the server's worker processes (the master's descendants; the
master itself is reported apart), sampled at the start and end of each measured
window, divided by the messages echoed in it. Wall time is not used for it, so
other work on the machine hardly moves it; msg/s is reported too. The table
gives each server's ratio to UvicornWorker (uvicorn's default WebSocket
implementation, websockets' sans-I/O protocol, on uvloop + httptools).

Servers are started in their own session (process group = their PID), stopped
with SIGTERM to that PID, then SIGKILL to that group after 15 s; nothing else is
signalled. Results: ``bench/results/ws-<tag>.json`` and ``.txt``; server logs
in ``bench/results/logs/ws-<tag>/`` (not committed). See bench/README.rst.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import http.client
import importlib.util
import json
import multiprocessing
import os
import platform
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
APP = "bench.ws_app:app"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MASK = b"\x37\xfa\x21\x3d"
#: Offered when a cell asks for compression; see the module docstring.
DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover; client_max_window_bits"


# -- servers -------------------------------------------------------------------------------------


def gunicorn_cmd(py: str, worker: str, port: int, *extra: str) -> list[str]:
    return [py, "-m", "gunicorn", "-k", worker, "-b", f"{HOST}:{port}", "--workers", "1",
            "--no-control-socket", "--error-logfile", "-", "--log-level", "info",
            "--graceful-timeout", "5", *extra, APP]


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    needs: tuple[str, ...]

    def cmd(self, py: str, port: int) -> list[str]:
        if self.key == "pounce-asyncio":
            return gunicorn_cmd(py, "pounce_worker.ThreadWorker", port, "--asgi-loop", "asyncio")
        if self.key == "pounce-uvloop":
            return gunicorn_cmd(py, "pounce_worker.ThreadWorker", port, "--asgi-loop", "uvloop")
        if self.key == "uvicorn":
            return gunicorn_cmd(py, "uvicorn_worker.UvicornWorker", port)
        if self.key == "uvicorn-wsproto":
            return gunicorn_cmd(py, "bench.ws_app.UvicornWsprotoWorker", port)
        if self.key == "gunicorn-asgi":
            return gunicorn_cmd(py, "asgi", port, "--asgi-loop", "uvloop")
        if self.key == "granian":
            return [py, "-m", "granian", "--interface", "asgi", "--http", "1", "--workers", "1",
                    "--host", HOST, "--port", str(port), "--log-level", "info", APP]
        raise KeyError(self.key)


PEERS = (
    Peer("pounce-asyncio", "pounce_worker (asyncio, wsproto)", ("gunicorn", "pounce_worker", "wsproto")),
    Peer("pounce-uvloop", "pounce_worker (uvloop, wsproto)", ("gunicorn", "pounce_worker", "wsproto", "uvloop")),
    Peer("uvicorn", "UvicornWorker (websockets-sansio, uvloop)",
         ("gunicorn", "uvicorn", "uvicorn_worker", "websockets", "uvloop", "httptools")),
    Peer("uvicorn-wsproto", "UvicornWorker --ws wsproto (uvloop)",
         ("gunicorn", "uvicorn", "uvicorn_worker", "wsproto", "uvloop", "httptools")),
    Peer("gunicorn-asgi", "gunicorn -k asgi (uvloop)", ("gunicorn", "gunicorn.asgi.websocket", "uvloop")),
    Peer("granian", "granian (asgi)", ("granian",)),
)
PEER_KEYS = tuple(p.key for p in PEERS)
REFERENCE = "uvicorn"


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


# -- /proc ---------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def sleeps(pid: int) -> int:
    """Times the threads of ``pid`` blocked (voluntary context switches): a server that answers
    faster than the next message arrives sleeps and is woken once per message or so, and each
    wake-up costs kernel time that grows with the machine's load (the hog it preempts)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


# -- the client ----------------------------------------------------------------------------------


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


def client(port: int, cell: Cell, nconns: int, index: int, counts: Any, status: Any, stop: Any) -> None:
    """One client process: ``nconns`` connections, each echoing one message at a time until ``stop``."""
    try:
        opcode = 2 if cell.binary else 1
        data = payload(cell.size)
        conns = [handshake(port, cell.deflate) for _ in range(nconns)]
        negotiated = all("permessage-deflate" in ext for _, _, ext in conns)
        if cell.deflate and negotiated:
            wbits = 15
            for part in conns[0][2].split(";"):
                name, _, value = part.strip().partition("=")
                if name == "client_max_window_bits" and value:
                    wbits = int(value.strip('"'))
            compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -wbits)
            body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            out = frame(opcode, body[:-4] if body.endswith(b"\x00\x00\xff\xff") else body, rsv1=True)
        else:
            out = frame(opcode, data)
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


# -- the run -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, peer: Peer, py: str, log_dir: Path, cpu: int | None) -> None:
        self.peer = peer
        self.port = free_port()
        self.log_path = log_dir / f"{peer.key}.log"
        cmd = peer.cmd(py, self.port)
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.cmd = cmd
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer.key} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                conn.request("GET", "/")
                if conn.getresponse().status == 200 and self.workers():
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.peer.key} did not answer within {timeout} s; see {self.log_path}")

    def workers(self) -> list[int]:
        return descendants(self.pid)

    def cpu(self) -> tuple[float, float]:
        """(workers, master) CPU seconds; a server without children counts as its own worker."""
        workers = self.workers()
        master = cpu_seconds(self.pid)
        if not workers:
            return master, 0.0
        return sum(cpu_seconds(p) for p in workers), master

    def sleeps(self) -> int:
        """Voluntary context switches of the workers (of the server itself without children)."""
        return sum(sleeps(p) for p in self.workers() or [self.pid])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # leftovers of a master that died
            except ProcessLookupError:
                pass
        self.log.close()

    def problems(self) -> list[str]:
        text = self.log_path.read_text(errors="replace")
        lines = [ln for ln in text.splitlines()
                 if any(w in ln for w in ("Traceback", "ERROR", "Booting worker"))]
        boots = sum("Booting worker" in ln for ln in lines)
        out = [ln for ln in lines if "Booting worker" not in ln][:5]
        if boots > 1:
            out.insert(0, f"{boots} worker boots (restarts)")
        return out


def check(server: Server, cell: Cell) -> str | None:
    """One echo through the ``websockets`` client: the right bytes and type come back; None when fine."""
    try:
        from websockets.sync.client import connect
    except ImportError:
        return None
    data: Any = payload(cell.size)
    if not cell.binary:
        data = data.decode()
    try:
        with connect(f"ws://{HOST}:{server.port}/echo", compression="deflate" if cell.deflate else None,
                     max_size=None, open_timeout=5) as ws:
            ws.send(data)
            got = ws.recv(timeout=5)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if got != data:
        return f"echo differs: sent {type(data).__name__} of {len(data)}, got {type(got).__name__} of {len(got)}"
    return None


def measure(server: Server, cell: Cell, args: argparse.Namespace) -> dict[str, Any]:
    nprocs = args.client_procs
    per = [args.connections // nprocs + (1 if i < args.connections % nprocs else 0) for i in range(nprocs)]
    ctx = multiprocessing.get_context("fork")
    counts = ctx.Array("q", nprocs, lock=False)
    status = ctx.Array("i", 2 * nprocs, lock=False)
    stop = ctx.Array("b", 1, lock=False)
    procs = [ctx.Process(target=client, args=(server.port, cell, per[i], i, counts, status, stop), daemon=True)
             for i in range(nprocs)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 15
        while any(status[2 * i] == 0 for i in range(nprocs)):
            if time.monotonic() > deadline or any(status[2 * i] == -1 for i in range(nprocs)):
                raise RuntimeError("clients did not connect")
            time.sleep(0.01)
        for i in range(nprocs):
            status[2 * i] = 2  # go
        time.sleep(args.warmup)

        def snap() -> tuple[float, int, float, float, float, float, int]:
            workers, master = server.cpu()
            return (time.monotonic(), sum(counts), workers, master,
                    sum(cpu_seconds(p.pid) for p in procs if p.pid), machine_busy(), server.sleeps())

        a = snap()
        time.sleep(args.duration)
        b = snap()
        failed = any(status[2 * i] == -1 for i in range(nprocs))
    finally:
        stop[0] = 1
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    dt, msgs = b[0] - a[0], b[1] - a[1]
    srv, master, cli, busy = b[2] - a[2], b[3] - a[3], b[4] - a[4], b[5] - a[5]
    return {
        "seconds": dt, "messages": msgs, "msg_s": msgs / dt if dt else 0.0,
        "us_per_msg": srv / msgs * 1e6 if msgs else None,
        "sleeps_per_msg": (b[6] - a[6]) / msgs if msgs else None,
        "srv_pct": srv / dt * 100, "master_pct": master / dt * 100, "cli_pct": cli / dt * 100,
        "oth_pct": max(0.0, (busy - srv - master - cli) / dt * 100),
        "deflate": bool(all(status[2 * i + 1] for i in range(nprocs))),
        "failed": failed,
    }


def installed(py: str, modules: tuple[str, ...]) -> list[str]:
    code = ("import importlib.util,sys\n"
            "for m in sys.argv[1:]:\n"
            "    try: print(m, importlib.util.find_spec(m) is not None)\n"
            "    except ModuleNotFoundError: print(m, False)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([py, "-c", code, *modules], capture_output=True, text=True, env=env, cwd=ROOT).stdout
    return [line.split()[0] for line in out.splitlines() if line.endswith("False")]


def versions(py: str) -> dict[str, str]:
    code = ("import importlib.metadata as m,sys,json\nout={'python': sys.version.split()[0]}\n"
            "for d in ['gunicorn','wsproto','websockets','uvicorn','uvicorn-worker','uvloop','httptools','granian']:\n"
            "    try: out[d]=m.version(d)\n    except Exception: pass\nprint(json.dumps(out))")
    res = subprocess.run([py, "-c", code], capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else {}


def _fmt(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _median(values: list[float | None], fmt: str) -> str:
    known = [v for v in values if v is not None]
    return format(statistics.median(known), fmt) if known else "-"


def table(results: dict[str, Any], peers: list[Peer], cells: list[Cell]) -> str:
    lines = []
    for cell in cells:
        lines.append(f"\n{cell.key}: {cell.size} B {'binary' if cell.binary else 'text'} messages"
                     f"{', permessage-deflate offered' if cell.deflate else ''}")
        lines.append(f"  {'server':<44} {'msg/s (min-max)':>24} {'srv us/msg (min-max)':>24} "
                     f"{'/uvicorn':>8} {'srv%':>5} {'cli%':>5} {'oth%':>5} {'slp/msg':>7}")
        ref = results.get(REFERENCE, {}).get(cell.key, {})
        ref_us = ref.get("us_median")
        for peer in peers:
            r = results.get(peer.key, {}).get(cell.key)
            if r is None:
                continue
            if r.get("error"):
                lines.append(f"  {peer.label:<44} failed: {r['error']}")
                continue
            runs = r["runs"]
            us = [x["us_per_msg"] for x in runs if x["us_per_msg"]]
            ratio = f"{r['us_median'] / ref_us:.2f}" if ref_us and r.get("us_median") else "-"
            note = "" if not cell.deflate or r["deflate"] else "  (deflate declined: plain frames)"
            lines.append(
                f"  {peer.label:<44} {_fmt([x['msg_s'] for x in runs], ',.0f'):>24} {_fmt(us, '.1f'):>24} "
                f"{ratio:>8} {statistics.median(x['srv_pct'] for x in runs):>5.0f} "
                f"{statistics.median(x['cli_pct'] for x in runs):>5.0f} "
                f"{statistics.median(x['oth_pct'] for x in runs):>5.0f} "
                f"{_median([x.get('sleeps_per_msg') for x in runs], '.2f'):>7}"
                f"{note}"
            )
    lines.append("\nsrv us/msg: server worker CPU (utime+stime) per echoed message, median of the runs; "
                 "/uvicorn: that over UvicornWorker's (lower is cheaper). srv%/cli%/oth%: CPU of the server's "
                 "workers, of the clients and of everything else, in % of one core. slp/msg: times the "
                 "server's threads blocked (voluntary context switches) per message, median: a server that "
                 "sleeps more per message pays more kernel time per wake-up on a loaded machine.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 x 2 s per cell after 0.5 s warm-up")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--peers", default=",".join(PEER_KEYS))
    ap.add_argument("--cells", default=",".join(CELLS), help="of: " + ", ".join(CELLS))
    ap.add_argument("--duration", type=float)
    ap.add_argument("--reps", type=int)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the servers")
    ap.add_argument("--tag")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "results")
    args = ap.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 3.0)
    args.reps = args.reps or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    tag = args.tag or ("quick" if args.quick else "full")

    wanted = [k.strip() for k in args.peers.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in PEER_KEYS]
    if unknown:
        ap.error(f"unknown peers {unknown}; keys: {', '.join(PEER_KEYS)}")
    cells = [CELLS[k.strip()] for k in args.cells.split(",") if k.strip()]
    peers, skipped = [], {}
    for peer in PEERS:
        if peer.key in wanted:
            missing = installed(args.python, peer.needs)
            if missing:
                skipped[peer.key] = f"not installed: {', '.join(missing)}"
            else:
                peers.append(peer)
    for key, why in skipped.items():
        print(f"skipped {key}: {why}")
    if args.list:
        for peer in peers:
            print(f"installed {peer.key}: {peer.label}")
        return 0
    if not peers:
        print("no server to run")
        return 1
    if not args.no_pin:
        os.sched_setaffinity(0, {args.client_cpu})  # the clients (forked) and this script's sampling
    log_dir = args.out_dir / "logs" / f"ws-{tag}"
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: dict[str, Server] = {}
    results: dict[str, dict[str, Any]] = {p.key: {} for p in peers}
    started = _dt.datetime.now(_dt.timezone.utc)
    try:
        for peer in peers:
            servers[peer.key] = Server(peer, args.python, log_dir, None if args.no_pin else args.server_cpu)
        for key, server in list(servers.items()):
            try:
                server.wait_ready()
            except RuntimeError as exc:
                print(f"{key}: {exc}")
                for cell in cells:
                    results[key][cell.key] = {"error": str(exc)}
                server.stop()
                del servers[key]
        for cell in cells:
            live = []
            for key, server in servers.items():
                problem = check(server, cell)
                if problem:
                    results[key][cell.key] = {"error": f"check failed: {problem}"}
                    print(f"{cell.key} {key}: check failed: {problem}")
                else:
                    results[key][cell.key] = {"runs": []}
                    live.append(key)
            for rep in range(args.reps):
                order = live[rep % len(live):] + live[:rep % len(live)] if live else []
                for key in order:
                    cell_result = results[key][cell.key]
                    if cell_result.get("error"):
                        continue
                    try:
                        run = measure(servers[key], cell, args)
                    except RuntimeError as exc:
                        cell_result["error"] = str(exc)
                        print(f"{cell.key} {key}: {exc}")
                        continue
                    cell_result["runs"].append(run)
                    print(f"{cell.key:<18} {key:<16} rep {rep + 1}: {run['msg_s']:>9,.0f} msg/s "
                          f"{run['us_per_msg'] or 0:>7.1f} us/msg srv {run['srv_pct']:>3.0f}% "
                          f"cli {run['cli_pct']:>3.0f}% oth {run['oth_pct']:>3.0f}% "
                          f"slp/msg {run['sleeps_per_msg'] or 0:.2f}"
                          f"{'' if run['deflate'] or not cell.deflate else ' (no deflate)'}", flush=True)
            for key in live:
                r = results[key][cell.key]
                runs = r.get("runs") or []
                us = [x["us_per_msg"] for x in runs if x["us_per_msg"]]
                r["us_median"] = statistics.median(us) if us else None
                r["msg_s_median"] = statistics.median(x["msg_s"] for x in runs) if runs else None
                r["deflate"] = all(x["deflate"] for x in runs) if runs else False
    except KeyboardInterrupt:
        print("interrupted: writing partial results")
    finally:
        problems = {}
        for key, server in servers.items():
            server.stop()
            found = server.problems()
            if found:
                problems[key] = found
    text = table(results, peers, cells)
    pin = "no pinning" if args.no_pin else f"server on CPU {args.server_cpu}, clients on CPU {args.client_cpu}"
    header = (f"bench/ws.py {tag}: {started:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
              f"{args.connections} connections in {args.client_procs} client processes, "
              f"{args.reps} x {args.duration:g} s per cell after {args.warmup:g} s warm-up, "
              f"{pin}")
    vers = versions(args.python)
    header += "\n" + ", ".join(f"{k} {v}" for k, v in vers.items())
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "pounce_worker"],
                           capture_output=True, text=True).stdout.split()
    header += f"\npounce_worker at {commit}{' + uncommitted changes' if dirty else ''}"
    if problems:
        text += "\n\nProblems seen in the server logs:\n" + "\n".join(
            f"  {k}: {line}" for k, lines in problems.items() for line in lines)
    out = header + "\n" + text + "\n"
    print("\n" + out)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"ws-{tag}.txt").write_text(out)
    (args.out_dir / f"ws-{tag}.json").write_text(json.dumps({
        "tag": tag, "started": started.isoformat(), "commit": commit, "dirty": bool(dirty),
        "versions": vers, "args": {k: str(v) for k, v in vars(args).items()},
        "cpu_model": _cpu_model(), "commands": {k: s.cmd for k, s in servers.items()},
        "skipped": skipped, "problems": problems, "results": results,
    }, indent=1))
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    if importlib.util.find_spec("bench") is None:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
