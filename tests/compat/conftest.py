"""Session fixtures: each server starts once and serves every case; observations are cached."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from .cases import Compat, _importable
from .servers import POUNCE_TARGETS, REFERENCE, ServerPool


@pytest.fixture(scope="session")
def compat() -> Iterator[Compat]:
    pool = ServerPool()
    try:
        try:
            pool.prestart([(t, f) for t in (REFERENCE, *POUNCE_TARGETS) for f in ("main", "root")])
        except (RuntimeError, TimeoutError):
            reference_down(pool)
            raise
        yield Compat(pool)
    finally:
        pool.stop_all()


def reference_down(pool: ServerPool) -> None:
    """Skip, saying why, when uvicorn itself cannot serve on this interpreter.

    Without the reference there is nothing to compare with: an experimental
    interpreter (the free-threaded leg's nogil-3.12 alpha) may lack uvicorn or a
    package the app needs. A pounce_worker server that fails to start is not
    excused: this returns and the caller re-raises.
    """
    if not _importable("uvicorn"):
        pytest.skip(f"uvicorn (the compat reference) cannot be imported on Python {sys.version.split()[0]}")
    for flavor in ("main", "root"):
        served = pool.servers.get((REFERENCE, flavor))
        if served is None:
            continue
        proc = served.server.proc
        if proc is not None and proc.poll() is not None:
            lines = [line for line in served.output().splitlines() if line.strip()]
            pytest.skip(
                f"uvicorn (the compat reference) cannot start on Python {sys.version.split()[0]}: "
                f"{lines[-1] if lines else f'exit code {proc.returncode}'}"
            )
