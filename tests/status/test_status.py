"""The operator status view (POUNCE_STATUS_BIND): pure formatting, then real gunicorn masters.

The end-to-end tests drive known traffic (a number of requests, held keep-alive
connections, a full accept gate, a loop blocked by a synchronous call) and read
the numbers back over each worker's own status address, as JSON and as
Prometheus text parsed with prometheus_client's parser (what a scraper runs).
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pounce_worker import config
from pounce_worker.mode import gil_enabled
from pounce_worker.status import bind as status_bind
from pounce_worker.status import readings as status
from tests.harness import HOST, Gunicorn, RawConnection, http_request, poll_until

STATUS_LOG = r"status view of worker (\d+) on (\S+) \(POUNCE_STATUS_BIND\)"


# -- helpers ----------------------------------------------------------------------------------


def _loops_for(mode: str) -> int:
    return 3 if mode == "threads" else 1


def _server(mode: str, *args: str, bind: str = "127.0.0.1:0", workers: int = 1,
            app: str = "tests.apps:echo", **env: str) -> Gunicorn:
    environ = {"POUNCE_STATUS_BIND": bind, **env} if bind else dict(env)
    return Gunicorn(app, *args, mode=mode, threads=_loops_for(mode), workers=workers, env=environ)


def _addresses(server: Gunicorn, count: int = 1) -> dict[int, str]:
    """pid -> status address, from the boot lines every worker logs."""
    found = server.wait_for_log(STATUS_LOG, count=count)
    return {int(pid): address for pid, address in found}


def _client(address: str) -> httpx.Client:
    if address.startswith("unix:"):
        return httpx.Client(transport=httpx.HTTPTransport(uds=address[5:]), base_url="http://status", timeout=5)
    return httpx.Client(base_url=f"http://{address}", timeout=5)


def _json(address: str) -> dict[str, Any]:
    with _client(address) as client:
        response = client.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _metrics(address: str) -> dict[str, Any]:
    """Families by name (counters without ``_total``, as the parser names them)."""
    with _client(address) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def _sample_sum(families: dict[str, Any], family: str, sample: str) -> float:
    return sum(s.value for s in families[family].samples if s.name == sample)


def _listening_tcp_inodes(pid: int) -> set[int]:
    """Inodes of TCP sockets in LISTEN state that process ``pid`` holds open."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    listening.add(int(fields[9]))
    owned = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                owned.add(int(target[8:-1]))
    return listening & owned


def _keepalive_connection(port: int) -> RawConnection:
    """A connection that has been served one request and stays open (keep-alive)."""
    conn = RawConnection(port, timeout=10)
    conn.send(http_request("GET", "/"))
    assert conn.read_response().status == 200
    return conn


