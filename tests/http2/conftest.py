"""Fixtures of the HTTP/2 suites: one server per row and module, certificates per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Gunicorn
from tests.http2.h2_harness import SERVERS, client_context, h2_server, make_certs
from tests.inprocess import clock, make_rig  # noqa: F401  (the in-process rig's fixtures)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("h2certs"))


def _row(row: str, tls: bool | None = None) -> object:
    """A fixture parameter; Gunicorn's own ``-k asgi`` row is marked ``peer`` (tests/run runs
    peers' rows on the first interpreter leg only: a peer's behaviour does not change with ours)."""
    value = row if tls is None else (row, tls)
    return pytest.param(value, marks=pytest.mark.peer) if row == "asgi" else value


@pytest.fixture(scope="module", params=[_row(row) for row in SERVERS])
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


@pytest.fixture(scope="module", params=[_row(row, tls) for row in SERVERS for tls in (False, True)],
                ids=lambda p: f"{p[0]}-{'tls' if p[1] else 'h2c'}")
def h2any(request: pytest.FixtureRequest, certs: dict[str, Path]) -> Iterator[Gunicorn]:
    """A server of each row over each transport: h2c prior knowledge, and TLS where ALPN picks ``h2``.

    ``row`` names the row, ``tls`` says which transport (a module's tests share it).
    """
    row, tls = request.param
    server = h2_server(row, tls=(certs["server.pem"], certs["server.key"]) if tls else None)
    server.row = row  # type: ignore[attr-defined]
    server.tls = tls  # type: ignore[attr-defined]
    server.client_ctx = client_context(certs["ca.pem"]) if tls else None  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()
