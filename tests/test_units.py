"""Unit tests of the pure parts: mode choice, frozen config, the shared request budget,
ASGI plumbing, the per-loop log prefix, and the master's boot-time ``check_config``."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import platform
import sys
import threading
import types

import pytest
from gunicorn.config import Config

from pounce_worker import asgi, budget, config, mode
from pounce_worker.log import LoopLog
from pounce_worker.worker import ThreadWorker, resolve_loop_kind
from tests.hypothesis_compat import example, given, leg_examples, settings, st


@pytest.fixture
def gil(monkeypatch: pytest.MonkeyPatch):
    """Pretend the interpreter has the GIL on (True), off (False), or predates the probe (None)."""

    def set_gil(enabled: bool | None) -> None:
        if enabled is None:
            monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)
            monkeypatch.setattr(sys, "flags", types.SimpleNamespace())
        else:
            monkeypatch.setattr(sys, "_is_gil_enabled", lambda: enabled, raising=False)

    monkeypatch.delenv(mode.MODE_ENV, raising=False)
    return set_gil


class RecordingLog:
    """Stands in for Gunicorn's logger: keeps (level, message % args)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _add(self, level: str, msg: object, *args: object, **_kw: object) -> None:
        self.records.append((level, str(msg) % args if args else str(msg)))

    def debug(self, msg, *args, **kw):
        self._add("debug", msg, *args, **kw)

    def info(self, msg, *args, **kw):
        self._add("info", msg, *args, **kw)

    def warning(self, msg, *args, **kw):
        self._add("warning", msg, *args, **kw)

    def error(self, msg, *args, **kw):
        self._add("error", msg, *args, **kw)

    def exception(self, msg, *args, **kw):
        self._add("exception", msg, *args, **kw)

    def access(self, resp, req, environ, request_time):
        self._add("access", "access")

    def of(self, level: str) -> list[str]:
        return [m for lvl, m in self.records if lvl == level]


def gunicorn_cfg(**settings: object) -> Config:
    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    return cfg


# -- mode.py ------------------------------------------------------------------------------------------------


def test_gil_probe(gil):
    gil(False)
    assert mode.gil_enabled() is False
    gil(True)
    assert mode.gil_enabled() is True


def test_gil_assumed_when_probe_missing(gil, monkeypatch):
    gil(None)
    assert mode.gil_enabled() is True
    monkeypatch.setattr(sys, "flags", types.SimpleNamespace(nogil=True))  # the nogil-3.12 fork
    assert mode.gil_enabled() is False


def test_free_threaded_build_chooses_threads(gil):
    gil(False)
    chosen, why = mode.choose({})
    assert chosen is mode.Mode.THREADS
    assert "free-threaded" in why
    assert mode.loop_count(chosen, 6) == 6


@pytest.mark.parametrize("enabled", [True, None], ids=["gil-enabled", "no-probe"])
def test_gil_build_chooses_processes(gil, enabled):
    gil(enabled)
    chosen, why = mode.choose({})
    assert chosen is mode.Mode.PROCESSES
    assert "GIL" in why
    assert mode.loop_count(chosen, 6) == 1


@pytest.mark.parametrize(
    ("value", "gil_on", "expected"),
    [
        ("threads", True, mode.Mode.THREADS),
        (" Threads ", True, mode.Mode.THREADS),
        ("processes", False, mode.Mode.PROCESSES),
        ("PROCESSES", False, mode.Mode.PROCESSES),
        ("auto", False, mode.Mode.THREADS),
        ("auto", True, mode.Mode.PROCESSES),
        ("", True, mode.Mode.PROCESSES),
    ],
)
def test_env_forces_the_mode(gil, value, gil_on, expected):
    gil(gil_on)
    chosen, why = mode.choose({mode.MODE_ENV: value})
    assert chosen is expected
    if value.strip().lower() in ("threads", "processes"):
        assert mode.MODE_ENV in why