# -- pure functions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("127.0.0.1:9100", status_bind.StatusBind(socket.AF_INET, "127.0.0.1", 9100, span=34)),
        ("localhost:9100", status_bind.StatusBind(socket.AF_INET, "127.0.0.1", 9100, span=34)),
        ("[::1]:0", status_bind.StatusBind(socket.AF_INET6, "::1", 0, span=34)),
        ("127.0.0.2:9100", status_bind.StatusBind(socket.AF_INET, "127.0.0.2", 9100, span=34)),
        ("unix:/run/p/status-{pid}.sock", status_bind.StatusBind(socket.AF_UNIX, path="/run/p/status-{pid}.sock")),
    ],
)
def test_parse_bind_accepts_loopback_and_unix(text, expected):
    assert status_bind.parse_bind(text, allow_remote=False, workers=2) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0.0.0:9100", "is not a loopback address"),
        ("192.168.1.10:9100", "is not a loopback address"),
        ("[::]:9100", "is not a loopback address"),
        ("9100", "is not HOST:PORT"),
        ("127.0.0.1:http", "is not HOST:PORT"),
        ("127.0.0.1:70000", "is not HOST:PORT"),
        ("status.example:9100", "must be an IP address or localhost"),
        ("unix:/run/status.sock", "must be absolute and contain {pid}"),
        ("unix:status-{pid}.sock", "must be absolute and contain {pid}"),
    ],
)
def test_parse_bind_refuses_naming_the_setting(text, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        status_bind.parse_bind(text, allow_remote=False, workers=1)
    assert str(info.value).startswith(f"POUNCE_STATUS_BIND={text!r}")


def test_non_loopback_needs_the_explicit_allowance():
    bind = status_bind.parse_bind("0.0.0.0:9100", allow_remote=True, workers=3)
    assert bind is not None and bind.host == "0.0.0.0"
    assert [port for _, port in bind.candidates(1)] == list(range(9100, 9100 + 3 + status_bind.TTIN_HEADROOM))


def test_config_reads_the_setting_and_fails_with_config_error():
    cfg = SimpleNamespace(
        threads=1, workers=2, worker_connections=100, asgi_loop="asyncio", asgi_lifespan="auto",
        forwarded_allow_ips="", proxy_allow_ips="", secure_scheme_headers={}, proxy_protocol=False,
        keepalive=2, timeout=30, graceful_timeout=30, limit_request_line=4094, limit_request_fields=100,
        limit_request_field_size=8190, root_path="", is_ssl=False, forwarder_headers=[],
    )
    assert config.ServerConfig.from_gunicorn(cfg, env={}).status_bind is None
    on = config.ServerConfig.from_gunicorn(cfg, env={"POUNCE_STATUS_BIND": " 127.0.0.1:9100 "})
    assert on.status_bind == status_bind.StatusBind(socket.AF_INET, "127.0.0.1", 9100, span=34)
    with pytest.raises(config.ConfigError, match=re.escape("POUNCE_STATUS_BIND='0.0.0.0:1' is not a loopback")):
        config.ServerConfig.from_gunicorn(cfg, env={"POUNCE_STATUS_BIND": "0.0.0.0:1"})
    allowed = config.ServerConfig.from_gunicorn(
        cfg, env={"POUNCE_STATUS_BIND": "0.0.0.0:1", "POUNCE_STATUS_ALLOW_REMOTE": "1"}
    )
    assert allowed.status_bind is not None


def _fake_loop(index: int, **overrides: Any) -> SimpleNamespace:
    started = threading.Event()
    started.set()
    values: dict[str, Any] = dict(
        index=index, accepting=True, active=3, stopping=False, finished=False, limit=10, peak=7,
        requests=41, rejected=2, lag=0.002, lag_total=0.5, ticks=120, last_tick=100.0,
        config=SimpleNamespace(tick=0.5), loop=object(), started=started,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


@pytest.mark.parametrize(
    ("overrides", "exhausted", "reason"),
    [
        ({}, False, None),
        ({"accepting": False, "active": 10}, False, "full"),
        ({"accepting": False, "stopping": True}, False, "stopping"),
        ({"accepting": False}, True, "max_requests"),
        ({"accepting": False}, False, "backoff"),
    ],
)
def test_read_loop_says_why_accepting_paused(overrides, exhausted, reason):
    reading = status.read_loop(_fake_loop(0, **overrides), now=100.2, budget_exhausted=exhausted)
    assert reading.accept_paused is (reason is not None)
    assert reading.accept_paused_reason == reason


def test_read_loop_lag_grows_while_a_loop_does_not_tick():
    healthy = status.read_loop(_fake_loop(0), now=100.2)
    assert healthy.lag == pytest.approx(0.002)
    assert healthy.last_tick_age == pytest.approx(0.2)
    blocked = status.read_loop(_fake_loop(0), now=103.0)
    assert blocked.last_tick_age == pytest.approx(3.0)
    assert blocked.lag == pytest.approx(2.5)  # the tick due at 100.5 is 2.5 s late


def _reading(loops: int = 2, mode: str = "threads", max_requests: int = 0) -> status.WorkerReading:
    facts = status.WorkerFacts(4242, mode, loops, 0.5, max_requests, 0.0, 1_700_000_000.0)
    budget = SimpleNamespace(exhausted=False, spent=82)
    servers = [_fake_loop(i, last_tick=time.monotonic()) for i in range(loops)]
    return status.read_worker(facts, servers, budget, "127.0.0.1:9100")


def test_prometheus_text_parses_with_help_type_and_labels():
    text = status.to_prometheus(_reading(max_requests=1000))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["pounce_requests"]
    assert requests.type == "counter"
    assert requests.documentation.startswith("Requests served")
    assert sorted((s.name, s.labels["worker"], s.labels["thread"], s.value) for s in requests.samples) == [
        ("pounce_requests_total", "4242", "0", 41.0), ("pounce_requests_total", "4242", "1", 41.0),
    ]
    assert families["pounce_connections_open"].type == "gauge"
    assert families["pounce_worker_max_requests_limit"].samples[0].value == 1000
    assert families["pounce_worker_info"].samples[0].labels["mode"] == "threads"
    # Every family is introduced by exactly one HELP and one TYPE line, in that order.
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names)) == len(families)
    for name in names:
        assert f"# HELP {name} " in text
        assert text.index(f"# HELP {name} ") < text.index(f"# TYPE {name} ")


