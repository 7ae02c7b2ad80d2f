"""Proxy settings: ThreadWorker computes client, scheme and mount point as Gunicorn does.

Each case sends the same bytes to ThreadWorker serving ``tests.apps:settings_probe``
(ASGI) and to Gunicorn's own sync worker serving ``tests.apps:settings_wsgi`` (WSGI),
both started with the same settings, and compares the ASGI scope with the WSGI
environ Gunicorn builds: ``client`` with ``REMOTE_ADDR``/``REMOTE_PORT``, ``scheme``
with ``wsgi.url_scheme``, ``root_path`` with ``SCRIPT_NAME``, and the status for
requests Gunicorn refuses. The addresses inside PROXY headers and the untrusted
``forwarded_allow_ips`` entries are documentation ranges (RFC 5737): no traffic
goes anywhere but loopback.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct

import pytest

from tests.harness import build_request, config_file, exchange, reference, running, subject

PROBE = "tests.apps:settings_probe"
WSGI = "tests.apps:settings_wsgi"
PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _pair(*args: str, mode: str = "threads", conf: str | None = None, env: dict[str, str] | None = None):
    ours = subject(PROBE, *args, mode=mode, env=dict(env or {}))
    theirs = reference(WSGI, *args, env=dict(env or {}))
    if conf is not None:
        ours.args += ["-c", str(config_file(ours, conf))]
        theirs.args += ["-c", str(config_file(theirs, conf))]
    return ours, theirs


def _ask(server, data: bytes) -> tuple[int, dict | None, int]:
    status, _, body, local_port = exchange(server.port, data)
    info = json.loads(body) if status == 200 else None
    return status, info, local_port


def _view(kind: str, status: int, info: dict | None, local_port: int) -> dict:
    """What a request's result means, in terms both worlds share.

    ``client_port`` is ``"own"`` when it is the client socket's own port, so
    requests on different connections can be compared."""
    if info is None:
        return {"status": status}
    if kind == "asgi":
        client = info["client"]
        view = {"scheme": info["scheme"], "mount": info["root_path"],
                "path_in_app": info["path"][len(info["root_path"]):], "client_ip": client[0],
                "client_port": client[1], "server": info["server"] if "server" in info else None}
    else:
        view = {"scheme": info["wsgi.url_scheme"], "mount": info["SCRIPT_NAME"], "path_in_app": info["PATH_INFO"],
                "client_ip": info["REMOTE_ADDR"], "client_port": int(info["REMOTE_PORT"])}
        if info["PROXY_ADDR"]:
            view["server"] = [info["PROXY_ADDR"], int(info["PROXY_PORT"])]
    if view["client_port"] == local_port:
        view["client_port"] = "own"
    view["status"] = status
    return view


def _compare(ours, theirs, data: bytes) -> dict:
    """Send ``data`` to both; assert Gunicorn's reading and ours agree; return ours."""
    mine = _view("asgi", *_ask(ours, data))
    gunicorns = _view("wsgi", *_ask(theirs, data))
    mine_cmp = dict(mine)
    if "server" not in gunicorns:
        mine_cmp.pop("server", None)  # Gunicorn has no PROXY_ADDR to compare with
    assert mine_cmp == gunicorns, f"request {data!r}"
    return mine


def _get(*headers: tuple[str, str], path: str = "/info") -> bytes:
    return build_request(path, list(headers))


# -- forwarded_allow_ips + secure_scheme_headers -----------------------------------------------


def test_secure_scheme_headers_from_trusted_peer(mode):
    """Default forwarded_allow_ips (127.0.0.1,::1) trusts us: each default secure header counts."""
    ours, theirs = _pair(mode=mode)
    with running(ours, theirs):
        plain = _compare(ours, theirs, _get())
        assert (plain["scheme"], plain["client_ip"], plain["client_port"]) == ("http", "127.0.0.1", "own")
        for header, value, scheme in [
            ("X-Forwarded-Proto", "https", "https"),
            ("X-Forwarded-Proto", "http", "http"),
            ("X-Forwarded-Ssl", "on", "https"),
            ("X-Forwarded-Protocol", "ssl", "https"),
            ("X-Forwarded-Proto", "HTTPS", "http"),  # values compare exactly, as in Gunicorn
        ]:
            assert _compare(ours, theirs, _get((header, value)))["scheme"] == scheme, (header, value)
        # Two trusted headers that agree are fine; two that disagree are a 400.
        agree = _get(("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on"))
        assert _compare(ours, theirs, agree)["scheme"] == "https"
        contradict = _get(("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off"))
        assert _compare(ours, theirs, contradict) == {"status": 400}


