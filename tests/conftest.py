from __future__ import annotations

import pytest

#: The two forced modes every end-to-end test runs in: thread mode with 2 loops
#: per process, and process mode (one loop per process), on whatever build runs the tests.
MODES = ("threads", "processes")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
