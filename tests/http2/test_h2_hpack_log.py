"""hpack's module logger: silenced once per process by the worker, never by a loop thread.

hpack logs every field it codes at DEBUG; machine.quiet_hpack replaces that logger (one per
process) for speed. It used to happen at import, i.e. on whichever loop thread first spoke
HTTP/2, after the app had started: the app's own hpack users (httpx, grpclib) then lost
their DEBUG lines depending on when traffic came, even with DEBUG turned on for hpack.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import hpack.hpack
import pytest


@pytest.fixture
def hpack_log():
    original = hpack.hpack.log
    hpack.hpack.log = logging.getLogger(hpack.hpack.__name__)
    yield
    hpack.hpack.log = original


def test_importing_http2_leaves_hpack_alone() -> None:
    """In a fresh interpreter (the import is what is checked): every HTTP/2 module imported."""
    probe = ("import logging, hpack.hpack\n"
             "import pounce_worker.http2.connection, pounce_worker.http2.fastpath, pounce_worker.http2.takeover\n"
             "print(type(hpack.hpack.log).__name__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "Logger", out


def test_quiet_hpack_only_where_nobody_listens_at_debug(hpack_log: None) -> None:
    from pounce_worker.http2.machine import quiet_hpack

    logger = logging.getLogger(hpack.hpack.__name__)
    level = logger.level
    try:
        logger.setLevel(logging.DEBUG)
        quiet_hpack()
        assert hpack.hpack.log is logger  # the app asked for hpack's DEBUG lines
        logger.setLevel(logging.WARNING)
        quiet_hpack()
        assert not isinstance(hpack.hpack.log, logging.Logger)
        hpack.hpack.log.debug("nothing %s", "happens")
    finally:
        logger.setLevel(level)