def test_secure_scheme_headers_from_untrusted_peer_are_ignored():
    ours, theirs = _pair("--forwarded-allow-ips", "192.0.2.1")
    with running(ours, theirs):
        assert _compare(ours, theirs, _get(("X-Forwarded-Proto", "https")))["scheme"] == "http"
        # Ignored entirely, so not even contradictory.
        contradict = _get(("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off"))
        assert _compare(ours, theirs, contradict)["status"] == 200


@pytest.mark.parametrize("allow", ["127.0.0.0/8", "*", "192.0.2.1,127.0.0.1"])
def test_forwarded_allow_ips_forms(allow):
    """A network, '*', or a list that includes us: all trust the loopback peer."""
    ours, theirs = _pair("--forwarded-allow-ips", allow)
    with running(ours, theirs):
        assert _compare(ours, theirs, _get(("X-Forwarded-Proto", "https")))["scheme"] == "https"


CUSTOM_SECURE = 'secure_scheme_headers = {"X-SCHEME": "secure"}\n'


def test_custom_secure_scheme_headers():
    """secure_scheme_headers replaces the defaults: X-Scheme counts, X-Forwarded-Proto no longer."""
    ours, theirs = _pair(conf=CUSTOM_SECURE)
    with running(ours, theirs):
        assert _compare(ours, theirs, _get(("X-Scheme", "secure")))["scheme"] == "https"
        assert _compare(ours, theirs, _get(("X-Scheme", "other")))["scheme"] == "http"
        assert _compare(ours, theirs, _get(("X-Forwarded-Proto", "https")))["scheme"] == "http"


# -- forwarder_headers: SCRIPT_NAME ---------------------------------------------------------------


def test_script_name_header_from_trusted_proxy(mode):
    """forwarder_headers (default SCRIPT_NAME,PATH_INFO): a trusted peer's SCRIPT_NAME header
    is the mount point (ASGI root_path = WSGI SCRIPT_NAME); ASGI's path keeps the prefix."""
    ours, theirs = _pair(mode=mode)
    with running(ours, theirs):
        view = _compare(ours, theirs, _get(("SCRIPT_NAME", "/app"), path="/app/sub/info"))
        assert (view["mount"], view["path_in_app"]) == ("/app", "/sub/info")
        # A path outside the mount point is a server error in Gunicorn, and here.
        assert _compare(ours, theirs, _get(("SCRIPT_NAME", "/app"), path="/other/info"))["status"] == 500


def test_script_name_header_ignored_when_untrusted_or_not_forwarded():
    untrusted = _pair("--forwarded-allow-ips", "192.0.2.1")
    not_listed = _pair("--forwarder-headers", "PATH_INFO")
    with running(*untrusted, *not_listed):
        for ours, theirs in (untrusted, not_listed):
            view = _compare(ours, theirs, _get(("SCRIPT_NAME", "/app"), path="/app/sub/info"))
            assert (view["mount"], view["path_in_app"]) == ("", "/app/sub/info")


def test_script_name_from_environment():
    """SCRIPT_NAME in the worker's environment (here through raw_env) is the mount point."""
    ours, theirs = _pair("--env", "SCRIPT_NAME=/mounted")
    with running(ours, theirs):
        view = _compare(ours, theirs, _get(path="/mounted/x/info"))
        assert (view["mount"], view["path_in_app"]) == ("/mounted", "/x/info")


def test_root_path_setting(mode):
    """--root-path: ASGI root_path is the setting; path is root_path + the request path
    (the ASGI spec's reading, as uvicorn does); raw_path likewise."""
    server = subject(PROBE, "--root-path", "/mount/", mode=mode)
    with running(server):
        status, info, _ = _ask(server, _get(path="/x%20y/info"))
    assert status == 200
    assert (info["root_path"], info["path"], info["raw_path"]) == ("/mount", "/mount/x y/info", "/mount/x%20y/info")


# -- proxy_protocol + proxy_allow_ips ----------------------------------------------------------------


def _v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def _v2(src: str, dst: str, sport: int, dport: int, command: int = 1) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if s.version == 4 else 0x21  # AF_INET/AF_INET6 + STREAM
    block = s.packed + d.packed + struct.pack(">HH", sport, dport)
    return PP2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(">H", len(block)) + block