def test_prometheus_omits_an_unlimited_max_requests_and_escapes_labels():
    reading = _reading(mode='odd "mode"\\\n')
    text = status.to_prometheus(reading)
    assert "pounce_worker_max_requests_limit" not in text
    info = next(f for f in text_string_to_metric_families(text) if f.name == "pounce_worker_info")
    assert info.samples[0].labels["mode"] == 'odd "mode"\\\n'


def test_json_document_shape_and_totals():
    document = json.loads(status.to_json(_reading(loops=3, max_requests=500)))
    assert set(document) == {"worker", "totals", "loops"}
    assert document["worker"]["pid"] == 4242
    assert document["worker"]["max_requests"] == {"spent": 82, "limit": 500}
    assert document["totals"]["requests"] == 3 * 41
    assert document["totals"]["connections"] == 3 * 3
    assert [loop["thread"] for loop in document["loops"]] == [0, 1, 2]


def test_route_serves_json_metrics_and_refuses_the_rest():
    reading = _reading()
    assert status.route(b"GET", b"/", lambda: reading)[:2] == (200, status.JSON_TYPE)
    assert status.route(b"GET", b"/status?pretty=1", lambda: reading)[:2] == (200, status.JSON_TYPE)
    assert status.route(b"HEAD", b"/metrics", lambda: reading)[:2] == (200, status.PROMETHEUS_TYPE)
    assert status.route(b"GET", b"/nope", lambda: reading)[0] == 404
    assert status.route(b"POST", b"/status", lambda: reading)[0] == 405


# -- end to end: real gunicorn masters -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_off_by_default_nothing_listens(mode):
    with _server(mode, bind="") as server:
        [pid] = server.worker_pids()
        assert len(_listening_tcp_inodes(pid)) == 1  # the app's listener only
        assert "status view" not in server.log()
    # The same probe sees the status listener when the view is on (so the check above can fail).
    with _server(mode) as server:
        [(pid, address)] = _addresses(server).items()
        assert len(_listening_tcp_inodes(pid)) == 2
        assert _json(address)["worker"]["pid"] == pid


@pytest.mark.timeout(90)
def test_numbers_agree_with_the_traffic_driven(mode):
    with _server(mode, "--max-requests", "1000", "--max-requests-jitter", "0") as server:
        [(pid, address)] = _addresses(server).items()
        assert server.worker_pids() == [pid]
        # 37 requests: 30 over keep-alive connections, 7 on a fresh connection each.
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(30):
                assert client.get("/").status_code == 200
        for _ in range(7):
            assert httpx.get(server.url + "/", headers={"connection": "close"}, timeout=10).status_code == 200
        poll_until(lambda: _json(address)["totals"]["requests"] >= 37, what="37 requests counted")
        document = _json(address)
        families = _metrics(address)

    worker = document["worker"]
    assert worker["pid"] == pid
    assert worker["mode"] == mode
    assert worker["loops"] == _loops_for(mode) == len(document["loops"])
    assert worker["gil_enabled"] is gil_enabled()
    assert worker["interpreter"].endswith(platform.python_version())
    assert worker["uptime"] > 0
    assert worker["status_address"] == address
    assert worker["max_requests"] == {"spent": 37, "limit": 1000}
    assert document["totals"]["requests"] == 37
    assert sum(loop["requests"] for loop in document["loops"]) == 37
    assert [loop["thread"] for loop in document["loops"]] == list(range(_loops_for(mode)))
    for loop in document["loops"]:
        assert loop["accept_paused"] is False and loop["accept_paused_reason"] is None
        assert loop["ticks"] >= 1 and loop["last_tick_age"] < 5
        assert loop["rejected"] == 0

    assert _sample_sum(families, "pounce_requests", "pounce_requests_total") == 37
    samples = families["pounce_requests"].samples
    assert {s.labels["worker"] for s in samples} == {str(pid)}
    assert sorted(s.labels["thread"] for s in samples) == [str(i) for i in range(_loops_for(mode))]
    assert families["pounce_requests"].type == "counter"
    assert families["pounce_worker_max_requests_spent"].samples[0].value == 37
    assert families["pounce_worker_loops"].samples[0].value == _loops_for(mode)


