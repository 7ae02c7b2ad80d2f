"""Servers under test and a frame-level HTTP/2 peer for the HTTP/2 suites.

Every test runs against each row of ``SERVERS``: Gunicorn 27's own ``-k asgi`` with HTTP/2
on (its reference implementation, also h2-based) and ``-k pounce_worker.ThreadWorker`` in
both forced modes, all started with the same ``H2_SETTINGS``. The pounce rows skip, saying
why, while ``pounce_worker.http2`` does not exist; once it does they run unchanged.

``Peer`` speaks HTTP/2 one frame at a time (hyperframe builds and parses frames, hpack
encodes and decodes field blocks) so a test can send what no well-behaved client sends
and judge every frame the server answers with, per RFC 9113 and RFC 7541.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.harness import HOST, ROOT, Gunicorn, listening_socket

APP = "tests.http2.apps:app"
Fields = list[tuple[str, str]]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: RFC 9113 section 7 error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB
ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

#: The limits both servers are started with (Gunicorn's own setting names), small enough
#: that a test reaches each with a few frames.
MAX_CONCURRENT_STREAMS = 8
MAX_HEADER_LIST_SIZE = 16384
INITIAL_WINDOW_SIZE = 65535
MAX_FRAME_SIZE = 16384
H2_SETTINGS = (
    "--http-protocols", "h2,h1",
    "--http2-max-concurrent-streams", str(MAX_CONCURRENT_STREAMS),
    "--http2-max-header-list-size", str(MAX_HEADER_LIST_SIZE),
    "--http2-initial-window-size", str(INITIAL_WINDOW_SIZE),
    "--http2-max-frame-size", str(MAX_FRAME_SIZE),
    "--keep-alive", "5",
    "--timeout", "10",  # -k asgi: how long a stream waits for a window (and a drain)
)
CLEARTEXT = ("--http2-cleartext", "prior-knowledge")

#: pounce_worker's send deadline, shortened so the zero-window stall ends in seconds (README,
#: "Connection deadlines"; ``-k asgi`` uses ``timeout`` for it). The body and head deadlines
#: keep their defaults: a test holding streams open across a bystander's request must not
#: race them on a loaded machine.
POUNCE_ENV = {"POUNCE_SEND_TIMEOUT": "4"}

#: Rows: (name, worker class, forced mode or None).
SERVERS = {
    "asgi": ("asgi", None),
    "pounce-threads": ("pounce_worker.ThreadWorker", "threads"),
    "pounce-processes": ("pounce_worker.ThreadWorker", "processes"),
}


def pounce_speaks_h2() -> bool:
    """Whether the pounce_worker under test has its HTTP/2 package (the h2core branch merged)."""
    return importlib.util.find_spec("pounce_worker.http2") is not None


def skip_unless_ready(row: str) -> None:
    if row.startswith("pounce") and not pounce_speaks_h2():
        pytest.skip("pounce_worker.http2 does not exist yet (HTTP/2 lands with the h2core branch)")


def h2_server(row: str, *extra: str, tls: tuple[Path, Path] | None = None) -> Gunicorn:
    """A master of ``row`` serving ``APP`` with HTTP/2 on: over TLS (ALPN) or h2c prior-knowledge."""
    skip_unless_ready(row)
    worker_class, mode = SERVERS[row]
    transport = ("--certfile", str(tls[0]), "--keyfile", str(tls[1])) if tls else CLEARTEXT
    if mode is None:
        return Gunicorn(APP, *H2_SETTINGS, *transport, *extra, worker_class=worker_class, mode=None,
                        loops_expected=False, threads=1)
    return Gunicorn(APP, *H2_SETTINGS, *transport, *extra, worker_class=worker_class, mode=mode, env=POUNCE_ENV)


@contextlib.contextmanager
def started(server: Gunicorn) -> Iterator[Gunicorn]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- certificates --------------------------------------------------------------------------------


def make_certs(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (as tests/test_settings_tls.py makes them)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed (Debian package openssl; tests/run installs it)", pytrace=False)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    (directory / "ext.cnf").write_text(
        "[server]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=pounce h2 test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=pounce h2 test server")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", "-extensions", "server")
    return {n: directory / n for n in ("ca.pem", "server.pem", "server.key")}


def client_context(ca: Path, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


# -- a frame-level peer ---------------------------------------------------------------------------


class Peer:
    """One HTTP/2 client connection driven frame by frame.

    ``frames`` keeps every frame the server sent, in order; ``closed`` says how the
    connection ended (``eof``, ``reset``) once it did.
    """

    def __init__(self, port: int, ctx: ssl.SSLContext | None = None, rcvbuf: int | None = None,
                 timeout: float = 10.0) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window scale honours it
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((HOST, port))
        self.sock: socket.socket = ctx.wrap_socket(raw, server_hostname=HOST) if ctx else raw
        self.alpn = self.sock.selected_alpn_protocol() if isinstance(self.sock, ssl.SSLSocket) else None
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.buffer = b""
        self.frames: list[Frame] = []
        self.closed: str | None = None
        self._block = b""
        self.fields: dict[int, list[tuple[str, str]]] = {}  # id(frame) -> its decoded field block
        self.raw_tail = b""  # bytes that did not parse as frames (an HTTP/1.1 answer to a bad preface)

    # -- sending

    def send(self, *frames: Frame | bytes) -> bool:
        """Send frames (or raw bytes); False once the server closed the connection."""
        data = b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError, OSError):
            return False

    def handshake(self, settings: dict[int, int] | None = None, ack_server: bool = True) -> SettingsFrame:
        """Preface and our SETTINGS; read the server's SETTINGS (and ACK them); return them."""
        self.send(PREFACE, SettingsFrame(0, settings=settings or {}))
        frame = self.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags, timeout=10)
        assert isinstance(frame, SettingsFrame), f"no SETTINGS from the server: {self.describe()}"
        if ack_server:
            self.send(SettingsFrame(0, flags=["ACK"]))
        return frame

    def headers(self, stream_id: int, path: str = "/", method: str = "GET", end_stream: bool = True,
                extra: list[tuple[str, str]] | None = None, end_headers: bool = True) -> HeadersFrame:
        block = self.encoder.encode([(":method", method), (":scheme", "http"), (":path", path),
                                     (":authority", f"{HOST}"), *(extra or [])])
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(stream_id, data=block, flags=flags)

    # -- receiving

    def _fill(self, deadline: float) -> bool:
        """Read once; False when the connection ended or the deadline passed."""
        if self.closed:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            part = self.sock.recv(65536)
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            self.closed = "reset"
            return False
        if not part:
            self.closed = "eof"
            return False
        self.buffer += part
        self._parse()
        return True

    def _parse(self) -> None:
        while len(self.buffer) >= 9:
            if not self.frames and not self.buffer.startswith(b"\x00"):
                # Not a SETTINGS frame head: whatever it is (an HTTP/1.1 400), keep it as text.
                self.raw_tail += self.buffer
                self.buffer = b""
                return
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self.buffer[9:9 + length]))
            self.buffer = self.buffer[9 + length:]
            self.frames.append(frame)
            self._decode(frame)

    def _decode(self, frame: Frame) -> None:
        """Decode field blocks as they arrive, in order: HPACK's dynamic table needs every one."""
        if isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self._block += frame.data
            if "END_HEADERS" in frame.flags:
                fields = self.decoder.decode(self._block)
                self._block = b""
                self.fields[id(frame)] = [
                    (n if isinstance(n, str) else n.decode(), v if isinstance(v, str) else v.decode())
                    for n, v in fields]

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 10.0, start: int = 0) -> Frame | None:
        """The first frame from index ``start`` on that satisfies ``predicate`` (read until it comes)."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = max(seen, len(self.frames))
            if not self._fill(deadline):
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                return None

    def read_until_closed(self, timeout: float = 10.0) -> str | None:
        """Read (and keep) frames until the server closes; how it closed, or None at the timeout."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        return self.closed

    def goaway(self, timeout: float = 10.0) -> GoAwayFrame | None:
        frame = self.wait_for(lambda f: isinstance(f, GoAwayFrame), timeout=timeout)
        return frame if isinstance(frame, GoAwayFrame) else None

    def rst(self, stream_id: int, timeout: float = 10.0) -> RstStreamFrame | None:
        frame = self.wait_for(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == stream_id, timeout=timeout)
        return frame if isinstance(frame, RstStreamFrame) else None

    def exchange(self, stream_id: int, timeout: float = 10.0) -> tuple[Fields, bytes, Fields]:
        """``(fields, body, trailers)`` of the response on ``stream_id``, read until its END_STREAM.

        Opens our receive windows as DATA arrives, as a well-behaved client does; informational
        (1xx) heads are skipped. A reset of the stream is an AssertionError naming the code.
        """
        deadline = time.monotonic() + timeout
        fields: Fields = []
        trailers: Fields = []
        body = b""
        index = 0
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                if frame.stream_id != stream_id:
                    continue
                if isinstance(frame, (HeadersFrame, ContinuationFrame)) and id(frame) in self.fields:
                    block = self.fields[id(frame)]
                    status = dict(block).get(":status", "")
                    if not fields and status.startswith("1"):
                        continue
                    (trailers if fields else fields).extend(block)
                elif isinstance(frame, DataFrame):
                    body += frame.data
                    if frame.flow_controlled_length:
                        self.send(WindowUpdateFrame(0, window_increment=frame.flow_controlled_length),
                                  WindowUpdateFrame(stream_id, window_increment=frame.flow_controlled_length))
                elif isinstance(frame, RstStreamFrame):
                    raise AssertionError(f"stream {stream_id} reset: {ERROR_NAMES.get(frame.error_code)}")
                if "END_STREAM" in frame.flags:
                    return fields, body, trailers
            if not self._fill(deadline):
                raise AssertionError(f"no complete response on stream {stream_id}: {self.describe()}")

    def response(self, stream_id: int, timeout: float = 10.0) -> tuple[dict[str, str], bytes]:
        """The fields (as a dict) and body of the response on ``stream_id``."""
        fields, body, _ = self.exchange(stream_id, timeout)
        return dict(fields), body

    def describe(self, last: int = 12) -> str:
        shown = [describe_frame(f) for f in self.frames[-last:]]
        return f"{len(self.frames)} frames, closed={self.closed}, last: {shown}, raw={self.raw_tail[:80]!r}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_frame(frame: Frame) -> str:
    name = type(frame).__name__.replace("Frame", "")
    if isinstance(frame, GoAwayFrame):
        return f"GOAWAY(last={frame.last_stream_id}, {ERROR_NAMES.get(frame.error_code, frame.error_code)})"
    if isinstance(frame, RstStreamFrame):
        return f"RST_STREAM({frame.stream_id}, {ERROR_NAMES.get(frame.error_code, frame.error_code)})"
    return f"{name}({frame.stream_id}, {sorted(frame.flags)})"


