"""In process: the accept gate's fairness between loops, and the graceful stop's schedule.

Both are decisions made from a few numbers (loops' counters, a deadline), tested here
on real ``LoopServer`` objects without a loop or a socket; the end-to-end behaviour is
in tests/test_hostile_load.py (fair loops) and tests/asgi/test_lifespan.py (the stop).
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from pounce_worker.asgi.hooks import Hooks
from pounce_worker.budget import RequestBudget
from pounce_worker.config import ServerConfig
from pounce_worker.log import LoopLog
from pounce_worker.loop.server import LoopServer
from pounce_worker.loop.stop import STOP_RESERVE, StopPlan


class _Log:
    def _add(self, msg: object, *args: object, **_kw: object) -> None:
        pass

    debug = info = warning = error = exception = _add
    access = Logger.access  # not called: no access log
    access_log_enabled = False


def _loops(count: int) -> list[LoopServer]:
    cfg = Config()
    cfg.set("worker_connections", 100)
    config = ServerConfig.from_gunicorn(cfg, env={"POUNCE_WORKER_MODE": "threads"})
    servers = [
        LoopServer(i, config, None, [], None, None, Hooks.from_gunicorn(cfg),  # type: ignore[arg-type]
                   LoopLog(_Log(), os.getpid(), i), RequestBudget(sys.maxsize), "asyncio")
        for i in range(count)
    ]
    for server in servers:
        server.siblings = tuple(servers)
        server.last_tick = time.monotonic()
    return servers


def test_a_loop_steps_aside_only_for_a_sibling_that_accepts():
    """A sibling still in lifespan startup does not watch the listeners: stepping aside for it
    left one ready loop serving two connections at a time until the sibling was ready."""
    busy, starting = _loops(2)
    busy.accepting, busy.active = True, 5
    assert not busy._sibling_should_take_it()  # the sibling is in startup (not accepting)
    starting.accepting = True
    assert busy._sibling_should_take_it()
    starting.accepting = False
    starting._backoff = object()  # type: ignore[assignment]  # stepped aside a moment itself
    assert busy._sibling_should_take_it()
    starting._backoff, starting.accepting, starting.stopping = None, True, True
    assert not busy._sibling_should_take_it()


@pytest.mark.parametrize("graceful_timeout", [0.5, 3.0, 30.0, 300.0])
def test_every_stop_step_ends_in_order_before_the_deadline(graceful_timeout):
    """The arbiter SIGKILLs at the deadline: each step ends before the next one's end, the last
    with time to spare for the process to exit, and lifespan shutdown keeps a real slice."""
    plan = StopPlan.starting(100.0, graceful_timeout)
    steps = [plan.drain, plan.tasks, plan.tasks_cancelled, plan.lifespan, plan.lifespan_task, plan.leftovers]
    assert plan.deadline == 100.0 + graceful_timeout
    assert plan.reserve == min(STOP_RESERVE, graceful_timeout / 4)
    assert 100.0 < steps[0] and steps == sorted(steps)
    assert plan.deadline - plan.leftovers == pytest.approx(0.2 * plan.reserve)
    assert plan.lifespan - plan.tasks_cancelled == pytest.approx(0.5 * plan.reserve)


@pytest.mark.parametrize("bind, own", [(["127.0.0.1:0"], True), (["fd://3"], False)])
def test_reuse_port_listeners_are_the_workers_own_only_where_it_bound_them(bind, own):
    """An fd:// bind (systemd, a supervisor) is the master's socket, shared by every worker: a
    stopping worker must neither take its queue nor close it (found in review, session 6)."""
    cfg = Config()
    cfg.set("reuse_port", True)
    cfg.set("bind", bind)
    assert ServerConfig.from_gunicorn(cfg, env={}).reuse_port is own


def test_the_stop_plan_counts_from_the_request_not_from_a_busy_loop():
    """A loop blocked when TERM came gets to its stop late: its plan still ends where the arbiter's
    graceful_timeout does, counted from the request (found in review, session 6)."""
    server = _loops(1)[0]
    server.request_stop(True)  # no loop yet: recorded, with the time it was asked
    asked = time.monotonic()
    assert asked - 0.5 <= server._stop_time <= asked