@pytest.mark.timeout(90)
def test_open_connections_and_full_accept_gate(mode):
    # 6 connections for the worker: 3 loops x 2 in thread mode, 1 loop x 6 in process mode.
    with _server(mode, "--worker-connections", "6", "--keep-alive", "60") as server:
        [(_pid, address)] = _addresses(server).items()
        held = [_keepalive_connection(server.port) for _ in range(5)]
        try:
            poll_until(lambda: _json(address)["totals"]["connections"] == 5, what="5 open connections")
            families = _metrics(address)
            assert _sample_sum(families, "pounce_connections_open", "pounce_connections_open") == 5
            assert _json(address)["totals"]["accept_paused_loops"] < _loops_for(mode)

            held.append(_keepalive_connection(server.port))  # the 6th fills every loop
            poll_until(lambda: _json(address)["totals"]["accept_paused_loops"] == _loops_for(mode),
                       what="every loop paused")
            document = _json(address)
            assert document["totals"]["connections"] == 6
            for loop in document["loops"]:
                assert loop["connections"] == loop["connection_limit"]
                assert loop["accept_paused"] is True and loop["accept_paused_reason"] == "full"
            families = _metrics(address)
            assert _sample_sum(families, "pounce_accept_paused", "pounce_accept_paused") == _loops_for(mode)

            # A 7th client waits in the backlog: connected, not accepted, not counted.
            waiting = RawConnection(server.port, timeout=10)
            waiting.send(http_request("GET", "/"))
            time.sleep(0.5)
            assert _json(address)["totals"]["connections"] == 6
            held.pop(0).close()  # one slot frees: the waiting client is accepted and served
            assert waiting.read_response().status == 200
            held.append(waiting)
            poll_until(lambda: _json(address)["totals"]["connections"] == 6, what="6 connections again")
        finally:
            for conn in held:
                conn.close()
        poll_until(lambda: _json(address)["totals"]["connections"] == 0, what="connections closed")
        assert _json(address)["totals"]["accept_paused_loops"] == 0


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("0.0.0.0:9100", "POUNCE_STATUS_BIND='0.0.0.0:9100' is not a loopback address"),
        ("127.0.0.1", "POUNCE_STATUS_BIND='127.0.0.1' is not HOST:PORT"),
    ],
    ids=["non-loopback", "malformed"],
)
@pytest.mark.timeout(60)
def test_bad_bind_fails_the_boot_naming_the_setting(mode, bind, message):
    server = _server(mode, bind=bind)
    returncode = server.boot_failure(30)
    assert returncode != 0
    assert message in server.output()
    assert "Booting worker" not in server.output()


@pytest.mark.timeout(90)
def test_two_workers_get_two_reachable_addresses_from_the_base_port(mode, reserved_ports):
    base = reserved_ports(4)  # room for both workers and a replacement each
    with _server(mode, bind=f"127.0.0.1:{base}", workers=2) as server:
        addresses = _addresses(server, count=2)
        assert sorted(addresses) == server.worker_pids()
        assert len(set(addresses.values())) == 2
        for pid, address in addresses.items():
            host, port = address.rsplit(":", 1)
            assert host == HOST and base <= int(port) < base + 4
            assert _json(address)["worker"]["pid"] == pid
            assert all(s.labels["worker"] == str(pid) for s in _metrics(address)["pounce_requests"].samples)


