"""Per-loop log context: every error-log line names the worker pid and loop.

With several loops in one process, "[1234] Error handling request" no longer
says which loop failed, and a stuck loop cannot be told from a busy one. Each
loop thread gets its own ``LoopLog``, a thin wrapper over Gunicorn's logger
(so ``errorlog``, ``loglevel``, ``logger_class`` and ``logconfig`` keep their
meaning) that prefixes the messages it writes. The prefix is fixed at creation,
so the object is immutable and needs no lock; Gunicorn's logger does its own
locking around file reopening.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

#: What asyncio says when an object made on one loop is used from another (a module-level
#: ``asyncio.Lock`` or ``Queue``, a client or pool made by another loop's lifespan).
_OTHER_LOOP = re.compile(r"(attached to|bound to) a different (event )?loop")


def other_loop_hint(exc: BaseException | None, loops: int) -> str:
    """A sentence for an app failure caused by an asyncio object of another loop, with
    several loops in this process (thread mode); otherwise "". The app is fine under
    uvicorn's one loop per process, so the log says why it fails here and what to do."""
    seen = 0
    while exc is not None and seen < 10:
        if loops > 1 and isinstance(exc, RuntimeError) and _OTHER_LOOP.search(str(exc)):
            return (f" (an asyncio object made on another of this process's {loops} event loops: in thread "
                    "mode each loop thread runs the app; make such objects per loop, in the lifespan "
                    "startup into scope['state'], or set POUNCE_WORKER_MODE=processes; see README, "
                    "'Free-threading guide for app authors')")
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return ""


def wants_access_calls(log: Any) -> bool:
    """Whether ``log.access`` must be called for each request.

    True when an access log is configured, and also when ``logger_class`` is a
    subclass that overrides ``access`` (Gunicorn's statsd logger counts
    requests and durations there, with or without an access log file).
    """
    if type(log).access is not Logger.access:
        return True
    return bool(getattr(log, "access_log_enabled", True))


class LoopLog:
    __slots__ = ("_log", "access_wanted", "prefix")

    def __init__(self, log: Any, pid: int, index: int) -> None:
        self._log = log
        self.prefix = f"[worker {pid} loop {index}] "
        self.access_wanted = wants_access_calls(log)

    def _tag(self, msg: object) -> str:
        return self.prefix + str(msg)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log.debug(self._tag(msg), *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log.info(self._tag(msg), *args, **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log.warning(self._tag(msg), *args, **kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log.error(self._tag(msg), *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._log.exception(self._tag(msg), *args, **kwargs)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        # Access lines keep the user's access_log_format untouched.
        self._log.access(resp, req, environ, request_time)

    @property
    def gunicorn_log(self) -> Any:
        return self._log