def test_env_read_from_process_environment(gil, monkeypatch):
    gil(True)
    monkeypatch.setenv(mode.MODE_ENV, "threads")
    assert mode.choose()[0] is mode.Mode.THREADS


@pytest.mark.parametrize("bad", ["thread", "fork", "1", "gil"])
def test_bad_env_value_names_the_variable(gil, bad):
    gil(True)
    with pytest.raises(ValueError, match=rf"POUNCE_WORKER_MODE='{bad}' is not one of: auto, threads, processes"):
        mode.choose({mode.MODE_ENV: bad})


def test_loop_count():
    assert mode.loop_count(mode.Mode.THREADS, 4) == 4
    assert mode.loop_count(mode.Mode.THREADS, 0) == 1
    assert mode.loop_count(mode.Mode.PROCESSES, 8) == 1


def test_interpreter_build_names_the_gil_state(gil, monkeypatch):
    gil(True)
    assert mode.interpreter_build().endswith("(GIL)")
    gil(False)
    assert mode.interpreter_build().endswith("(free-threaded, GIL disabled)")
    # The nogil-3.12 fork: no sys._is_gil_enabled, sys.flags.nogil instead.
    gil(None)
    monkeypatch.setattr(sys, "flags", types.SimpleNamespace(nogil=True))
    assert mode.interpreter_build().endswith("(free-threaded, GIL disabled)")
    # Named as platform names it: "CPython" on CPython and on that fork too (whose
    # sys.implementation.name is "nogil").
    assert mode.interpreter_build().startswith(f"{platform.python_implementation()} {platform.python_version()} (")


# -- config.py -----------------------------------------------------------------------------------------------


@given(total=st.integers(1, 100_000), loops=st.integers(1, 64))
def test_shares_add_up_and_are_fair(total, loops):
    shares = [config.share(total, loops, i) for i in range(loops)]
    assert min(shares) >= 1
    if total >= loops:
        assert sum(shares) == total
        assert max(shares) - min(shares) <= 1


def test_share_examples():
    assert [config.share(1000, 3, i) for i in range(3)] == [334, 333, 333]
    assert [config.share(2, 2, i) for i in range(2)] == [1, 1]
    assert [config.share(3, 2, i) for i in range(2)] == [2, 1]


def test_from_gunicorn_thread_mode_splits_worker_connections():
    cfg = gunicorn_cfg(threads=3, worker_connections=10, keepalive=4, root_path="/api/")
    server = config.ServerConfig.from_gunicorn(cfg, env={mode.MODE_ENV: "threads"})
    assert server.mode is mode.Mode.THREADS
    assert server.loops == 3
    assert server.worker_connections == 10
    assert [server.connections_for(i) for i in range(3)] == [4, 3, 3]
    assert server.keepalive == 4.0
    assert server.root_path == "/api"
    assert (server.limit_request_line, server.limit_request_fields, server.limit_request_field_size) == (
        cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size)


def test_from_gunicorn_process_mode_keeps_whole_worker_connections():
    cfg = gunicorn_cfg(threads=3, worker_connections=10)
    server = config.ServerConfig.from_gunicorn(cfg, env={mode.MODE_ENV: "processes"})
    assert server.loops == 1
    assert server.connections_for(0) == 10


