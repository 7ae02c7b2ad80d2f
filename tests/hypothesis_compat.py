"""hypothesis, or skip markers where it cannot run.

The free-threaded leg may run on an experimental interpreter (the nogil-3.12
fork is a 3.12 alpha without ``sys.monitoring``) where hypothesis fails at
import. Property tests then report as skipped with that reason, and the rest
of their modules still run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

try:
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    HYPOTHESIS_ERROR: str | None = None
except Exception as exc:
    HYPOTHESIS_ERROR = f"hypothesis cannot run on this interpreter: {type(exc).__name__}: {exc}"

    def given(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
        return pytest.mark.skip(reason=HYPOTHESIS_ERROR)

    example = given  # type: ignore[assignment]

    def settings(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
        return lambda test: test

    class _HealthChecks:
        too_slow = None
        data_too_large = None

        def __iter__(self) -> Any:  # list(HealthCheck), as some tests suppress every check
            return iter(())

    HealthCheck = _HealthChecks()  # type: ignore[assignment,misc]

    class _Inert:
        """Stands for any strategy, st.composite, and what is chained on them
        (``.map``, ``.filter``, ``|``...) at import time; the tests using it are skipped."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self

        def __getattr__(self, name: str) -> Any:
            return self

        def __or__(self, other: Any) -> Any:
            return self

        __ror__ = __or__

    _inert = _Inert()

    class _Strategies:
        def __getattr__(self, name: str) -> Any:
            return _inert

    st = _Strategies()  # type: ignore[assignment]

__all__ = ["HYPOTHESIS_ERROR", "HealthCheck", "example", "given", "leg_examples", "settings", "st"]


def leg_examples(n: int) -> int:
    """How many examples a differential property test runs: ``n`` on tests/run's first
    interpreter leg (and outside tests/run), a quarter of it (at least 100) on the later ones.

    The proofs (fast paths against h11 and wsproto, scanners against h11) run in full once
    per CI run; the other legs check that the same code behaves the same on their
    interpreter, which a quarter of the examples shows, and CI stays under 10 minutes.
    """
    if os.environ.get("POUNCE_TEST_LEG", "1") == "1":
        return n
    return max(n // 4, 100)
