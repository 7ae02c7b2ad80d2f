"""TLS settings: certfile/keyfile, ca_certs + cert_reqs, ciphers and the ssl_context hook.

Certificates are made per test session with the openssl CLI (a throwaway CA, a
server certificate for 127.0.0.1, a client certificate); clients trust the CA
explicitly, so every check below is a real, verified handshake on loopback.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import HOST, build_request, config_file, parse_response, running, subject, wait_accepted

PROBE = "tests.apps:settings_probe"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed (Debian package openssl; tests/run installs it)")
    d = tmp_path_factory.mktemp("certs")
    ext = d / "ext.cnf"
    ext.write_text(
        # Python 3.13 verifies with VERIFY_X509_STRICT: key usage and key identifiers are required.
        "[server]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        "[client]\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=pounce test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=d)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=pounce test {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", str(ext), "-extensions", name, cwd=d)
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def _tls_args(certs: dict[str, Path]) -> list[str]:
    return ["--certfile", str(certs["server.pem"]), "--keyfile", str(certs["server.key"])]


def _client_context(certs: dict[str, Path], client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    if client_cert:
        ctx.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
    return ctx


def _https(port: int, ctx: ssl.SSLContext, path: str = "/info", timeout: float = 10) -> tuple[int, bytes, tuple]:
    """One request over TLS; returns status, body and the negotiated cipher."""
    with socket.create_connection((HOST, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(build_request(path))
        data = b""
        while True:
            part = tls.recv(65536)
            if not part:
                break
            data += part
        cipher = tls.cipher()
    status, _, body = parse_response(data)
    return status, body, cipher


def test_certfile_keyfile_serve_https(certs, mode):
    """HTTPS is served, plain HTTP is not, and a TERM does not wait for a client that never
    starts its handshake (it held the stop until graceful_timeout, 10 s here, ran out)."""
    server = subject(PROBE, *_tls_args(certs), mode=mode)
    with running(server):
        status, body, _ = _https(server.port, _client_context(certs))
        # Plain HTTP on the TLS port gets no HTTP answer.
        with socket.create_connection((HOST, server.port), timeout=5) as plain:
            plain.sendall(build_request("/info"))
            try:
                reply = plain.recv(65536)
            except ConnectionResetError:
                reply = b""
        with socket.create_connection((HOST, server.port), timeout=5) as silent:
            wait_accepted(silent)
            stopped = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(20) == 0
            took = time.monotonic() - stopped
    assert took < 6, f"the stop waited {took:.1f}s for a handshake that never began"
    assert status == 200
    info = json.loads(body)
    assert info["scheme"] == "https"
    assert info["client"][0] == "127.0.0.1"
    assert not reply.startswith(b"HTTP/1.1 200")


def test_client_certificate_required(certs, mode):
    """ca_certs + cert_reqs=2 (CERT_REQUIRED): no client certificate, no request served."""
    server = subject(PROBE, *_tls_args(certs), "--ca-certs", str(certs["ca.pem"]), "--cert-reqs", "2", mode=mode)
    with running(server):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            status, _, _ = _https(server.port, _client_context(certs, client_cert=False))
            # With TLS 1.3 the client may finish its handshake first; the refusal then
            # arrives as an alert (an exception) or a bare EOF instead of a response.
            if status == 0:
                raise ConnectionError("no response without a client certificate")
        status, body, _ = _https(server.port, _client_context(certs, client_cert=True))
    assert status == 200 and json.loads(body)["scheme"] == "https"


def test_client_certificate_optional(certs):
    """cert_reqs=1 (CERT_OPTIONAL): both kinds of client are served."""
    server = subject(PROBE, *_tls_args(certs), "--ca-certs", str(certs["ca.pem"]), "--cert-reqs", "1")
    with running(server):
        without = _https(server.port, _client_context(certs, client_cert=False))[0]
        with_cert = _https(server.port, _client_context(certs, client_cert=True))[0]
    assert (without, with_cert) == (200, 200)


def _tls12_client(certs: dict[str, Path], cipher: str) -> ssl.SSLContext:
    ctx = _client_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    return ctx


def test_ciphers(certs):
    """--ciphers restricts the TLS 1.2 suites the server accepts (TLS 1.3 suites are not
    set by OpenSSL's cipher string, in Gunicorn as here)."""
    server = subject(PROBE, *_tls_args(certs), "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256")
    with running(server):
        status, _, cipher = _https(server.port, _tls12_client(certs, "ECDHE-RSA-AES128-GCM-SHA256"))
        assert status == 200 and cipher[0] == "ECDHE-RSA-AES128-GCM-SHA256"
        with pytest.raises(ssl.SSLError):
            _https(server.port, _tls12_client(certs, "ECDHE-RSA-AES256-GCM-SHA384"))
    # Control: without --ciphers the same AES256 client is accepted.
    server = subject(PROBE, *_tls_args(certs))
    with running(server):
        status, _, cipher = _https(server.port, _tls12_client(certs, "ECDHE-RSA-AES256-GCM-SHA384"))
    assert status == 200 and cipher[0] == "ECDHE-RSA-AES256-GCM-SHA384"


SSL_CONTEXT_HOOK = '''
import os, ssl

def ssl_context(conf, default_ssl_context_factory):
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with open(os.environ["POUNCE_TEST_SSL_HOOK"], "a") as fh:
        fh.write("%d %s\\n" % (os.getpid(), conf.certfile))
    return context
'''


def test_ssl_context_hook(certs):
    """The ssl_context hook builds the context the worker serves with: it runs in the worker,
    gets the default factory, and what it changes (here: TLS 1.3 minimum) takes effect."""
    server = subject(PROBE, *_tls_args(certs))
    marker = server.tmp / "ssl-hook.txt"
    server.extra_env["POUNCE_TEST_SSL_HOOK"] = str(marker)
    server.args += ["-c", str(config_file(server, SSL_CONTEXT_HOOK))]
    with running(server):
        status, _, cipher = _https(server.port, _client_context(certs))
        assert status == 200 and cipher[1] == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            _https(server.port, _tls12_client(certs, "ECDHE-RSA-AES128-GCM-SHA256"))
        pids = server.worker_pids()
    calls = marker.read_text().splitlines()
    assert calls and {int(line.split()[0]) for line in calls} == set(pids)
    assert all(line.split()[1] == str(certs["server.pem"]) for line in calls)




def test_http_protocols_orders_alpn(certs):
    """TLS offers http_protocols in its order: h2 first is chosen by an h2 client, h1 alone never offers h2."""
    for protocols, expected in (("h2,h1", "h2"), ("h1", "http/1.1")):
        server = subject(PROBE, *_tls_args(certs), "--http-protocols", protocols)
        ctx = _client_context(certs)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with running(server), socket.create_connection((HOST, server.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == expected, protocols


def test_failed_handshakes_do_not_leak_connection_slots(certs, mode):
    """Probes that connect and close (health checks, scanners) must give their slot back, and
    silent clients theirs within POUNCE_HEADER_TIMEOUT (asyncio's own bounds: 60 s for the
    handshake, 30 s for the close_notify of a client that does not read)."""
    server = subject(PROBE, *_tls_args(certs), "--worker-connections", "1", mode=mode, threads=1,
                     env={"POUNCE_HEADER_TIMEOUT": "1"})
    with running(server):
        ctx = _client_context(certs)
        if mode == "processes":  # the same code in both modes: its timing checked once
            with socket.create_connection((HOST, server.port), timeout=5) as silent:
                wait_accepted(silent)  # holds the only slot, never sends a ClientHello
                assert _https(server.port, ctx, timeout=20)[0] == 200
            with socket.create_connection((HOST, server.port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                # Holds the slot after its handshake, sends nothing, never reads our close_notify.
                assert _https(server.port, ctx, timeout=20)[0] == 200
        assert _https(server.port, ctx)[0] == 200
        for _ in range(8):
            with socket.create_connection((HOST, server.port), timeout=5):
                pass  # TCP connect, no handshake, close
        with socket.create_connection((HOST, server.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on the TLS port
            plain.settimeout(5)
            try:
                plain.recv(100)
            except OSError:
                pass
        time.sleep(0.5)
        assert _https(server.port, ctx)[0] == 200