def test_config_is_frozen():
    server = config.ServerConfig.from_gunicorn(gunicorn_cfg(), env={mode.MODE_ENV: "threads"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        server.keepalive = 10  # type: ignore[misc]


def test_too_few_worker_connections_for_the_loops():
    cfg = gunicorn_cfg(threads=4, worker_connections=3)
    with pytest.raises(config.ConfigError, match=r"worker_connections=3 .* 4 event loops"):
        config.ServerConfig.from_gunicorn(cfg, env={mode.MODE_ENV: "threads"})


def test_bad_mode_is_a_config_error():
    with pytest.raises(config.ConfigError, match="POUNCE_WORKER_MODE='nope'"):
        config.ServerConfig.from_gunicorn(gunicorn_cfg(), env={mode.MODE_ENV: "nope"})


def test_env_settings_defaults_and_values():
    env = {mode.MODE_ENV: "threads"}
    server = config.ServerConfig.from_gunicorn(gunicorn_cfg(), env=env)
    assert (server.header_timeout, server.max_body_size, server.tick) == (15.0, 0, 0.5)
    env |= {"POUNCE_HEADER_TIMEOUT": "2.5", "POUNCE_MAX_BODY_SIZE": "1024", "POUNCE_SHUTDOWN_TICK": " "}
    server = config.ServerConfig.from_gunicorn(gunicorn_cfg(), env=env)
    assert (server.header_timeout, server.max_body_size, server.tick) == (2.5, 1024, 0.5)
    server = config.ServerConfig.from_gunicorn(gunicorn_cfg(), env={**env, "POUNCE_SHUTDOWN_TICK": "0"})
    assert server.tick == 0.5  # 0 would spin the loop: the default applies


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("POUNCE_HEADER_TIMEOUT", "soon", "is not a number"),
        ("POUNCE_MAX_BODY_SIZE", "-1", "must not be negative"),
        ("POUNCE_SHUTDOWN_TICK", "1s", "is not a number"),
        ("POUNCE_SHUTDOWN_TICK", "0.001", "must be between 0.01 and 5 seconds"),
        ("POUNCE_SHUTDOWN_TICK", "30", "must be between 0.01 and 5 seconds"),
    ],
)
def test_bad_env_settings_name_the_variable(name, value, message):
    with pytest.raises(config.ConfigError, match=rf"{name}='{value}' {message}"):
        config.ServerConfig.from_gunicorn(gunicorn_cfg(), env={mode.MODE_ENV: "threads", name: value})


def test_nan_and_inf_name_the_variable_for_every_number_setting():
    """float() accepts them: a nan header timeout never fired, an inf tick never ticked,
    and the integer settings failed with a bare OverflowError."""
    for name in config.ENV_SETTINGS:
        for value in ("nan", "inf", "1e999"):
            with pytest.raises(config.ConfigError, match=rf"{name}='{value}' is not a finite number"):
                config.ServerConfig.from_gunicorn(gunicorn_cfg(), env={mode.MODE_ENV: "threads", name: value})


@pytest.mark.parametrize(("setting", "value"), [("asgi_loop", "tokio"), ("asgi_lifespan", "maybe")])
def test_bad_asgi_settings(setting, value):
    class Cfg:
        def __init__(self, real: Config) -> None:
            self._real = real

        def __getattr__(self, name: str) -> object:
            return value if name == setting else getattr(self._real, name)

    with pytest.raises(config.ConfigError, match=rf"{setting}='{value}'"):
        config.ServerConfig.from_gunicorn(Cfg(gunicorn_cfg()), env={mode.MODE_ENV: "threads"})


def test_max_head_size_covers_the_limits():
    server = config.ServerConfig.from_gunicorn(
        gunicorn_cfg(limit_request_line=100, limit_request_fields=10, limit_request_field_size=50),
        env={mode.MODE_ENV: "threads"},
    )
    assert server.max_head_size >= 100 + 10 * 50


# -- budget.py ------------------------------------------------------------------------------------------------


def test_budget_fires_exactly_once():
    b = budget.RequestBudget(3)
    assert [b.spend() for _ in range(6)] == [False, False, True, False, False, False]
    assert b.spent == 6


@pytest.mark.parametrize("limit", [0, -1])
def test_no_budget_never_fires(limit):
    b = budget.RequestBudget(limit)
    assert not any(b.spend() for _ in range(10_000))


def test_budget_is_exact_across_threads():
    b = budget.RequestBudget(40_000)
    fired: list[bool] = []
    start = threading.Barrier(8)

    def spend() -> None:
        start.wait()
        local = [b.spend() for _ in range(5_000)]
        fired.extend(x for x in local if x)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.spent == 40_000
    assert fired == [True]


