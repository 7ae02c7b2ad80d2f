"""``ThreadWorker``: the Gunicorn worker class.

The worker process's main thread keeps every duty Gunicorn gives a worker:
it owns the signals (only the main thread may install handlers), writes the
heartbeat, watches the parent, and counts ``max_requests``. The HTTP work runs
in ``LoopServer`` threads, one asyncio loop each: N of them in thread mode
(free-threaded builds), exactly one in process mode (GIL builds), so both modes
run the same code and Gunicorn's fork model supplies the parallelism in the
second. The main thread speaks to loops only through ``request_stop`` (which
uses ``call_soon_threadsafe``) and reads their ``last_tick`` for the heartbeat:
a loop blocked by a synchronous call stops ticking, the heartbeat stops, and
the arbiter's WORKER TIMEOUT restarts the process as it would a sync worker.
With ``POUNCE_STATUS_BIND`` set, one more thread serves the loops' counters to
operators (status.py); it starts before the loops and stops after them.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import select
import sys
import threading
import time
import traceback
from typing import Any

from gunicorn import sock as gsock
from gunicorn.workers import base

from . import http2
from . import mode as _mode
from .asgi import ASGIApp, Message, Receive, Scope, Send, as_asgi3
from .asgi.hooks import Hooks
from .budget import RequestBudget
from .config import ConfigError, ServerConfig
from .log import LoopLog
from .loop.server import LoopServer
from .status.readings import WorkerFacts
from .status.server import StatusServer
from .websocket import session as websocket

#: Gunicorn's exit code for "the worker cannot boot": the arbiter halts instead of respawning.
WORKER_BOOT_ERROR = 3
#: Seconds past POUNCE_LIFESPAN_STARTUP_TIMEOUT the main thread waits for a loop to report its
#: own timeout (it cancels the lifespan task, up to server.LIFESPAN_CANCEL_WAIT) before it
#: concludes that the loop is blocked and exits with the boot-error code itself.
STARTUP_GRACE = 2.0


def resolve_loop_kind(requested: str, log: Any) -> str:
    """asyncio or uvloop, following Gunicorn's ``asgi_loop`` setting.

    uvloop is a C extension without free-threading support: importing it on a
    free-threaded build would switch the GIL back on for the whole process, so
    it is never imported there, whatever the setting says.
    """
    if requested == "asyncio":
        return "asyncio"
    if not _mode.gil_enabled():
        if requested == "uvloop":
            log.warning("asgi_loop='uvloop' ignored: uvloop would re-enable the GIL; using asyncio")
        return "asyncio"
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if requested == "uvloop":
        log.warning("asgi_loop='uvloop' but uvloop is not installed; using asyncio")
    return "asyncio"


class _Silent:
    """A logger for resolve_loop_kind's second call: run() logs its warnings once."""

    def warning(self, *args: Any, **kwargs: Any) -> None:
        return None


def import_before_switching_user(cfg: Any) -> None:
    """Import what the loops import lazily (the event loop, the default executor's thread
    pool, HTTP/2's stack) while the worker still runs as the user that started Gunicorn.

    Gunicorn switches to ``user``/``group`` next (``Worker.init_process``). A Python whose
    files that user cannot read (a pyenv under /root, a virtualenv in a private home) then
    fails every import not yet done: the loop died at its start with ``ModuleNotFoundError:
    concurrent.futures.thread`` (uvloop's init imports it), where ``-k asgi``, which imports
    them up front, served. A failure here is left to the lazy import, which reports it.
    """
    if cfg.uid == os.geteuid() and cfg.gid == os.getegid():
        return  # no switch coming
    try:
        config = ServerConfig.from_gunicorn(cfg)
        import concurrent.futures.thread  # noqa: F401 - asyncio's default executor
        import hashlib  # noqa: F401 - 3.13's random.seed imports it lazily: Gunicorn seeds after the switch

        if resolve_loop_kind(config.loop_kind, _Silent()) == "uvloop":
            import uvloop  # noqa: F401
        if config.http2 and http2.AVAILABLE:
            from .http2 import connection, exchange  # noqa: F401 - h2, hpack, hyperframe
    except Exception:  # run() reports a bad setting; the lazy import says the rest
        return


