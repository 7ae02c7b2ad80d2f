from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from tests.harness import LIVE, SESSION_ENV, Gunicorn, kill_marked, reserve_port_run

#: The two forced modes every end-to-end test runs in: thread mode with 2 loops
#: per process, and process mode (one loop per process), on whatever build runs the tests.
MODES = ("threads", "processes")


def _starts_no_server(module: ModuleType) -> bool:
    """Whether a test module runs entirely in this process (or in a plain child interpreter):
    it uses nothing of tests/harness/ (which starts every ``gunicorn`` the suite runs) and is
    not a comparison with peer servers (tests/compat/ starts uvicorn and ours by itself)."""
    if module.__name__.startswith("tests.compat."):
        return False
    for value in vars(module).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.startswith("tests.harness"):
            return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks ``inprocess`` the tests of modules that start no server (``_starts_no_server``):
    a second GIL leg of tests/run runs those and the ``smoke`` ones only. Decided by what the
    module imports, so a new in-process module is picked up without a marker to remember."""
    verdicts: dict[str, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        if module.__name__ not in verdicts:
            verdicts[module.__name__] = _starts_no_server(module)
        if verdicts[module.__name__]:
            item.add_marker(pytest.mark.inprocess)


def pytest_configure(config: pytest.Config) -> None:
    # A marker every process this pytest process starts inherits (see tests/harness/). Each
    # xdist worker makes its own, replacing the controller's, so each checks only its own.
    os.environ[SESSION_ENV] = f"{uuid.uuid4().hex}-{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """At the end of the session (of each xdist worker) nothing the suite started still runs.

    Servers still registered as started are stopped and their tests named; then any
    process carrying this session's marker is killed by PID and named: the run fails.
    """
    yield
    # Started and never stopped: a leak if the master still runs (one that exited by itself
    # only left its log file open).
    leaked = {server: test for server, test in LIVE.items() if server.proc is not None and server.proc.poll() is None}
    for server in list(LIVE):
        server.stop()
    survivors = kill_marked(SESSION_ENV, os.environ[SESSION_ENV], grace=5.0)
    problems = [f"server {server.app} started by {test} was never stopped" for server, test in leaked.items()]
    problems += [f"pid {pid} still running at the end of the session (killed): {cmd}" for pid, cmd in survivors.items()]
    if problems:
        pytest.fail("the suite left processes behind:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def started() -> Iterator[list[Gunicorn]]:
    """Servers a test starts are stopped however it ends."""
    servers: list[Gunicorn] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def reserved_ports() -> Iterator[Callable[[int], int]]:
    """``reserve(n)``: the base of ``n`` consecutive ports held for the test (see harness.reserve_port).

    For a server that takes ports by number and binds them with SO_REUSEADDR.
    """
    held = []

    def reserve(count: int) -> int:
        run = reserve_port_run(count)
        held.extend(run)
        return int(run[0].getsockname()[1])

    yield reserve
    for sock in held:
        sock.close()
