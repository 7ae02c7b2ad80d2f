"""conf/nginx/pounce.conf in front of ``gunicorn -c conf/gunicorn.conf.py``, both really running.

Debian's nginx (package ``nginx-light``, which brings ``nginx``) runs in the
foreground with a generated main config that includes the site file, whose
ports and certificate paths are rewritten to loopback test ports and a
throw-away certificate (``openssl``); pid, logs and temp files live in a
temporary directory. Checked: the proxy headers reach the app (and TLS at nginx
becomes ``scope["scheme"] == "https"``), nginx reuses one upstream connection,
and a graceful reload of gunicorn under traffic fails no request.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import CONF, HOST, ConfGunicorn, conf_values, require_tool, reserve_port, wait_accepted

SITE = CONF / "nginx" / "pounce.conf"
APP = "tests.apps:echo"  # reports headers, client address, scheme and pid; has /sleep/<s>
SERVER_NAME = "pounce.example.com"


def render_site(upstream: int, http_port: int, https_port: int, cert: Path, key: Path) -> str:
    """The site file with its deployment values swapped for the test's; each must occur once."""
    text = SITE.read_text()
    swaps = [
        ("server 127.0.0.1:8000 ", f"server {HOST}:{upstream} "),
        ("listen 80;", f"listen {HOST}:{http_port};"),
        ("listen 443 ssl;", f"listen {HOST}:{https_port} ssl;"),
        ("/etc/ssl/certs/ssl-cert-snakeoil.pem", str(cert)),
        ("/etc/ssl/private/ssl-cert-snakeoil.key", str(key)),
    ]
    for old, new in swaps:
        assert text.count(old) == 1, f"{SITE} should contain {old!r} exactly once"
        text = text.replace(old, new)
    live = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    listens = [line for line in live if line.startswith("listen ")]
    assert listens and all(line.startswith(f"listen {HOST}:") for line in listens), listens
    return text


def make_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={SERVER_NAME}",
         "-addext", f"subjectAltName=DNS:{SERVER_NAME},IP:{HOST}"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