@pytest.mark.timeout(60)
def test_unix_socket_per_worker_removed_at_stop(mode, tmp_path):
    template = str(tmp_path / "status-{pid}.sock")
    server = _server(mode, bind=f"unix:{template}", workers=2)
    with server:
        addresses = _addresses(server, count=2)
        assert sorted(addresses) == server.worker_pids()
        for pid, address in addresses.items():
            assert address == "unix:" + template.replace("{pid}", str(pid))
            assert _json(address)["worker"]["pid"] == pid
    assert list(tmp_path.glob("status-*.sock")) == []


@pytest.mark.serial  # two readings must fall inside the 4 s the loop is blocked
@pytest.mark.timeout(90)
def test_blocked_loop_shows_growing_lag_while_another_loop_answers(mode):
    # Thread mode: 3 loops in one process. Process mode: 2 workers, one loop each.
    workers = 1 if mode == "threads" else 2
    with _server(mode, app="tests.apps:spin", workers=workers) as server:
        addresses = list(_addresses(server, count=workers).values())
        blocker = RawConnection(server.port, timeout=20)
        blocker.send(http_request("GET", "/spin/4"))  # time.sleep(4) on whichever loop takes it

        def blocked() -> tuple[str, int, dict[str, Any]] | None:
            for address in addresses:
                for loop in _json(address)["loops"]:
                    if loop["last_tick_age"] > 1.2:
                        return address, loop["thread"], loop
            return None

        poll_until(lambda: blocked() is not None, timeout=10, what="a loop stops ticking")
        found = blocked()
        assert found is not None
        address, thread, first = found
        # Another loop still serves the app while this one is stuck.
        assert httpx.get(server.url + "/other", headers={"connection": "close"}, timeout=5).status_code == 200
        time.sleep(0.6)
        second = next(loop for loop in _json(address)["loops"] if loop["thread"] == thread)
        assert second["last_tick_age"] > first["last_tick_age"] + 0.4
        assert second["lag"] > first["lag"] + 0.4
        gauge = {
            s.labels["thread"]: s.value
            for s in _metrics(address)["pounce_loop_last_tick_age_seconds"].samples
        }
        assert gauge[str(thread)] >= second["last_tick_age"]
        assert second["requests"] == first["requests"]  # nothing finished there meanwhile

        assert blocker.read_response().status == 200
        blocker.close()
        # Recovered: ticking again, and the late tick is on record.
        poll_until(
            lambda: next(loop for loop in _json(address)["loops"] if loop["thread"] == thread)["last_tick_age"] < 1.0,
            what="the loop ticks again",
        )
        after = next(loop for loop in _json(address)["loops"] if loop["thread"] == thread)
        assert after["lag_total"] >= 2.0


@pytest.mark.timeout(60)
def test_status_http_edges(mode):
    with _server(mode) as server:
        [(_pid, address)] = _addresses(server).items()
        port = int(address.rsplit(":", 1)[1])
        head = RawConnection(port)
        head.send(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        response = head.read_response(method=b"HEAD")
        assert response.status == 200 and response.body == b""
        assert int(response.header(b"content-length") or 0) > 100
        assert head.closed_by_server(5)
        head.close()
        with _client(address) as client:
            posted = client.post("/status", content=b"x")
            assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
            assert client.get("/nope").status_code == 404
            assert client.get("/").json()["worker"]["status_address"] == address
        with RawConnection(port) as garbage:
            garbage.send(b"NOT HTTP AT ALL\r\n\r\n")
            assert garbage.read_response().status == 400
        # The app port is untouched by status clients: nothing counted there.
        assert _json(address)["totals"]["requests"] == 0


@pytest.mark.timeout(90)
def test_unix_socket_removed_when_the_arbiter_aborts_a_stuck_worker(mode, tmp_path):
    template = str(tmp_path / "status-{pid}.sock")
    server = _server(mode, "--timeout", "2", bind=f"unix:{template}", app="tests.apps:spin")
    with server:
        [(stuck, address)] = _addresses(server).items()
        blocker = RawConnection(server.port, timeout=20)
        blocker.send(http_request("GET", "/spin/15"))
        server.wait_for_log(r"WORKER TIMEOUT", timeout=30)
        found = _addresses(server, count=2)
        [fresh] = [pid for pid in found if pid != stuck]
        poll_until(lambda: stuck not in server.worker_pids(), what="the stuck worker gone")
        assert not Path(address[5:]).exists()
        assert _json(found[fresh])["worker"]["pid"] == fresh
        blocker.close()