# -- asgi.py ---------------------------------------------------------------------------------------------------


async def _asgi3_function(scope, receive, send):
    await send({"scope": scope})


class _Asgi3Instance:
    async def __call__(self, scope, receive, send):
        await send({"scope": scope})


class _Asgi2Class:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"asgi2": self.scope, "received": await receive()})


def _asgi2_function(scope):
    async def instance(receive, send):
        await send({"asgi2": scope})

    return instance


class _AwaitableClass:
    def __init__(self, scope, receive, send):
        self.args = (scope, receive, send)

    def __await__(self):
        return iter(())


def test_asgi3_detection():
    assert asgi.is_asgi3(_asgi3_function)
    assert asgi.is_asgi3(_Asgi3Instance())
    assert asgi.is_asgi3(_AwaitableClass)
    assert not asgi.is_asgi3(_Asgi2Class)
    assert not asgi.is_asgi3(_asgi2_function)


def test_as_asgi3_passes_asgi3_through_and_wraps_asgi2():
    assert asgi.as_asgi3(_asgi3_function) is _asgi3_function
    wrapped = asgi.as_asgi3(_Asgi2Class)
    assert isinstance(wrapped, asgi.ASGI2Adapter)
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(wrapped({"type": "http", "path": "/x"}, receive, send))
    assert sent == [{"asgi2": {"type": "http", "path": "/x"}, "received": {"type": "http.request"}}]
    sent.clear()
    asyncio.run(asgi.as_asgi3(_asgi2_function)({"type": "http"}, receive, send))
    assert sent == [{"asgi2": {"type": "http"}}]


def test_non_callable_app_is_rejected():
    with pytest.raises(TypeError, match="not callable"):
        asgi.as_asgi3(object())


def test_asgi_info_is_a_fresh_dict():
    info = asgi.asgi_info()
    assert info == {"version": "3.0", "spec_version": asgi.HTTP_SPEC_VERSION}
    info["version"] = "2.0"
    assert asgi.asgi_info()["version"] == "3.0"
    assert asgi.asgi_info(asgi.LIFESPAN_SPEC_VERSION)["spec_version"] == "2.0"


def test_status_phrases():
    assert asgi.STATUS_PHRASES[200] == b"OK"
    assert asgi.STATUS_PHRASES[404] == b"Not Found"
    assert asgi.STATUS_PHRASES[431] == b"Request Header Fields Too Large"
    assert asgi.STATUS_PHRASES[599] == b""


# -- log.py ----------------------------------------------------------------------------------------------------


def test_loop_log_prefixes_every_level():
    inner = RecordingLog()
    log = LoopLog(inner, 4321, 2)
    log.debug("d %s", 1)
    log.info("i")
    log.warning("w %s", "x")
    log.error("e")
    log.exception("x")
    assert [m for _, m in inner.records] == [
        "[worker 4321 loop 2] d 1",
        "[worker 4321 loop 2] i",
        "[worker 4321 loop 2] w x",
        "[worker 4321 loop 2] e",
        "[worker 4321 loop 2] x",
    ]


# -- worker.py: check_config (runs in the master) and the loop kind ---------------------------------------------


def test_check_config_explains_ignored_threads_on_gil_build(gil):
    gil(True)
    log = RecordingLog()
    ThreadWorker.check_config(gunicorn_cfg(threads=4, workers=2), log)
    [warning] = log.of("warning")
    assert "threads=4 ignored" in warning
    assert "GIL" in warning  # why
    assert "workers=8" in warning  # what to set
    assert "POUNCE_WORKER_MODE=threads" in warning


@pytest.mark.parametrize(("gil_on", "threads"), [(True, 1), (False, 4)])
def test_check_config_silent_when_nothing_is_ignored(gil, gil_on, threads):
    gil(gil_on)
    log = RecordingLog()
    ThreadWorker.check_config(gunicorn_cfg(threads=threads), log)
    assert log.of("warning") == []