def _error_app(message: str) -> ASGIApp:
    """Served after a reload hit a SyntaxError, so the developer sees it in the browser."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event: Message = await receive()
                kind = event["type"].replace("lifespan.", "")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = message.encode("utf-8", "replace")
        await send({"type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": body})

    return app


#: Bytes of the one block ``settle_allocator`` allocates and frees (see there).
ALLOCATOR_SETTLE = 8 * 1024 * 1024


def settle_allocator() -> None:
    """Let glibc's malloc keep the memory a burst of large bodies uses, instead of returning it
    to the kernel after every loop iteration and faulting it back in on the next.

    glibc serves blocks under its mmap threshold (128 KiB at start) from the heap, and gives
    the heap's top back to the kernel (brk, or madvise in a thread's arena) whenever more than
    twice that lies free there. A loop that reads 64 connections' 64 KiB bodies in one
    iteration and answers them in the next frees ~4 MiB at the top every round: measured
    (bench/cost.py driving POST 64 KiB echoes in memory), 7,100 brk calls per 20,000 requests
    and 50 µs a request, against 69 and 21 µs once settled. glibc raises both thresholds
    itself the first time it frees a block it had to mmap (its dynamic threshold, what any
    long-running process reaches after one large allocation): freeing one 8 MiB block here,
    before the loops start, reaches that state at once. Harmless elsewhere (another libc
    simply frees the block).
    """
    block = bytes(ALLOCATOR_SETTLE)
    del block


class ThreadWorker(base.Worker):
    """Serve an ASGI app from Gunicorn with one asyncio loop per thread."""

    asgi: ASGIApp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.servers: list[LoopServer] = []
        self.fast_exit = False
        self._budget_spent = threading.Event()
        self._stale_reported: set[int] = set()
        self.status: StatusServer | None = None

    @property
    def nr(self) -> int:
        """Requests served so far, as Gunicorn's workers keep it for hooks (``worker.nr``).

        Summed from the loops' own counters on each read rather than counted here: each
        loop increments only its own, so no lock is needed on the request path, and a
        read racing an increment is one request behind at worst.
        """
        return sum(server.requests for server in getattr(self, "servers", ()))

    @nr.setter
    def nr(self, value: int) -> None:
        """Ignored: ``base.Worker.__init__`` assigns 0, and the loops keep the count."""

    # -- boot --------------------------------------------------------------------

    @staticmethod
    def validated_config(cfg: Any) -> ServerConfig:
        """The worker's frozen config, or ConfigError naming the first setting it cannot run with.

        Shared by the master (check_config, at its start) and every worker (run): after a
        HUP the master rereads its settings but never calls check_config again, so each
        new worker must refuse a bad one itself, with the boot-error code.
        """
        config = ServerConfig.from_gunicorn(cfg)
        if config.protocol not in ("http", "uwsgi"):
            raise ConfigError(
                f"protocol={cfg.protocol!r} is not supported: this worker speaks "
                "protocol='http' or protocol='uwsgi'"
            )
        if config.protocol == "uwsgi" and config.proxy_protocol != "off":
            # Gunicorn's uwsgi parser ignores PROXY headers; here one would be read as a
            # malformed uwsgi packet: say so at boot instead.
            raise ConfigError(f"protocol='uwsgi' cannot be combined with proxy_protocol={cfg.proxy_protocol!r}")
        why_not = http2.unusable() if config.http2 else None
        if why_not:
            raise ConfigError(
                f"http_protocols={','.join(config.http_protocols)} includes h2 but {why_not}: "
                "install pounce_worker[http2], or drop h2 from http_protocols"
            )
        return config

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Runs in the master at boot: validate settings and say which mode runs."""
        try:
            config = cls.validated_config(cfg)
        except ConfigError as exc:
            raise RuntimeError(f"pounce_worker: {exc}") from None
        chosen, why = _mode.choose()
        build = _mode.interpreter_build()
        if getattr(cfg, "http_parser", "auto") == "fast":
            # -k asgi's 'fast' demands the gunicorn_h1c C parser; this worker never uses it.
            log.warning(
                "pounce_worker: http_parser='fast' ignored: this worker parses requests with its "
                "own fast path and h11, never gunicorn_h1c (POUNCE_FAST_PATH=0 sends every request "
                "through h11)"
            )
        if chosen is _mode.Mode.PROCESSES and cfg.threads > 1:
            log.warning(
                "pounce_worker: threads=%d ignored: %s (%s), so each worker process "
                "runs one event loop. Set workers=%d instead (conf/gunicorn.conf.py picks "
                "workers x threads from the interpreter), run on a free-threaded build "
                "(3.14t) to get threads, or set %s=threads to force them.",
                cfg.threads, why, build, cfg.workers * cfg.threads, _mode.MODE_ENV,
            )
        elif chosen is _mode.Mode.THREADS and _mode.gil_enabled():
            log.warning(
                "pounce_worker: thread mode on a GIL build (%s): %d loops per worker share "
                "one core. Meant for testing the thread code paths.", why, config.loops,
            )

    def init_process(self) -> None:
        self.gil_at_boot = _mode.gil_enabled()
        settle_allocator()
        import_before_switching_user(self.cfg)
        super().init_process()

    def load_wsgi(self) -> None:
        try:
            self.wsgi = self.app.wsgi()
        except SyntaxError as exc:
            if not self.cfg.reload:
                raise
            self.log.exception(exc)
            if self.reloader is not None and exc.filename is not None:
                self.reloader.add_extra_file(exc.filename)
            with io.StringIO() as tb:
                traceback.print_exception(exc, file=tb)
                self.wsgi = _error_app(tb.getvalue())
        self.asgi = as_asgi3(self.wsgi)

    # -- signals (main thread only) -----------------------------------------------

    def handle_quit(self, sig: int, frame: Any) -> None:
        """QUIT/INT: fast shutdown; connections are closed without waiting."""
        self.alive = False
        self.fast_exit = True
        self.cfg.worker_int(self)

    def handle_abort(self, sig: int, frame: Any) -> None:
        """ABRT comes from the arbiter's timeout: say which loop was stuck, then die."""
        self.alive = False
        self.log.error("Worker aborted; loop state: %s", self._status())
        if self.status is not None:
            self.status.close()  # a unix socket file must not outlive the worker
        self.cfg.worker_abort(self)
        sys.exit(1)

    def budget_exhausted(self) -> None:
        """Called from a loop thread when ``max_requests`` is reached."""
        self._budget_spent.set()
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.PIPE[1], b".")
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBADF):
                raise

    def _sleep(self, timeout: float) -> None:
        """Wait for a signal, a wake-up from a loop, or the timeout."""
        try:
            ready, _, _ = select.select([self.PIPE[0]], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self.PIPE[0], 4096):
                    pass
            except (BlockingIOError, InterruptedError):
                pass

    # -- main loop -----------------------------------------------------------------

    def run(self) -> None:
        try:
            config = self.validated_config(self.cfg)
        except ConfigError as exc:
            # Only reachable after a HUP (the master checked its first settings): halt the
            # master naming the setting, as a failed app import does, not respawn forever.
            self.log.error("pounce_worker: %s", exc)
            sys.exit(WORKER_BOOT_ERROR)
        self.config = config
        loop_kind = resolve_loop_kind(config.loop_kind, self.log)
        chosen, why = _mode.choose()
        self.log.info(
            "pounce_worker: %s mode (%s), %d event loop(s) with %s, worker_connections=%d, %s",
            chosen.value, why, config.loops, loop_kind, config.worker_connections,
            _mode.interpreter_build(),
        )
        if config.http2:
            from .http2.machine import quiet_hpack  # imports h2: only where HTTP/2 is on

            quiet_hpack()
        if not websocket.AVAILABLE:
            self.log.warning(
                "pounce_worker: wsproto is not installed, so WebSocket handshakes reach the app as plain HTTP"
            )
        if not self.gil_at_boot and _mode.gil_enabled():
            self.log.warning(
                "The GIL was re-enabled while loading the app (a C extension without "
                "free-threading support?): the %d loops will share one core.", config.loops,
            )
        ssl_context = gsock.ssl_context(self.cfg) if config.is_ssl else None
        if ssl_context is not None:
            # ALPN in http_protocols order (h2 only when HTTP/2 is on), set once at boot: an
            # ssl_context hook's own context gets the same list as Gunicorn's default one.
            ssl_context.set_alpn_protocols(config.alpn_protocols)
        listeners = [getattr(s, "sock", s) for s in self.sockets]
        for listener in listeners:
            listener.setblocking(False)
        hooks = Hooks.from_gunicorn(self.cfg)
        budget = RequestBudget(self.max_requests)
        self.servers = [
            LoopServer(i, config, self.asgi, listeners, ssl_context, self, hooks,
                       LoopLog(self.log, self.pid, i), budget, loop_kind)
            for i in range(config.loops)
        ]
        for server in self.servers:
            server.siblings = tuple(self.servers)
        if not self.alive:
            return  # a stop signal arrived while the app was being imported: nothing to start
        if config.status_bind is not None:
            facts = WorkerFacts(self.pid, chosen.value, config.loops, config.tick,
                                self.max_requests if self.max_requests < sys.maxsize else 0,
                                time.monotonic(), time.time())
            self.status = StatusServer.open(config.status_bind, facts, self.servers, budget, self.log)
        for server in self.servers:
            thread = threading.Thread(target=server.run, name=f"pounce-loop-{server.index}", daemon=True)
            server.thread = thread
            thread.start()
        if not self._wait_started():
            return
        self._serve()
        self._stop()

    def _interval(self) -> float:
        return max(0.05, min(1.0, self.timeout / 2 if self.timeout else 1.0))

    def _wait_started(self) -> bool:
        """Heartbeat while every loop runs lifespan startup; exit on a failure.

        With POUNCE_LIFESPAN_STARTUP_TIMEOUT set (the default), the heartbeat goes on
        up to that bound even while a loop does not tick (a synchronous startup step such
        as loading a model is allowed that long); a loop that has not finished startup
        by then is blocked, since it would have reported its own timeout, and the worker
        exits with the boot-error code. With 0 (no bound) the heartbeat follows the
        loops' ticks, as after boot, so a loop blocked in startup meets the arbiter's timeout.
        """
        limit = self.config.lifespan_startup_timeout
        threads_started = time.monotonic()
        while not all(server.started.is_set() for server in self.servers):
            if limit:
                self._startup_overdue(limit, threads_started)
                self.notify()
            elif self._loops_responsive():
                self.notify()
            self._sleep(0.05)
            if not self.alive:
                self._stop()
                return False
        failed = [s for s in self.servers if s.startup_error is not None or s.loop is None]
        if failed:
            self.log.error(
                "Worker failed to boot: %d of %d loops failed lifespan startup",
                len(failed), len(self.servers),
            )
            self.fast_exit = False
            self._stop()
            sys.exit(WORKER_BOOT_ERROR)
        return True

    def _startup_overdue(self, limit: float, threads_started: float) -> None:
        """Exit with the boot-error code when a loop's startup outlived its bound without ending."""
        now = time.monotonic()
        overdue = [
            s for s in self.servers
            if not s.started.is_set() and now - (s.startup_began or threads_started) > limit + STARTUP_GRACE
        ]
        if not overdue:
            return
        for server in overdue:
            lag = now - server.last_tick
            self.log.error(
                "Loop %d: ASGI lifespan startup did not complete within POUNCE_LIFESPAN_STARTUP_TIMEOUT=%gs "
                "and the loop has not run for %.1fs%s",
                server.index, limit, lag,
                " (a synchronous call in the app's startup blocks it)" if lag > self.config.tick + 1.0 else "",
            )
        self.log.error(
            "Worker failed to boot: %d of %d loops did not finish lifespan startup",
            len(overdue), len(self.servers),
        )
        self._stale_reported.update(s.index for s in overdue)  # said above; _stop need not repeat it
        self.fast_exit = True
        self._stop()
        sys.exit(WORKER_BOOT_ERROR)

    def _serve(self) -> None:
        interval = self._interval()
        while self.alive:
            if self._budget_spent.is_set():
                self.log.info("Autorestarting worker after current request.")
                break
            self._sleep(interval)
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            if self._budget_spent.is_set():
                self.log.info("Autorestarting worker after current request.")
                break
            dead = [s.index for s in self.servers if s.thread is not None and not s.thread.is_alive()]
            if dead:
                self.log.error("Event loop thread(s) %s died; restarting the worker", dead)
                self.alive = False
                break
            if self._loops_responsive():
                self.notify()
        self.alive = False

    def _loops_responsive(self) -> bool:
        now = time.monotonic()
        limit = self.config.tick + 1.0
        healthy = True
        for server in self.servers:
            if server.finished or (server.thread is not None and not server.thread.is_alive()):
                continue  # drained and stopped: no ticks expected
            if server.loop is None:
                continue  # still creating its loop (importing uvloop): it ticks from its start
            lag = now - server.last_tick
            if lag > limit:
                healthy = False
                if server.index not in self._stale_reported:
                    self._stale_reported.add(server.index)
                    self.log.warning(
                        "Loop %d has not run for %.1fs (a blocking call in the app?); "
                        "heartbeat withheld. Loops: %s", server.index, lag, self._status(),
                    )
            else:
                self._stale_reported.discard(server.index)
        return healthy

    def _status(self) -> str:
        return "; ".join(
            "loop {loop}: {connections}/{limit} connections, {requests} requests, "
            "accepting={accepting}, lag={lag}s".format(**s.snapshot())
            for s in self.servers
        )

    def _stop(self) -> None:
        """Tell every loop to stop and wait for them, heartbeating while they drain."""
        graceful = not self.fast_exit
        for server in self.servers:
            server.request_stop(graceful)
        # Drain (graceful_timeout), then lifespan shutdown; fast exits wait briefly.
        budget = self.cfg.graceful_timeout + 5.0 if graceful else 1.0
        deadline = time.monotonic() + budget
        for server in self.servers:
            thread = server.thread
            while thread is not None and thread.is_alive() and time.monotonic() < deadline:
                if self.fast_exit and graceful:
                    # QUIT arrived during a graceful stop: hurry up.
                    graceful = False
                    deadline = min(deadline, time.monotonic() + 1.0)
                    for other in self.servers:
                        other.request_stop(False)
                if self._loops_responsive():
                    self.notify()
                thread.join(min(0.1, max(0.0, deadline - time.monotonic())))
        stuck = [s.index for s in self.servers if s.thread is not None and s.thread.is_alive()]
        if stuck:
            self.log.warning("Loops %s did not stop in time; exiting anyway", stuck)
        if self.status is not None:
            # Last: the view stays readable while the loops drain.
            self.status.stop()
            self.status = None