def get(port: int, path: str = "/", ctx: ssl.SSLContext | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP/2 GET on a fresh connection: ``(status, body)``. How a bystander sees the server."""
    with Peer(port, ctx, timeout=timeout) as peer:
        peer.handshake()
        peer.send(peer.headers(1, path))
        headers, body = peer.response(1, timeout=timeout)
        return int(headers[":status"]), body


class Hypercorn:
    """Hypercorn serving ``APP`` on a socket made here (``fd://``): h2c prior knowledge, one worker.

    The reference of the differential suite; stopped by the PID started here.
    """

    def __init__(self, app: str = APP, python: str | None = None) -> None:
        self.app = app
        self.python = python or sys.executable
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.row = "hypercorn"

    def start(self) -> Hypercorn:
        if importlib.util.find_spec("hypercorn") is None:
            pytest.fail("hypercorn is not installed: pip install hypercorn (the bench extra has it)", pytrace=False)
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.log = open(Path(tempfile.mkdtemp(prefix="pounce-h2-hypercorn-")) / "out.log", "wb")
        self.proc = subprocess.Popen(
            [self.python, "-m", "hypercorn", "--bind", f"fd://{self.sock.fileno()}", "--workers", "1", self.app],
            pass_fds=(self.sock.fileno(),), env=env, cwd=str(ROOT), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("hypercorn exited at boot")
            with contextlib.suppress(AssertionError, OSError):
                if get(self.port, timeout=1)[0] == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("hypercorn did not serve in 20s")

    def worker_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.log.close()


# -- what a worker costs ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


class Cost:
    """CPU time and RSS growth of a server's workers over a ``with`` block."""

    def __init__(self, server: Gunicorn) -> None:
        self.server = server
        self.pids: list[int] = []
        self.cpu = 0.0
        self.rss_growth_kb = 0
        self.peak_rss_kb = 0

    def __enter__(self) -> Cost:
        self.pids = self.server.worker_pids()
        self._cpu0 = {pid: cpu_seconds(pid) for pid in self.pids}
        self._rss0 = {pid: rss_kb(pid) for pid in self.pids}
        return self

    def sample(self) -> None:
        """Track the peak RSS growth while the attack runs (call from the attacking loop)."""
        for pid in self.pids:
            with contextlib.suppress(OSError, KeyError):
                self.peak_rss_kb = max(self.peak_rss_kb, rss_kb(pid) - self._rss0[pid])

    def __exit__(self, *exc: object) -> None:
        self.sample()
        alive = [pid for pid in self.pids if Path(f"/proc/{pid}").exists()]
        self.cpu = sum(cpu_seconds(pid) - self._cpu0[pid] for pid in alive)
        self.rss_growth_kb = max((rss_kb(pid) - self._rss0[pid] for pid in alive), default=0)
