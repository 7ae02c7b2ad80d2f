from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Gunicorn

#: The two forced modes every end-to-end test runs in: thread mode with 2 loops
#: per process, and process mode (one loop per process), on whatever build runs the tests.
MODES = ("threads", "processes")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def started() -> Iterator[list[Gunicorn]]:
    """Servers a test starts are stopped however it ends."""
    servers: list[Gunicorn] = []
    yield servers
    for server in servers:
        server.stop()
