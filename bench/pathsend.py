#!/usr/bin/env python3
"""pathsend against a streamed body: the same file, served both ways by pounce_worker.

    python bench/pathsend.py               # a 100 MB file, 5 downloads each way
    python bench/pathsend.py --size-mb 20 --downloads 3

One gunicorn master (one worker, asyncio, process mode) per way, started fresh
so each worker's peak RSS (VmHWM) belongs to that way alone. ``/pathsend``
hands the file to ``loop.sendfile`` (``os.sendfile``); ``/filestream`` reads it
in 64 KiB blocks and sends each as an ``http.response.body`` message (what an
app does without the extension). The client reads on loopback and throws the
bytes away. Reported per way: wall time per download (median), the worker's
CPU seconds per download and its peak RSS against its RSS before the first one.
Processes are stopped by the PID started here.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _download(port: int, path: str, size: int) -> float:
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        received = 0
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            received += n
    if received < size:
        raise RuntimeError(f"{path}: got {received} bytes, expected at least {size}")
    return time.perf_counter() - started


def measure(python: str, file: Path, way: str, downloads: int) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, BENCH_FILE=str(file), POUNCE_WORKER_MODE="processes",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    cmd = [python, "-m", "gunicorn", "-k", "pounce_worker.ThreadWorker", "--asgi-loop", "asyncio",
           "-b", f"{HOST}:{port}", "--workers", "1", "--no-control-socket", "--log-level", "warning",
           "--chdir", str(ROOT), "bench.apps:app"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            workers = _children(proc.pid)
            if workers:
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        time.sleep(0.5)
        worker = workers[0]
        rss_before = _status_kb(worker, "VmRSS")
        cpu_before = _cpu_s(worker)
        times = [_download(port, f"/{way}", file.stat().st_size) for _ in range(downloads)]
        cpu = (_cpu_s(worker) - cpu_before) / downloads
        peak = _status_kb(worker, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    size_mb = file.stat().st_size / 1e6
    wall = statistics.median(times)
    return {"wall_s": wall, "mb_per_s": size_mb / wall, "cpu_s": cpu,
            "rss_before_mb": rss_before / 1024, "peak_rss_mb": peak / 1024, "growth_mb": (peak - rss_before) / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--downloads", type=int, default=5)
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pounce-pathsend-") as tmp:
        file = Path(tmp) / "file.bin"
        with open(file, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1_000_000))
        print(f"{args.size_mb} MB file, {args.downloads} downloads each way, loopback, "
              f"{subprocess.run([args.python, '-V'], capture_output=True, text=True).stdout.strip()}")
        print(f"{'way':<12}{'wall s':>9}{'MB/s':>9}{'worker cpu s':>14}{'RSS before':>12}{'peak RSS':>10}"
              f"{'growth':>9}")
        for way in ("pathsend", "filestream"):
            r = measure(args.python, file, way, args.downloads)
            print(f"{way:<12}{r['wall_s']:>9.3f}{r['mb_per_s']:>9.0f}{r['cpu_s']:>14.3f}"
                  f"{r['rss_before_mb']:>11.1f}M{r['peak_rss_mb']:>9.1f}M{r['growth_mb']:>8.1f}M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
