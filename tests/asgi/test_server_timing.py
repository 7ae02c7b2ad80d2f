"""Server-Timing (POUNCE_SERVER_TIMING=1): a header with parse, queue and app durations.

Real masters in both forced modes serve tests/feature_apps.py; the header is
read off raw sockets and httpx responses and parsed per the W3C syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import httpx
import pytest

from tests.harness import Gunicorn, RawConnection, http_request

METRIC = re.compile(r"^\s*([A-Za-z0-9_-]+);dur=([0-9.]+)\s*$")


def metrics(value: str) -> dict[str, float]:
    """``{"parse": ms, ...}`` from a Server-Timing value, failing on anything malformed."""
    out = {}
    for item in value.split(","):
        match = METRIC.match(item)
        assert match, f"malformed Server-Timing entry {item!r} in {value!r}"
        out[match[1]] = float(match[2])
    return out


@pytest.fixture(scope="module", params=["threads", "processes"])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    with Gunicorn("tests.feature_apps:app", mode=request.param, env={"POUNCE_SERVER_TIMING": "1"}) as s:
        yield s


def test_header_has_non_negative_parse_queue_app(server: Gunicorn) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(5):  # keep-alive: each request gets its own marks
            response = client.get("/body?size=10")
            found = metrics(response.headers["server-timing"])
            assert set(found) == {"parse", "queue", "app"}
            assert all(v >= 0 for v in found.values())
            assert len(response.headers.get_list("server-timing")) == 1


@pytest.mark.serial  # app durations in ms
def test_app_time_covers_the_time_before_response_start(server: Gunicorn) -> None:
    response = httpx.get(f"{server.url}/sleep?ms=150", timeout=10)
    found = metrics(response.headers["server-timing"])
    assert found["app"] >= 140  # the app slept 150 ms before http.response.start
    assert found["parse"] < 140 and found["queue"] < 140


def test_apps_own_header_is_kept_and_extended(server: Gunicorn) -> None:
    response = httpx.get(f"{server.url}/body?" + urlencode({"size": 10, "timing": "db;dur=5.5"}))
    value = response.headers["server-timing"]
    assert value.startswith("db;dur=5.5, parse;dur=")
    assert metrics(value)["db"] == 5.5


@pytest.mark.serial  # app durations in ms
def test_pipelined_requests_each_get_their_own_header(server: Gunicorn) -> None:
    with RawConnection(server.port) as conn:
        conn.send(http_request("GET", "/sleep?ms=100") + http_request("GET", "/body?size=5"))
        first = conn.read_response()
        second = conn.read_response()
    a = metrics((first.header(b"server-timing") or b"").decode())
    b = metrics((second.header(b"server-timing") or b"").decode())
    assert a["app"] >= 90
    assert b["app"] < 90, "the second request's app time must not include the first's"


@pytest.mark.serial  # app durations in ms
def test_concurrent_requests_on_several_loops(server: Gunicorn) -> None:
    def one(ms: int) -> tuple[int, float]:
        response = httpx.get(f"{server.url}/sleep?ms={ms}", timeout=10)
        return ms, metrics(response.headers["server-timing"])["app"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, [20, 200] * 8))
    for ms, app in results:
        assert app >= ms * 0.9, (ms, app)
    assert min(app for ms, app in results if ms == 20) < 190, "marks leaked between requests"


def test_with_compression_the_header_is_on_the_compressed_response(mode: str) -> None:
    env = {"POUNCE_SERVER_TIMING": "1", "POUNCE_COMPRESSION": "gzip"}
    with Gunicorn("tests.feature_apps:app", mode=mode, env=env) as server:
        response = httpx.get(f"{server.url}/body?size=5000", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert set(metrics(response.headers["server-timing"])) == {"parse", "queue", "app"}


@pytest.mark.parametrize("setting", [None, "0"])
def test_off_by_default_and_with_zero(mode: str, setting: str | None) -> None:
    env = {} if setting is None else {"POUNCE_SERVER_TIMING": setting}
    with Gunicorn("tests.feature_apps:app", mode=mode, env=env) as server:
        plain = httpx.get(f"{server.url}/body?size=10")
        own = httpx.get(f"{server.url}/body?" + urlencode({"size": 10, "timing": "db;dur=1"}))
    assert "server-timing" not in plain.headers
    assert own.headers.get_list("server-timing") == ["db;dur=1"]