CASES = [
    ("v1-tcp4", _v1("203.0.113.7", "198.51.100.1", 40123, 8080), ("203.0.113.7", 40123, "198.51.100.1", 8080)),
    ("v1-tcp6", _v1("2001:db8::7", "2001:db8::1", 40124, 443), ("2001:db8::7", 40124, "2001:db8::1", 443)),
    ("v2-tcp4", _v2("203.0.113.8", "198.51.100.2", 40125, 8081), ("203.0.113.8", 40125, "198.51.100.2", 8081)),
    ("v2-tcp6", _v2("2001:db8::8", "2001:db8::2", 40126, 8443), ("2001:db8::8", 40126, "2001:db8::2", 8443)),
]


def test_proxy_protocol_sets_client(mode):
    """proxy_protocol auto: a v1 line or a v2 header from an allowed peer replaces the
    client (and the server address), exactly as REMOTE_ADDR/REMOTE_PORT/PROXY_ADDR in Gunicorn."""
    ours, theirs = _pair("--proxy-protocol", "auto", mode=mode)
    with running(ours, theirs):
        for name, header, (src, sport, dst, dport) in CASES:
            view = _compare(ours, theirs, header + _get())
            assert (view["client_ip"], view["client_port"], view["server"]) == (src, sport, [dst, dport]), name
        # No PROXY header at all: still served, with the real peer.
        assert _compare(ours, theirs, _get())["client_port"] == "own"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_pinned_version(version):
    """proxy_protocol v1 only understands v1 lines, v2 only v2 headers."""
    ours, theirs = _pair("--proxy-protocol", version)
    with running(ours, theirs):
        for name, header, (src, _, _, _) in CASES:
            if name.startswith(version):
                assert _compare(ours, theirs, header + _get())["client_ip"] == src, name
            else:
                # The other version's header is not a PROXY header here: it is a bad request.
                assert _compare(ours, theirs, header + _get())["status"] == 400, name


def test_proxy_protocol_from_disallowed_peer_is_403(mode):
    ours, theirs = _pair("--proxy-protocol", "auto", "--proxy-allow-from", "192.0.2.1", mode=mode)
    with running(ours, theirs):
        for name, header, _ in CASES:
            assert _compare(ours, theirs, header + _get()) == {"status": 403}, name
        # Without a PROXY header the disallowed peer is an ordinary client.
        assert _compare(ours, theirs, _get())["status"] == 200


def test_proxy_protocol_malformed_is_400():
    ours, theirs = _pair("--proxy-protocol", "v1")
    with running(ours, theirs):
        for bad in (b"PROXY TCP4 203.0.113.7 198.51.100.1 40123\r\n",
                    b"PROXY TCP4 not-an-ip 198.51.100.1 1 2\r\n",
                    b"PROXY UDP4 203.0.113.7 198.51.100.1 1 2\r\n"):
            assert _compare(ours, theirs, bad + _get()) == {"status": 400}, bad


def test_proxy_protocol_client_kept_for_the_whole_connection():
    """The PROXY header comes once per connection; every request on it has that client."""
    server = subject(PROBE, "--proxy-protocol", "v1")
    with running(server), socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_v1("203.0.113.9", "198.51.100.9", 50000, 80))
        clients = []
        for _ in range(3):
            sock.sendall(build_request("/info", close=False))
            data = b""
            while b"}" not in data:
                part = sock.recv(65536)
                assert part
                data += part
            clients.append(json.loads(data.partition(b"\r\n\r\n")[2])["client"])
    assert clients == [["203.0.113.9", 50000]] * 3


def test_proxy_protocol_then_forwarded_headers_trust_the_real_peer():
    """forwarded_allow_ips is checked against the connecting peer (the proxy), not the
    client named in the PROXY header, as in Gunicorn."""
    header = _v1("203.0.113.7", "198.51.100.1", 40123, 8080)
    trusting = _pair("--proxy-protocol", "v1")
    distrusting = _pair("--proxy-protocol", "v1", "--forwarded-allow-ips", "203.0.113.7")
    with running(*trusting, *distrusting):
        assert _compare(*trusting, header + _get(("X-Forwarded-Proto", "https")))["scheme"] == "https"
        assert _compare(*distrusting, header + _get(("X-Forwarded-Proto", "https")))["scheme"] == "http"
