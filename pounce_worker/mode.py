"""Which concurrency model a worker process uses: event-loop threads or one loop.

Threads only pay off when the interpreter runs Python code in parallel, which
is true on a free-threaded build (PEP 703) whose GIL is really off. On a GIL
build, N loops in one process would take turns on one core, so the worker
falls back to Gunicorn's fork model: one loop per process, ``workers`` of them.

``POUNCE_WORKER_MODE`` overrides the choice on any build. Its purpose is
testing: every thread code path must be exercisable on a GIL interpreter.
"""

from __future__ import annotations

import enum
import os
import platform
import sys
from collections.abc import Mapping

MODE_ENV = "POUNCE_WORKER_MODE"


class Mode(enum.Enum):
    THREADS = "threads"
    PROCESSES = "processes"


def gil_enabled() -> bool:
    """Whether the running interpreter serialises Python code with a GIL.

    ``sys._is_gil_enabled`` exists from 3.13 on; the colesbury/nogil-3.12 fork
    lacks it and says ``sys.flags.nogil`` instead; older CPythons have a GIL.
    """
    probe = getattr(sys, "_is_gil_enabled", None)
    if probe is not None:
        return bool(probe())
    return not getattr(sys.flags, "nogil", False)


def interpreter_build() -> str:
    """A one-line description of the interpreter for the boot log."""
    gil = "GIL" if gil_enabled() else "free-threaded, GIL disabled"
    return f"{platform.python_implementation()} {platform.python_version()} ({gil})"


def choose(env: Mapping[str, str] | None = None) -> tuple[Mode, str]:
    """The mode for this interpreter and a sentence saying why.

    Raises ``ValueError`` naming the variable when it holds an unknown value,
    so a typo fails at boot instead of silently choosing the other mode.
    """
    env = os.environ if env is None else env
    forced = env.get(MODE_ENV, "").strip().lower()
    if forced in ("", "auto"):
        if gil_enabled():
            return Mode.PROCESSES, "the interpreter has a GIL, so threads would share one core"
        return Mode.THREADS, "the interpreter is free-threaded"
    try:
        return Mode(forced), f"{MODE_ENV}={forced} forces it"
    except ValueError:
        raise ValueError(
            f"{MODE_ENV}={forced!r} is not one of: auto, threads, processes"
        ) from None


def loop_count(mode: Mode, threads: int) -> int:
    """How many event loops (threads) one worker process runs."""
    return max(1, threads) if mode is Mode.THREADS else 1
