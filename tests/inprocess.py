"""In-process rig for the HTTP/1.1 connection: a fake transport, a clock the test moves, a real LoopServer.

The end-to-end tests see deadlines, the order of writes and flow control only
through a real socket and the wall clock, so they can show that something
happens, but hardly exactly when or in which order. Here the connection is driven
through its ``asyncio.Protocol`` interface alone (``connection_made``,
``data_received``, ``eof_received``, ``connection_lost``, ``pause_writing``,
``resume_writing``), and every call it makes on its transport is recorded in
order. The loop is a real asyncio loop run by the test thread, the server a real
``LoopServer`` (its ``sweep`` fires the deadlines, its ``spawn_request`` starts
the apps), so what is tested is the production code path, minus the socket.

Time is a ``Clock`` that replaces ``time.monotonic`` for the test, which is what
``LoopServer.sweep``, the deadlines armed from ``deadline_base`` and the loop's
own ``call_later`` timers (the send timeout, the disconnect grace) all read. It
moves only when the test says so (``Rig.advance``), so a test of a 60 s timeout
runs in a millisecond, and nothing depends on how fast the machine is.

Only public behaviour is touched, so these tests hold across refactors of the
connection's insides (they passed unchanged across the split of the ASGI cycle
out of http1/connection.py). Beyond the Protocol interface they use
``LoopServer``'s ``sweep``, ``deadline_base``, ``stopping``, ``connections``,
``active`` and ``rejected``, and ``HTTPConnection.shutdown`` (what a stop calls);
``Rig.settle`` looks at the loop's queue of ready callbacks, asyncio's, not ours.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from pounce_worker.asgi.hooks import Hooks
from pounce_worker.budget import RequestBudget
from pounce_worker.config import ServerConfig
from pounce_worker.log import LoopLog
from pounce_worker.loop.server import LoopServer

#: Where the test clock starts: any value; far from 0 so that "0 means no deadline" stays unambiguous.
CLOCK_START = 10_000.0
#: Loop iterations Rig.settle runs at most before it decides the loop will never be quiet.
SETTLE_LIMIT = 2000
#: The date header every response carries is replaced by this in Conn.output(), so expected bytes are exact.
DATE = b"DATE"

Call = tuple[Any, ...]


class Clock:
    """``time.monotonic`` for one test: it moves only when ``advance`` says so."""

    def __init__(self, start: float = CLOCK_START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.now += seconds


class FakeTransport(asyncio.Transport):
    """A socket transport that records every call made on it, in order.

    It behaves as asyncio's selector transport where the connection can tell:
    ``close``/``abort`` end in ``connection_lost`` on a later loop iteration
    (``close`` only once a full buffer drained), a write after ``write_eof``
    raises, and returning a false value from ``eof_received`` closes it. Writes
    never block: a client that stops reading is played by ``Conn.stop_reading``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        peername: Any = ("127.0.0.1", 50000),
        sockname: Any = ("127.0.0.1", 8000),
        tls: bool = False,
    ) -> None:
        super().__init__()
        self.loop = loop
        self.calls: list[Call] = []
        self.extra = {"peername": peername, "sockname": sockname, "sslcontext": object() if tls else None}
        self.tls = tls
        self.protocol: asyncio.BaseProtocol | None = None
        self.closing = False
        self.eof_written = False
        self.lost = False
        self.reading = True
        # The client reads nothing (Conn.stop_reading): each write leaves our buffer over its
        # high-water mark, and the transport pauses its protocol as asyncio's does, in write().
        self.full = False
        self.protocol_paused = False
        #: What get_write_buffer_size says: bytes written and not yet taken by the client
        #: (a test sets it, and lowers it with Conn.read_some).
        self.buffered = 0

    # -- what the connection calls ---------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.calls.append(("set_protocol",))
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return not self.tls

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written:
            self.calls.append(("write-after-eof", bytes(data)))
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return  # asyncio's transports ignore empty writes too
        # asyncio takes a write after close() (and loses it once the socket is gone): recorded
        # under its own name, so that a test of the order of calls sees it.
        self.calls.append(("write-after-close" if self.closing else "write", bytes(data)))
        if self.full:
            self.pause_protocol()

    def pause_protocol(self) -> None:
        if not self.protocol_paused:
            self.protocol_paused = True
            self.protocol.pause_writing()  # type: ignore[union-attr]

    def resume_protocol(self) -> None:
        if self.protocol_paused:
            self.protocol_paused = False
            if self.closing:  # closed with a full buffer: it drained, the close completes
                self.loop.call_soon(self._lose, None)
            else:
                self.protocol.resume_writing()  # type: ignore[union-attr]

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self.calls.append(("write_eof",))
        self.eof_written = True

    def pause_reading(self) -> None:
        self.calls.append(("pause_reading",))
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append(("resume_reading",))
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        """As asyncio's: connection_lost once what is buffered has gone (at once when nothing is)."""
        self.calls.append(("close",))
        if not self.closing:
            self.closing = True
            if not self.protocol_paused:
                self.loop.call_soon(self._lose, None)

    def abort(self) -> None:
        """As asyncio's: the buffer is dropped, connection_lost comes at once."""
        self.calls.append(("abort",))
        self.closing = True
        self.loop.call_soon(self._lose, None)

    def _lose(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            assert self.protocol is not None
            self.protocol.connection_lost(exc)


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, run in the caller: ``run_in_executor`` work is done when submitted.

    A thread pool would finish on its own time, and ``Rig.settle`` could not tell
    "quiet" from "waiting for a thread"; inline, the result is a ready callback.
    (A ThreadPoolExecutor that starts no thread: asyncio takes no other kind.)
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class RecordingLog:
    """Gunicorn's logger as far as LoopLog uses it: keeps each line with its level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _record(self, level: str) -> Callable[..., None]:
        def log(msg: object, *args: object, **_kw: object) -> None:
            self.lines.append((level, str(msg) % args if args else str(msg)))

        return log

    def __getattr__(self, name: str) -> Any:
        if name in ("debug", "info", "warning", "error", "exception", "critical"):
            return self._record(name)
        raise AttributeError(name)

    access = Logger.access  # not overridden and no access log: LoopLog makes no access calls
    access_log_enabled = False

    def text(self, level: str | None = None) -> str:
        return "\n".join(line for lvl, line in self.lines if level is None or lvl == level)


class Conn:
    """One client connection: the protocol under test and the transport it writes to."""

    def __init__(self, rig: Rig, protocol: asyncio.Protocol, transport: FakeTransport) -> None:
        self.rig = rig
        self.transport = transport
        transport.protocol = protocol

    @property
    def protocol(self) -> Any:
        """The transport's protocol now: the one a WebSocket or HTTP/2 takeover installed, if any."""
        return self.transport.protocol

    def _deliver(self, data: bytes) -> None:
        self.protocol.data_received(data)

    # -- the client's side ------------------------------------------------------------------

    def send(self, data: bytes, settle: bool = True) -> None:
        """Bytes arrive from the client, in one read (as the transport's read callback delivers them)."""
        self.rig.call(self._deliver, data, settle=settle)

    def send_eof(self, settle: bool = True) -> None:
        """The client's FIN: as asyncio's transport, close unless the protocol says to keep it open."""

        def eof() -> None:
            if self.transport.closing:
                return
            if not self.protocol.eof_received():
                self.transport.close()

        self.rig.call(eof, settle=settle)

    def reset(self, settle: bool = True) -> None:
        """The connection is gone (a reset, or the transport finished closing)."""
        self.rig.call(self.transport._lose, ConnectionResetError("reset by peer"), settle=settle)

    def stop_reading(self, settle: bool = True) -> None:
        """The client stops reading: our buffer is full now (pause_writing), and after every write."""
        self.transport.full = True
        self.rig.call(self.transport.pause_protocol, settle=settle)

    def read_buffered(self, settle: bool = True) -> None:
        """The client reads what is buffered (resume_writing), and no more: the next write fills it again."""
        self.rig.call(self.transport.resume_protocol, settle=settle)

    def read_some(self, size: int) -> None:
        """The client takes ``size`` bytes of our buffer, which stays over its low-water mark."""
        self.transport.buffered = max(0, self.transport.buffered - size)

    def start_reading(self, settle: bool = True) -> None:
        """The client reads again, and keeps reading."""
        self.transport.full = False
        self.rig.call(self.transport.resume_protocol, settle=settle)

    # -- what the server did ------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        return self.transport.calls

    def kinds(self) -> list[str]:
        """The transport calls made so far, by name only (``write`` for each write)."""
        return [call[0] for call in self.transport.calls]

    def writes(self) -> list[bytes]:
        """Each write, in order, with the Date header's value replaced by DATE."""
        return [self.rig.undate(call[1]) for call in self.transport.calls if call[0] == "write"]

    def output(self) -> bytes:
        """All bytes written so far, as the client would read them (Date replaced by DATE)."""
        return b"".join(self.writes())

    def take(self) -> bytes:
        """``output()``, then forget the calls so far: the next assertions see only what follows."""
        out = self.output()
        self.transport.calls.clear()
        return out

    @property
    def lost(self) -> bool:
        """connection_lost was called: the slot is free."""
        return self.transport.lost

    @property
    def open(self) -> bool:
        return not self.transport.closing and not self.transport.eof_written


class Rig:
    """A LoopServer with an asyncio loop that the test thread runs step by step."""

    def __init__(
        self,
        app: Any,
        clock: Clock,
        *,
        env: dict[str, str] | None = None,
        fast_path: bool = True,
        **settings: Any,
    ) -> None:
        self.clock = clock
        cfg = Config()
        for name, value in settings.items():
            cfg.set(name, value)
        environ = {"POUNCE_WORKER_MODE": "threads", "POUNCE_FAST_PATH": "1" if fast_path else "0", **(env or {})}
        self.config = ServerConfig.from_gunicorn(cfg, env=environ)
        self.log = RecordingLog()
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(InlineExecutor())
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.server = LoopServer(
            0, self.config, app, [], None, None, Hooks.from_gunicorn(cfg),
            LoopLog(self.log, os.getpid(), 0), RequestBudget(sys.maxsize), "asyncio",
        )
        self.server.loop = self.loop  # what LoopServer.run does on its own thread
        self.server.deadline_base = clock.now
        self.conns: list[Conn] = []

    def connect(self, **transport_options: Any) -> Conn:
        """A client connects: the protocol LoopServer makes for an accepted socket, on a fake transport."""
        transport = FakeTransport(self.loop, **transport_options)
        protocol = self.server.connection_class(self.server)
        transport.protocol = protocol
        conn = Conn(self, protocol, transport)
        self.conns.append(conn)
        self.server.active += 1  # what the accept gate counts (connection_closed gives it back)
        self.call(protocol.connection_made, transport)
        return conn

    # -- running the loop ------------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, settle: bool = True) -> None:
        """Run ``fn(*args)`` as a loop callback (as the transport calls its protocol), then settle."""
        self.loop.call_soon(fn, *args)
        if settle:
            self.settle()
        else:
            self.iterate()

    def iterate(self) -> None:
        """Run the callbacks ready now, and no more: exactly one loop iteration."""
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()

    def settle(self) -> None:
        """Run the loop until nothing is left to do now: every ready callback and due timer has run."""
        loop = self.loop

        async def until_quiet() -> None:
            for _ in range(SETTLE_LIMIT):
                await asyncio.sleep(0)
                ready = loop._ready  # type: ignore[attr-defined]  # asyncio's own queue
                scheduled = loop._scheduled  # type: ignore[attr-defined]
                due = any(not handle.cancelled() and handle.when() <= loop.time() for handle in scheduled)
                if not ready and not due:
                    return
            raise AssertionError(f"the loop never became quiet in {SETTLE_LIMIT} iterations")

        loop.run_until_complete(until_quiet())

    def run(self, coro: Any) -> Any:
        """Run a coroutine of the test's on the loop (for an app's helper), then settle."""
        result = self.loop.run_until_complete(coro)
        self.settle()
        return result

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: move the clock and the deadline base as a tick does, sweep, settle.

        The base is the clock itself (a tick makes it the clock plus one tick, which only
        makes deadlines fire later), so a deadline of T seconds fires exactly T seconds
        after the event that armed it.
        """
        self.clock.advance(seconds)
        self.server.deadline_base = self.clock.now
        self.server.sweep()
        self.settle()

    def stop_gracefully(self) -> None:
        """A graceful stop reaches the loop: what ``LoopServer``'s drain does to each connection.

        (``stopping`` set, ``HTTPConnection.shutdown`` on every connection; the drain's
        waiting and the lifespan shutdown are the end-to-end tests'.)
        """

        def stop() -> None:
            self.server.stopping = True
            for connection in list(self.server.connections):
                connection.shutdown()

        self.call(stop)

    def tick(self) -> None:
        """A tick without time passing: what is due fires."""
        self.advance(0.0)

    # -- reading what happened -------------------------------------------------------------------

    def undate(self, data: bytes) -> bytes:
        date = self.server.date_header
        return data.replace(date, DATE) if date else data

    def close(self) -> None:
        loop = self.loop
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks))
        loop.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The test's clock, installed as ``time.monotonic`` (and so as the loop's ``time()``)."""
    fake = Clock()
    monkeypatch.setattr(time, "monotonic", fake)
    return fake


@pytest.fixture
def make_rig(clock: Clock) -> Iterator[Callable[..., Rig]]:
    """``make_rig(app, fast_path=..., env=..., **gunicorn_settings)``; loops closed at the end.

    A test also fails at the end if the loop caught an exception nobody expected
    (a callback that raised, a task whose exception was never retrieved).
    """
    rigs: list[Rig] = []

    def make(app: Any, **options: Any) -> Rig:
        rig = Rig(app, clock, **options)
        rigs.append(rig)
        return rig

    yield make
    errors = []
    for rig in rigs:
        rig.close()
        errors += rig.loop_errors
    assert not errors, f"the loop reported errors: {errors}"


@pytest.fixture(params=["fast", "h11"])
def fast(request: pytest.FixtureRequest) -> bool:
    """Both request paths: the fast path (default) and h11 (POUNCE_FAST_PATH=0)."""
    return request.param == "fast"
