"""What must be checked inside a free-threaded interpreter itself.

The free-threaded leg (the whole suite under ``POUNCE_FREETHREADED_PYTHON``) is a
leg of tests/run, like the 3.11 and 3.13 legs: tests/freethreaded_leg.py makes its
venv, and tests/run sets ``IN_LEG_ENV`` in it. The tests here skip on GIL builds.
"""

from __future__ import annotations

import pytest

from pounce_worker.mode import gil_enabled
from tests.harness import serve

FT_ENV = "POUNCE_FREETHREADED_PYTHON"
#: Set by tests/run in the free-threaded leg (tests/test_conf_container.py reads it).
IN_LEG_ENV = "POUNCE_IN_FREETHREADED_LEG"


@pytest.mark.skipif(gil_enabled(), reason="needs a free-threaded interpreter (runs in the free-threaded leg)")
def test_auto_mode_is_threads_and_gil_stays_off() -> None:
    """On a free-threaded build, auto mode picks threads and booting the worker keeps the GIL off."""
    with serve("tests.apps:echo", mode=None, threads=3) as server:
        log = server.log()
        assert "threads mode (the interpreter is free-threaded), 3 event loop(s) with asyncio" in log
        assert "GIL was re-enabled" not in log