def test_check_config_warns_about_forced_threads_on_gil_build(gil, monkeypatch):
    gil(True)
    monkeypatch.setenv(mode.MODE_ENV, "threads")
    log = RecordingLog()
    ThreadWorker.check_config(gunicorn_cfg(threads=3), log)
    [warning] = log.of("warning")
    assert "thread mode on a GIL build" in warning and "3 loops" in warning


def test_check_config_rejects_bad_mode(gil, monkeypatch):
    monkeypatch.setenv(mode.MODE_ENV, "sometimes")
    with pytest.raises(RuntimeError, match="POUNCE_WORKER_MODE='sometimes'"):
        ThreadWorker.check_config(gunicorn_cfg(), RecordingLog())


def test_uvloop_never_chosen_on_free_threaded_build(gil):
    gil(False)
    log = RecordingLog()
    assert resolve_loop_kind("uvloop", log) == "asyncio"
    assert "re-enable the GIL" in log.of("warning")[0]
    assert resolve_loop_kind("auto", log) == "asyncio"


def test_loop_kind_follows_asgi_loop_on_gil_build(gil, monkeypatch):
    gil(True)
    log = RecordingLog()
    assert resolve_loop_kind("asyncio", log) == "asyncio"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert resolve_loop_kind("auto", log) == "asyncio"
    assert log.of("warning") == []
    assert resolve_loop_kind("uvloop", log) == "asyncio"
    assert "not installed" in log.of("warning")[0]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert resolve_loop_kind("auto", log) == "uvloop"


def test_protocol_other_than_http_or_uwsgi_fails_the_boot():
    """A protocol this worker cannot speak fails at boot, naming it (uwsgi: tests/http1/test_uwsgi.py)."""
    import subprocess
    import sys

    from tests.harness import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-k", "pounce_worker.ThreadWorker", "--protocol", "fastcgi",
         "-b", "127.0.0.1:0", "--no-control-socket", "tests.apps:echo"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "protocol='fastcgi' is not supported" in result.stderr


@given(
    st.integers(min_value=0, max_value=60),  # limit_request_line (0: unlimited)
    st.integers(min_value=0, max_value=30),  # limit_request_fields
    st.integers(min_value=0, max_value=40),  # limit_request_field_size
    st.integers(min_value=1, max_value=30),  # target length
    st.lists(st.tuples(st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=30)), max_size=40),
)
@example(0, 30, 0, 1, [(1, 0)] * 31)  # the most fields a head of 4 x 30 bytes can hold
@example(0, 3, 0, 1, [(1, 0)] * 4)
@settings(max_examples=leg_examples(1000), deadline=None)
def test_a_head_within_limits_never_breaks_a_limit(line, fields, field_size, target_length, field_shapes):
    """The fast path skips the limit_request_* checks for heads of at most head_within_limits
    bytes: any such head must pass them all (protocol.HTTPConnection._check_limits)."""
    from pounce_worker.asgi import Rejection
    from pounce_worker.http1.connection import HTTPConnection

    cfg = gunicorn_cfg()
    cfg.set("limit_request_line", line)
    cfg.set("limit_request_fields", fields)
    cfg.set("limit_request_field_size", field_size)
    server = config.ServerConfig.from_gunicorn(cfg, env={mode.MODE_ENV: "threads"})
    method, target = b"GET", b"/" + b"t" * (target_length - 1)
    headers = [(b"n" * name, b"v" * value) for name, value in field_shapes]
    head = b"%s %s HTTP/1.1\r\n" % (method, target) + b"".join(b"%s:%s\r\n" % pair for pair in headers) + b"\r\n"
    if len(head) <= server.head_within_limits:
        connection = types.SimpleNamespace(config=server)
        try:
            HTTPConnection._check_limits(connection, method, target, headers, 0)  # 0: check every field
        except Rejection as exc:
            raise AssertionError(f"{head!r} ({len(head)} bytes) is within {server.head_within_limits}") from exc