class Nginx:
    """nginx in the foreground (``daemon off``) with everything it writes under ``directory``."""

    def __init__(self, directory: Path, upstream: int) -> None:
        self.binary = require_tool("nginx", "nginx-light", "/usr/sbin/nginx")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_certificate(self.dir)
        # nginx takes its ports by number: reserved here until stop() (nginx binds with
        # SO_REUSEADDR, so it can; nothing else takes them meanwhile).
        self.reserved = [reserve_port(), reserve_port()]
        self.http_port, self.https_port = (sock.getsockname()[1] for sock in self.reserved)
        site = self.dir / "pounce.conf"
        site.write_text(render_site(upstream, self.http_port, self.https_port, self.cert, self.key))
        temp = self.dir / "temp"
        temp.mkdir(exist_ok=True)
        self.error_log = self.dir / "error.log"
        self.conf = self.dir / "nginx.conf"
        # As root, nginx would drop its workers to "nobody", who cannot enter pytest's
        # private temp directory for request-body buffering: keep the test's own user.
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}"
            f"daemon off;\n"
            f"master_process on;\n"
            f"worker_processes 1;\n"  # one worker: one upstream keepalive pool
            f"pid {self.dir}/nginx.pid;\n"
            f"error_log {self.error_log} info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n"
            f"    access_log {self.dir}/access.log;\n"
            f"    client_body_temp_path {temp}/body;\n"
            f"    proxy_temp_path {temp}/proxy;\n"
            f"    fastcgi_temp_path {temp}/fastcgi;\n"
            f"    uwsgi_temp_path {temp}/uwsgi;\n"
            f"    scgi_temp_path {temp}/scgi;\n"
            f"    include {site};\n"
            f"}}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.dir), "-e", str(self.error_log), "-c", str(self.conf), *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        self.stdout = open(self.dir / "stdout.log", "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self.stdout, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                socket.create_connection((HOST, self.https_port), timeout=0.5).close()
                socket.create_connection((HOST, self.http_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"nginx did not listen in 10s:\n{self.logs()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stdout.close()
        for sock in self.reserved:
            sock.close()

    def logs(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- nginx {name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@contextlib.contextmanager
def proxied(mode: str, directory: Path) -> Iterator[tuple[ConfGunicorn, Nginx]]:
    workers = int(conf_values({"POUNCE_WORKER_MODE": mode})["workers"])  # type: ignore[call-overload]
    server = ConfGunicorn(APP, mode=mode, workers=workers)
    server.start()
    nginx = None
    try:
        nginx = Nginx(directory / "nginx", server.port)
        nginx.start()
        yield server, nginx
    except BaseException:
        print(server.output())
        if nginx is not None:
            print(nginx.logs())
        raise
    finally:
        if nginx is not None:
            nginx.stop()
        server.stop()


def request_racing_graceful_stop(server: ConfGunicorn) -> bytes:
    """A connection the workers have accepted, then a graceful stop, then its first request: the reply."""
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        wait_accepted(sock)  # accepted by a worker, no request yet
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGTERM)  # what the arbiter sends old workers on HUP
        time.sleep(0.1)
        try:
            sock.sendall(b"GET /late HTTP/1.1\r\nHost: pounce.example.com\r\n\r\n")
            return sock.recv(65536)
        except OSError:
            return b""


def headers_of(data: dict[str, object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in data["headers"]:  # type: ignore[attr-defined]
        out.setdefault(name, []).append(value)
    return out


# -- static agreement between the files -----------------------------------------------------------


def test_site_agrees_with_gunicorn_conf_and_passes_nginx_t(tmp_path: Path) -> None:
    text = SITE.read_text()
    upstream = re.search(r"upstream pounce \{(.*?)\n\}", text, re.S)
    assert upstream is not None
    body = upstream.group(1)
    values = conf_values({})
    # nginx points where gunicorn binds by default (and where conf/systemd/pounce.socket listens).
    assert re.search(r"^\s*server (\S+)", body, re.M).group(1) in values["bind"]  # type: ignore[union-attr,operator]
    assert re.search(r"^\s*keepalive \d+;", body, re.M), "upstream keepalive pool"
    # nginx must give up an idle pooled connection before gunicorn closes it.
    nginx_idle = int(re.search(r"^\s*keepalive_timeout (\d+)s;", body, re.M).group(1))  # type: ignore[union-attr]
    assert nginx_idle < int(values["keepalive"])  # type: ignore[call-overload]
    for directive in ("proxy_http_version 1.1;", 'proxy_set_header Connection "";', "proxy_set_header Host $host;",
                      "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                      "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_pass http://pounce;"):
        assert directive in text, directive
    nginx = Nginx(tmp_path, 8000)  # nginx -t connects nowhere: any upstream port
    done = nginx.test_config()
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


# -- the stack, running -----------------------------------------------------------------------


def test_proxy_headers_reach_the_app(mode: str, tmp_path: Path) -> None:
    with proxied(mode, tmp_path) as (_server, nginx):
        r = httpx.get(nginx.url + "/hello?x=1", headers={"Host": SERVER_NAME, "X-Forwarded-For": "203.0.113.7"},
                      timeout=10)
        assert r.status_code == 200, r.text
        data = r.json()
        headers = headers_of(data)
        assert (data["path"], data["query_string"]) == ("/hello", "x=1")
        assert data["http_version"] == "1.1", "proxy_http_version 1.1"
        assert headers["host"] == [SERVER_NAME]
        assert headers["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
        assert headers["x-real-ip"] == ["127.0.0.1"]
        assert headers["x-forwarded-proto"] == ["http"]
        assert headers["x-forwarded-host"] == [SERVER_NAME]
        assert headers["x-forwarded-port"] == [str(nginx.http_port)]
        assert "connection" not in headers, 'proxy_set_header Connection "" sends none (keep-alive)'
        assert data["scheme"] == "http"
        assert data["client"][0] == "127.0.0.1"  # nginx's connection: gunicorn does not rewrite the peer

        # TLS ends at nginx; gunicorn trusts X-Forwarded-Proto from 127.0.0.1 (FORWARDED_ALLOW_IPS).
        with httpx.Client(verify=nginx.tls_context(), timeout=10) as client:
            r = client.get(nginx.https_url + "/secure", headers={"Host": SERVER_NAME})
        assert r.status_code == 200, r.text
        data = r.json()
        assert headers_of(data)["x-forwarded-proto"] == ["https"]
        assert data["scheme"] == "https", "X-Forwarded-Proto from a trusted proxy sets the scheme"


def test_upstream_connections_are_reused(mode: str, tmp_path: Path) -> None:
    with proxied(mode, tmp_path) as (_server, nginx):
        ports = []
        # A fresh client connection each time: the reuse is nginx -> gunicorn, not client -> nginx.
        for i in range(12):
            r = httpx.get(f"{nginx.url}/k/{i}", headers={"Connection": "close"}, timeout=10)
            assert r.status_code == 200
            ports.append(r.json()["client"][1])
        assert len(set(ports)) == 1, f"one pooled upstream connection expected, saw ports {ports}"
        # And a large body in both directions does not break the pooled connection.
        r = httpx.post(f"{nginx.url}/upload", content=b"z" * 300_000, timeout=10)
        assert r.json()["body_len"] == 300_000
        assert r.json()["client"][1] == ports[0]


@pytest.mark.serial  # counts the requests served in 0.7 s windows
def test_graceful_reload_under_traffic(mode: str, tmp_path: Path) -> None:
    """SIGHUP to the gunicorn master while clients hammer nginx: not one request fails."""
    with proxied(mode, tmp_path) as (server, nginx):
        ok: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def client_loop() -> None:
            with httpx.Client(base_url=nginx.url, timeout=15) as client:
                while not stop.is_set():
                    try:
                        r = client.get("/traffic")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if r.status_code == 200:
                        ok.append(r.json()["pid"])
                    else:
                        failures.append(f"{r.status_code}: {r.text[:200]}")

        slow_result: list[object] = []

        def slow_request() -> None:
            try:
                r = httpx.get(nginx.url + "/sleep/1.5", timeout=15)
                slow_result.append((r.status_code, r.json()["pid"]))
            except httpx.HTTPError as exc:
                slow_result.append(repr(exc))

        clients = [threading.Thread(target=client_loop, daemon=True) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(0.7)
            old = set(server.worker_pids())
            slow = threading.Thread(target=slow_request, daemon=True)
            slow.start()
            time.sleep(0.3)  # the slow request is in flight in an old worker
            served_before = len(ok)
            server.signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                pids = set(server.worker_pids())
                if pids and not pids & old and len(pids) == len(old):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"old workers {old} still there after 20s:\n{server.output()}")
            time.sleep(0.5)  # traffic keeps flowing to the new workers
        finally:
            stop.set()
            for thread in clients:
                thread.join(20)
        slow.join(20)
        assert "Hang up: Master" in server.log()
        assert not failures, f"{len(failures)} failed of {len(ok) + len(failures)}: {failures[:5]}"
        assert len(ok) > served_before > 20, "traffic flowed before and after the reload"
        assert set(ok) & old and set(ok) - old, "requests were served by old and by new workers"
        assert len(slow_result) == 1 and slow_result[0][0] == 200, slow_result  # type: ignore[index]
        assert slow_result[0][1] in old, "the in-flight request finished in the old worker"  # type: ignore[index]


def test_request_racing_a_graceful_stop_is_served(mode: str) -> None:
    """The mechanism behind the reload 502s, made deterministic (straight to gunicorn, no nginx)."""
    with ConfGunicorn(APP, mode=mode, env={"WEB_CONCURRENCY": "1"}) as server:
        reply = request_racing_graceful_stop(server)
        assert reply.startswith(b"HTTP/1.1 200"), f"reply {reply[:60]!r}\n{server.output()}"


@pytest.fixture(autouse=True)
def _tools() -> None:
    """nginx and openssl are required: a missing one fails the test naming the Debian package."""
    require_tool("nginx", "nginx-light", "/usr/sbin/nginx")
    require_tool("openssl", "openssl")
