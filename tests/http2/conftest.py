"""Fixtures of the HTTP/2 suites: one server per row and module, certificates per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Gunicorn
from tests.http2.h2_harness import SERVERS, h2_server, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("h2certs"))


@pytest.fixture(scope="module", params=list(SERVERS))
def h2c(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """A server of each row speaking h2c (prior knowledge), shared by a module's tests.

    Tests that take it leave the server serving (that is what they check); ``row`` names it.
    """
    server = h2_server(request.param)
    server.row = request.param  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=list(SERVERS))
def h2tls(request: pytest.FixtureRequest, certs: dict[str, Path]) -> Iterator[Gunicorn]:
    """A server of each row speaking HTTP/2 over TLS (ALPN ``h2``), shared by a module's tests."""
    server = h2_server(request.param, tls=(certs["server.pem"], certs["server.key"]))
    server.row = request.param  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()
