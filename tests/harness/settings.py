"""Helpers for the settings suite (tests/test_settings_*.py): the subject, the reference, running both."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tests.harness.gunicorn import Gunicorn

# -- helpers for the settings suite (tests/test_settings_*.py) ----------------------------------

#: Names another worker class to run the settings tests against (a comparison run, e.g.
#: ``uvicorn_worker.UvicornWorker``); unset, they run against ``pounce_worker.ThreadWorker``.
SETTINGS_WORKER_ENV = "POUNCE_SETTINGS_WORKER"


def subject(app: str, *args: str, mode: str | None = "threads", **kwargs: object) -> Gunicorn:
    """A master running the worker class under test (see ``SETTINGS_WORKER_ENV``)."""
    other = os.environ.get(SETTINGS_WORKER_ENV)
    if other:
        kwargs.update(worker_class=other, loops_expected=False)
        mode = None
    return Gunicorn(app, *args, mode=mode, **kwargs)  # type: ignore[arg-type]


def reference(app: str, *args: str, **kwargs: object) -> Gunicorn:
    """Gunicorn's own sync worker serving a WSGI app: how Gunicorn itself reads a setting."""
    kwargs.setdefault("threads", 1)  # threads > 1 would turn sync into gthread
    return Gunicorn(app, *args, worker_class="sync", mode=None, loops_expected=False, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(*servers: Gunicorn) -> Iterator[tuple[Gunicorn, ...]]:
    """Start several masters at once (they boot in parallel), stop them all afterwards."""
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            if server.proc is not None:
                server.stop()


def config_file(server: Gunicorn, text: str, name: str = "gunicorn.conf.py") -> Path:
    """Write a Gunicorn config file into the server's temp dir; pass it with ``-c``."""
    path = server.tmp / name
    path.write_text(text)
    return path

