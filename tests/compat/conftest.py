"""Session fixtures: each server starts once and serves every case; observations are cached."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cases import Compat
from .servers import POUNCE_TARGETS, REFERENCE, ServerPool


@pytest.fixture(scope="session")
def compat() -> Iterator[Compat]:
    pool = ServerPool()
    try:
        pool.prestart([(t, f) for t in (REFERENCE, *POUNCE_TARGETS) for f in ("main", "root")])
        yield Compat(pool)
    finally:
        pool.stop_all()
