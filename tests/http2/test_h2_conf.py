"""conf/http2.conf.py, as README's HTTP/2 section tells users to run it: h2c and TLS, checked with curl."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.harness import ROOT, ConfGunicorn

pytestmark = pytest.mark.timeout(90)

CONFIG = ROOT / "conf" / "http2.conf.py"


def _curl(*args: str) -> tuple[str, str]:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed (Debian package curl, built with nghttp2)")
    out = subprocess.run(["curl", "-sS", "--max-time", "15", "-w", "\n%{http_version}", *args],
                         capture_output=True, text=True, timeout=20)
    body, _, version = out.stdout.rpartition("\n")
    return body, version


def test_h2c_behind_a_proxy(mode):
    with ConfGunicorn(config=CONFIG, mode=mode, env={"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2"}) as server:
        body, version = _curl("--http2-prior-knowledge", f"{server.url}/hello")
        assert version == "2" and json.loads(body)["http_version"] == "2"
        body, version = _curl("--http2", "--data-binary", "abc", f"{server.url}/upgrade")
        assert version == "2" and json.loads(body)["body_bytes"] == 3


def test_tls_with_alpn(mode, tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
                    "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1"], cwd=tmp_path, check=True,
                   capture_output=True)
    env = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2",
           "GUNICORN_CERTFILE": str(tmp_path / "cert.pem"), "GUNICORN_KEYFILE": str(tmp_path / "key.pem")}
    with ConfGunicorn(config=CONFIG, mode=mode, env=env) as server:
        body, version = _curl("-k", "--http2", f"https://127.0.0.1:{server.port}/hello")
        assert version == "2" and json.loads(body)["scheme"] == "https"
        _, version = _curl("-k", "--http1.1", f"https://127.0.0.1:{server.port}/hello")
        assert version == "1.1"
