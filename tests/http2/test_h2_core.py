"""HTTP/2 core: negotiation, SETTINGS, ASGI per stream, against real gunicorn masters in both modes.

Issue 13, points 1, 2 and 4 as the worker's own tests: curl and httpx for the
negotiations a user meets (ALPN over TLS, prior knowledge, ``Upgrade: h2c``),
and a frame-aware client (``h2core_client``) for what they do not show (the
SETTINGS values, RST_STREAM, GOAWAY, 1xx, trailers, windows).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import h2.settings
import pytest

from tests.harness import poll_until, subject

from .h2core_client import H2Client

pytestmark = pytest.mark.timeout(90)

APP = "tests.http2.core_apps:app"
#: HTTP/2 on for the loopback peer (the trusted proxy of a real deployment).
H2C = ("--http-protocols", "h2,h1", "--http2-cleartext", "both", "--forwarded-allow-ips", "127.0.0.1")


def h2server(mode: str, *args: str, **kwargs: object):
    return subject(APP, *H2C, *args, mode=mode, **kwargs)


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed (Debian package curl, built with nghttp2)")
    return subprocess.run(["curl", "-sS", "--max-time", "15", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("h2certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
                    "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], cwd=d, check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


# -- negotiation -------------------------------------------------------------------------------


def test_prior_knowledge_with_curl(mode):
    with h2server(mode) as server:
        out = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"{server.url}/scope?a=1")
        body, version = out.stdout.rsplit("\n", 1)
        assert version == "2", out
        seen = json.loads(body)
        assert seen["http_version"] == "2"
        assert seen["method"] == "GET" and seen["path"] == "/scope" and seen["query_string"] == "a=1"
        assert seen["scheme"] == "http"
        assert ["host", f"127.0.0.1:{server.port}"] in seen["headers"]
        assert not any(name.startswith(":") for name, _ in seen["headers"])


def test_prior_knowledge_after_a_proxy_header_with_curl():
    """A proxy's PROXY header, then h2c (HAProxy's send-proxy with proto h2): curl --haproxy-protocol."""
    with h2server("threads", "--proxy-protocol", "v1", "--proxy-allow-from", "127.0.0.1") as server:
        out = curl("--haproxy-protocol", "--http2-prior-knowledge", "-w", "\n%{http_version}", f"{server.url}/scope")
        body, version = out.stdout.rsplit("\n", 1)
        assert version == "2", out
        assert json.loads(body)["http_version"] == "2"


def test_alpn_over_tls_with_curl(mode, cert):
    certfile, keyfile = cert
    with h2server(mode, "--certfile", str(certfile), "--keyfile", str(keyfile)) as server:
        url = f"https://127.0.0.1:{server.port}/scope"
        out = curl("-k", "--http2", "-w", "\n%{http_version}", url)
        body, version = out.stdout.rsplit("\n", 1)
        assert version == "2", out
        assert json.loads(body)["scheme"] == "https"
        out = curl("-k", "--http1.1", "-w", "\n%{http_version}", url)
        assert out.stdout.rsplit("\n", 1)[1] == "1.1"


def test_alpn_offers_http_protocols_in_order(cert):
    """h1 first: a client offering both gets http/1.1 (the server's preference wins in ALPN)."""
    certfile, keyfile = cert
    server = subject(APP, "--http-protocols", "h1,h2", "--certfile", str(certfile), "--keyfile", str(keyfile))
    with server:
        out = curl("-k", "--http2", "-w", "\n%{http_version}", f"https://127.0.0.1:{server.port}/")
        assert out.stdout.rsplit("\n", 1)[1] == "1.1", out


@pytest.mark.smoke
def test_upgrade_h2c_serves_the_request_with_its_body_as_stream_1(mode):
    with h2server(mode) as server:
        out = curl("--http2", "-w", "\n%{http_version}", "--data-binary", "hello upgrade", f"{server.url}/scope")
        body, version = out.stdout.rsplit("\n", 1)
        assert version == "2", out
        seen = json.loads(body)
        assert seen["method"] == "POST" and seen["body"] == len("hello upgrade")
        names = {name for name, _ in seen["headers"]}
        assert not names & {"upgrade", "http2-settings", "connection"}
        out = curl("--http2", "-w", "\n%{http_version}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[1] == "2"


def test_untrusted_peer_is_served_http1_as_if_off(mode):
    with subject(APP, "--http-protocols", "h2,h1", "--http2-cleartext", "both",
                 "--forwarded-allow-ips", "10.9.9.9", mode=mode) as server:
        out = curl("--http2", "-w", "\n%{http_version}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[1] == "1.1", out
        assert json.loads(out.stdout.rsplit("\n", 1)[0])["http_version"] == "1.1"
        out = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[-1] != "2"


def test_prior_knowledge_only_refuses_http1_from_a_trusted_peer():
    with subject(APP, "--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge",
                 "--forwarded-allow-ips", "127.0.0.1") as server:
        out = curl("--http1.1", "-w", "\n%{http_code}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[1] == "400", out
        out = curl("--http2", "-w", "\n%{http_version}", f"{server.url}/scope")  # an Upgrade is HTTP/1.1 too
        assert out.stdout.rsplit("\n", 1)[1] != "2"
        out = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[1] == "2"


def test_upgrade_only_does_not_sniff_the_preface():
    with subject(APP, "--http-protocols", "h2,h1", "--http2-cleartext", "upgrade",
                 "--forwarded-allow-ips", "127.0.0.1") as server:
        out = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[-1] != "2"
        out = curl("--http2", "-w", "\n%{http_version}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[1] == "2"


def test_http1_only_by_default():
    with subject(APP, "--forwarded-allow-ips", "127.0.0.1") as server:
        out = curl("--http2", "-w", "\n%{http_version}", f"{server.url}/scope")
        assert out.stdout.rsplit("\n", 1)[1] == "1.1"


def test_missing_h2_fails_the_boot_naming_the_setting(tmp_path):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _NoH2:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'h2' or name.startswith('h2.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'h2'\")\n"
        "sys.meta_path.insert(0, _NoH2())\n"
    )
    server = subject(APP, *H2C)
    root = Path(__file__).resolve().parent.parent.parent
    server.extra_env["PYTHONPATH"] = f"{tmp_path}:{root}"
    assert server.boot_failure() != 0
    assert "http_protocols" in server.output()


# -- SETTINGS sent and enforced ----------------------------------------------------------------


def test_settings_are_sent_and_enforced(mode):
    limits = ("--http2-max-concurrent-streams", "3", "--http2-initial-window-size", "20000",
              "--http2-max-frame-size", "32768", "--http2-max-header-list-size", "4000")
    with h2server(mode, *limits) as server:
        with H2Client(server.port) as client:
            stream = client.request("/scope")
            client.response(stream)
            assert client.remote_settings[0x3] == 3
            assert client.remote_settings[0x4] == 20000
            assert client.remote_settings[0x5] == 32768
            assert client.remote_settings[0x6] == 4000
        # A header list past http2_max_header_list_size: the connection ends with a GOAWAY.
        with H2Client(server.port) as client:
            client.request("/scope", headers=[(b"x-big", b"a" * 5000)])
            assert client.wait(lambda: client.goaway is not None)
            assert client.goaway.error_code in (0x1, 0xB)  # PROTOCOL_ERROR or ENHANCE_YOUR_CALM
        # Past the initial window: FLOW_CONTROL_ERROR.
        with H2Client(server.port) as client:
            client.wait(lambda: 0x4 in client.remote_settings)
            stream = client.request("/wait-disconnect", method="POST", end=False)
            client.conn.outbound_flow_control_window = 10**6  # lie to our own h2 about the server's windows
            client.conn.streams[stream].outbound_flow_control_window = 10**6
            for _ in range(2):
                client.conn.send_data(stream, b"x" * 16000)
            client.flush()
            assert client.wait(lambda: client.goaway is not None)
            assert client.goaway.error_code == 0x3
        # More concurrent streams than http2_max_concurrent_streams.
        with H2Client(server.port) as client:
            client.wait(lambda: 0x3 in client.remote_settings)
            # Our own h2 would refuse to open them: let it believe the server allows more.
            client.conn.remote_settings = h2.settings.Settings(client=False, initial_values={0x3: 100})
            for _ in range(4):
                client.request("/wait-disconnect", end=False)
            assert client.wait(lambda: client.goaway is not None or any(
                s.reset is not None for s in client.streams.values()))
        # A frame above http2_max_frame_size: FRAME_SIZE_ERROR.
        with H2Client(server.port) as client:
            client.wait(lambda: 0x5 in client.remote_settings)
            stream = client.request("/scope", method="POST", end=False)
            client.conn.max_outbound_frame_size = 40000
            client.conn.outbound_flow_control_window = 10**6
            client.conn.streams[stream].outbound_flow_control_window = 10**6
            client.conn.send_data(stream, b"x" * 40000)
            client.flush()
            assert client.wait(lambda: client.goaway is not None)
            assert client.goaway.error_code == 0x6


# -- ASGI per stream ---------------------------------------------------------------------------


def test_multiplexed_streams_and_flow_control_both_ways(mode):
    """Uploads and downloads bigger than every window, several at once on one connection."""
    import hashlib

    with h2server(mode, "--http2-initial-window-size", "16384") as server:
        with H2Client(server.port) as client:
            upload = bytes(range(256)) * 2048  # 512 KiB
            up1 = client.request("/slow-read", method="POST", end=False)
            down = client.request("/stream?n=40&size=50000")
            client.send_body(up1, upload)
            up1_response = client.response(up1)
            assert json.loads(up1_response.body) == {"body": len(upload), "sha": hashlib.sha256(upload).hexdigest()}
            down_response = client.response(down)
            assert down_response.status == 200 and len(down_response.body) == 40 * 50000


def test_response_waits_for_the_clients_window(mode):
    """A client that keeps its window shut gets no more than the window; opening it finishes the body."""
    with h2server(mode) as server:
        with H2Client(server.port, auto_ack=False) as client:
            client.conn.update_settings({0x4: 1000})
            client.flush()
            stream = client.request("/stream?n=5&size=1000")
            assert client.wait(lambda: len(client.streams[stream].body) == 1000)
            assert not client.streams[stream].ended
            client.conn.increment_flow_control_window(10_000, stream)
            client.flush()
            response = client.response(stream)
            assert len(response.body) == 5000


def test_head_keeps_the_content_length_without_a_body(mode):
    with h2server(mode) as server, H2Client(server.port) as client:
        response = client.response(client.request("/scope", method="HEAD"))
        assert response.reset is None and response.status == 200
        assert int(response.header(b"content-length")) > 0 and not response.body


def test_compression_server_timing_and_pathsend_per_stream(mode, tmp_path):
    import gzip
    import os

    blob = tmp_path / "blob.bin"
    data = os.urandom(300_000)
    blob.write_bytes(data)
    env = {"POUNCE_COMPRESSION": "gzip", "POUNCE_SERVER_TIMING": "1"}
    with h2server(mode, env=env) as server, H2Client(server.port) as client:
        text = client.request("/text", headers=[(b"accept-encoding", b"gzip")])
        sent = client.request(f"/file?path={blob}")
        text_response, file_response = client.response(text), client.response(sent)
        assert text_response.header(b"content-encoding") == b"gzip"
        assert gzip.decompress(bytes(text_response.body)) == b"compressible text, " * 500
        assert b"app;dur=" in (text_response.header(b"server-timing") or b"")
        assert file_response.status == 200 and bytes(file_response.body) == data


def test_connection_specific_headers_never_reach_the_wire(mode):
    with h2server(mode) as server, H2Client(server.port) as client:
        response = client.response(client.request("/headers"))
        names = {name for name, _ in response.headers}
        assert not names & {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
        assert response.header(b"x-mixed-case") == b"yes"
        assert response.header(b"server") and response.header(b"date")
        assert bytes(response.body) == b"ok"


def test_response_trailers(mode):
    with h2server(mode) as server, H2Client(server.port) as client:
        trailers = client.response(client.request("/trailers"))
        assert bytes(trailers.body) == b"with trailers"
        assert trailers.trailers == [(b"x-checksum", b"abc")]


def test_early_hints(mode):
    with h2server(mode) as server, H2Client(server.port) as client:
        hints = client.response(client.request("/hints"))
        assert hints.informational and dict(hints.informational[0])[b":status"] == b"103"
        assert dict(hints.informational[0])[b"link"] == b"</style.css>; rel=preload; as=style"
        assert hints.status == 200


def test_app_failure_resets_its_stream_never_the_connection(mode):
    with h2server(mode) as server, H2Client(server.port) as client:
        before = client.response(client.request("/fail-before"))
        assert before.status == 500 and bytes(before.body) == b"Internal Server Error"
        after = client.response(client.request("/fail-after"))
        assert after.reset is not None and after.reset != 0
        still = client.response(client.request("/scope"))
        assert still.status == 200 and client.goaway is None


def test_rst_stream_and_connection_loss_reach_the_app_as_disconnect(mode, tmp_path):
    with h2server(mode, env={"H2CORE_MARKS": str(tmp_path)}) as server:
        with H2Client(server.port) as client:
            stream = client.request("/wait-disconnect?id=reset", end=False)
            # (A reset read together with its HEADERS never starts the app: wait until it runs.)
            poll_until(lambda: (tmp_path / "started-reset").exists(), what="the app started")
            client.conn.reset_stream(stream)
            client.flush()
            poll_until(lambda: (tmp_path / "disconnect-reset").exists(), what="http.disconnect after RST_STREAM")
            assert client.response(client.request("/scope")).status == 200
        with H2Client(server.port) as client:
            client.request("/wait-disconnect?id=lost", end=False)
            poll_until(lambda: (tmp_path / "started-lost").exists(), what="the app started")
        poll_until(lambda: (tmp_path / "disconnect-lost").exists(), what="http.disconnect after the connection closed")


def test_access_log_line_per_stream(mode, tmp_path):
    access = tmp_path / "access.log"
    with h2server(mode, "--access-logfile", str(access)) as server:
        with H2Client(server.port) as client:
            for stream in [client.request(f"/scope?n={i}") for i in range(3)]:
                client.response(stream)
        poll_until(lambda: access.exists() and access.read_text().count('HTTP/2.0" 200') == 3,
                   what="three access log lines")
        lines = access.read_text().splitlines()
        assert sorted(line.split('"')[1] for line in lines) == [f"GET /scope?n={i} HTTP/2.0" for i in range(3)]


# -- worker contract ---------------------------------------------------------------------------


def test_graceful_stop_sends_goaway_and_finishes_the_stream_in_flight(mode, tmp_path):
    release = tmp_path / "release"
    with h2server(mode) as server, H2Client(server.port) as client:
        stream = client.request(f"/hold?file={release}")
        client.wait(lambda: 0x4 in client.remote_settings)
        server.signal(signal.SIGTERM)
        assert client.wait(lambda: client.goaway is not None, timeout=15)
        assert client.goaway.error_code == 0 and client.goaway.last_stream_id == stream
        release.write_text("go")
        response = client.response(stream, timeout=15)
        assert response.status == 200 and json.loads(response.body) == {"released": True}
        assert server.wait() == 0


def test_idle_connection_gets_goaway_after_keepalive(mode):
    with h2server(mode, "--keep-alive", "1") as server, H2Client(server.port) as client:
        assert client.response(client.request("/scope")).status == 200
        assert client.wait(lambda: client.goaway is not None, timeout=10)
        assert client.goaway.error_code == 0
        assert client.wait(lambda: client.closed, timeout=10)


def test_each_stream_counts_toward_max_requests(mode):
    with h2server(mode, "--max-requests", "4", threads=1) as server, H2Client(server.port) as client:
        for stream in [client.request(f"/scope?n={i}") for i in range(4)]:
            assert client.response(stream).status == 200
        assert client.wait(lambda: client.goaway is not None, timeout=15)
        server.wait_for_log(r"max_requests|Autorestarting|budget", timeout=15)


def test_status_view_counts_open_streams(mode, tmp_path):
    """Three streams held open on one connection: one connection, three streams; none once they end."""
    import httpx

    release = tmp_path / "release"
    env = {"POUNCE_STATUS_BIND": "127.0.0.1:0"}
    with h2server(mode, env=env) as server, H2Client(server.port) as client:
        (address,) = server.wait_for_log(r"status view of worker \d+ on (\S+) \(POUNCE_STATUS_BIND\)")

        def totals() -> dict:
            return httpx.get(f"http://{address}/status", timeout=5).json()["totals"]

        streams = [client.request(f"/hold?file={release}") for _ in range(3)]
        poll_until(lambda: totals()["streams"] == 3, what="three open streams in the status view")
        assert totals()["connections"] == 1
        release.write_text("go")
        for stream in streams:
            assert client.response(stream).status == 200
        poll_until(lambda: totals()["streams"] == 0, what="no open stream once they ended")
        metrics = httpx.get(f"http://{address}/metrics", timeout=5).text
        assert "pounce_http2_streams_open{" in metrics


def test_body_over_the_cap_gets_413_on_its_stream_only(mode):
    with h2server(mode, env={"POUNCE_MAX_BODY_SIZE": "1000"}) as server, H2Client(server.port) as client:
        declared = client.response(client.request("/scope", method="POST", body=b"x" * 2000,
                                                  headers=[(b"content-length", b"2000")]))
        assert declared.status == 413
        streamed = client.request("/slow-read", method="POST", end=False)
        client.send_body(streamed, b"y" * 5000, end=False)
        response = client.response(streamed)
        assert response.status == 413
        assert client.response(client.request("/scope")).status == 200 and client.goaway is None


@pytest.mark.serial
def test_stalled_request_body_gets_408(mode):
    """A body the app waits for that stops: 408 on that stream after POUNCE_BODY_TIMEOUT, the connection lives."""
    env = {"POUNCE_BODY_TIMEOUT": "1", "POUNCE_SHUTDOWN_TICK": "0.2"}
    with h2server(mode, env=env) as server, H2Client(server.port) as client:
        stream = client.request("/slow-read", method="POST", end=False)
        client.send_body(stream, b"z" * 100, end=False)
        response = client.response(stream, timeout=15)
        assert response.status == 408
        assert client.response(client.request("/scope")).status == 200
