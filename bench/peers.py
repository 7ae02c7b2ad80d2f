"""Who the HTTP benchmark runs (bench/run.py): the interpreter's servers, and how each is started."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.machine import Interpreter
from bench.procs import HOST
from bench.scenarios import FEATURES

APP = "bench.apps:app"
#: Placeholders in server commands, replaced at every (re)start: a free port, and the
#: directory the app (and pounce_worker, see ``snapshot``) are imported from.
PORT = "{port}"
APPDIR = "{appdir}"


# -- what the interpreter must have --------------------------------------------------------

MODULES = (
    "gunicorn", "gunicorn.workers.gasgi", "pounce_worker", "uvicorn", "uvicorn_worker",
    "httptools", "uvloop", "hypercorn", "granian", "gunicorn_h1c",
)
DISTS = (
    "gunicorn", "pounce_worker", "h11", "uvicorn", "uvicorn-worker", "httptools", "uvloop",
    "hypercorn", "granian", "gunicorn_h1c",
)


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Launch:
    """How to start one server on one port."""

    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    procs: int = 2  # processes in the tree once fully booted (master + workers)
    #: For pounce_worker: (mode, loops, loop kind) its boot line must announce.
    pounce: tuple[str, int, str] | None = None


def gunicorn_cmd(py: str, worker_class: str, *extra: str, workers: int = 1, threads: int | None = 1,
                 log_level: str = "info", chdir: str | None = APPDIR, app: str = APP) -> list[str]:
    """Gunicorn serving ``app`` on PORT; ``threads`` or ``chdir`` None: not on the command line
    (bench/ws.py and bench/h2.py, whose servers start in the repository root)."""
    return [
        py, "-m", "gunicorn", "-k", worker_class, "-b", f"{HOST}:{PORT}", "--workers", str(workers),
        *(("--threads", str(threads)) if threads is not None else ()),
        "--no-control-socket", "--error-logfile", "-", "--log-level", log_level,
        "--graceful-timeout", "5", *(("--chdir", chdir) if chdir is not None else ()), *extra, app,
    ]


def pounce_launch(py: str, loop: str, mode: str = "processes", loops: int = 1) -> Launch:
    if mode == "threads":
        workers, threads = 1, loops
    else:
        workers, threads = loops, 1
    return Launch(
        gunicorn_cmd(py, "pounce_worker.ThreadWorker", "--asgi-loop", loop, workers=workers, threads=threads),
        env={"POUNCE_WORKER_MODE": mode},
        procs=1 + workers,
        pounce=(mode, threads if mode == "threads" else 1, loop),
    )


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    needs: tuple[str, ...]
    launch: Callable[[Interpreter], Launch]
    log_kind: str = "gunicorn"  # how to read its log for restarts and errors
    #: An extra reason to skip it on this interpreter, or None.
    unfit: Callable[[Interpreter], str | None] = lambda _i: None
    #: A run that was asked for it and cannot start it fails (listed under "Problems seen",
    #: exit status 1) instead of skipping it: the README's ratios depend on it.
    required: bool = False
    #: --baseline: runs pounce_worker as of the baseline commit, from its own exported copy.
    baseline: bool = False


def _gasgi_loop(interp: Interpreter) -> str:
    return "uvloop" if interp.modules.get("uvloop") and interp.gil else "asyncio"


PEERS: tuple[Peer, ...] = (
    Peer(
        "pounce-asyncio", "pounce_worker (asyncio)", ("gunicorn", "pounce_worker"),
        lambda i: pounce_launch(i.path, "asyncio"),
    ),
    Peer(
        "pounce-uvloop", "pounce_worker (uvloop)", ("gunicorn", "pounce_worker", "uvloop"),
        lambda i: pounce_launch(i.path, "uvloop"),
        unfit=lambda i: None if i.gil else "free-threaded build: pounce_worker never imports uvloop there",
    ),
    # -k asgi twice: on Gunicorn's pure-Python parser (what the README's ratios first compared
    # with), and at its strongest, as a user who picks it for speed runs it: its C parser
    # (gunicorn_h1c, "gunicorn[fast]") and uvloop. --http-parser names the parser in both, so a
    # machine with gunicorn_h1c installed still measures the pure-Python row as such.
    Peer(
        "gunicorn-asgi", "gunicorn -k asgi", ("gunicorn", "gunicorn.workers.gasgi"),
        lambda i: Launch(gunicorn_cmd(i.path, "asgi", "--http-parser", "python", "--asgi-loop", _gasgi_loop(i))),
    ),
    Peer(
        "gunicorn-asgi-fast", "gunicorn -k asgi (h1c+uvloop)",
        ("gunicorn", "gunicorn.workers.gasgi", "gunicorn_h1c", "uvloop"),
        lambda i: Launch(gunicorn_cmd(i.path, "asgi", "--http-parser", "fast", "--asgi-loop", "uvloop")),
        unfit=lambda i: None if i.gil else "free-threaded build: uvloop would switch the GIL back on",
        required=True,
    ),
    Peer(
        "uvicorn", "uvicorn (httptools+uvloop)", ("gunicorn", "uvicorn", "uvicorn_worker", "httptools", "uvloop"),
        lambda i: Launch(gunicorn_cmd(i.path, "uvicorn_worker.UvicornWorker")),
    ),
    Peer(
        "uvicorn-h11", "uvicorn (h11+asyncio)", ("gunicorn", "uvicorn", "uvicorn_worker"),
        lambda i: Launch(gunicorn_cmd(i.path, "uvicorn_worker.UvicornH11Worker")),
    ),
    Peer(
        "hypercorn", "hypercorn (asyncio)", ("hypercorn",),
        lambda i: Launch([
            i.path, "-m", "hypercorn", "--workers", "1", "--bind", f"{HOST}:{PORT}",
            "--error-logfile", "-", "--log-level", "info", "--graceful-timeout", "5", APP,
        ]),
        log_kind="generic",
    ),
    Peer(
        "granian", "granian (asgi)", ("granian",),
        lambda i: Launch([
            i.path, "-m", "granian", "--interface", "asgi", "--http", "1", "--workers", "1",
            "--host", HOST, "--port", PORT, "--log-level", "info", APP,
        ]),
        log_kind="generic",
    ),
)
#: Not peers but the yardstick issue 7 sets: bench/floor.py, ~50 lines of asyncio HTTP with no
#: validation, limits or timeouts. Run only when asked for with --peers.
FLOORS: tuple[Peer, ...] = tuple(
    Peer(
        f"floor-{loop}", f"floor.py ({loop})", ("uvloop",) if loop == "uvloop" else (),
        lambda i, loop=loop: Launch([i.path, "-m", "bench.floor", HOST, PORT, APP, loop], procs=1),  # type: ignore[misc]
        log_kind="generic",
    )
    for loop in ("asyncio", "uvloop")
)
PEER_KEYS = tuple(p.key for p in PEERS)
#: --baseline: each pounce_worker row of the run gets a twin running the baseline commit.
BASELINE_TWINS = {"pounce-asyncio": "pounce-baseline-asyncio", "pounce-uvloop": "pounce-baseline-uvloop"}


def with_baseline(selected: Sequence[Peer], commit: str) -> list[Peer]:
    """``selected`` with each pounce_worker row followed by its baseline twin: same command, other code.

    The twin sits in the same section, so it boots with the others and takes its turn
    in every repetition: the two versions meet the same drifts and bursts of other work.
    """
    peers = []
    for peer in selected:
        peers.append(peer)
        if peer.key in BASELINE_TWINS:
            loop = peer.key.rsplit("-", 1)[1]
            peers.append(dataclasses.replace(peer, key=BASELINE_TWINS[peer.key], baseline=True,
                                             label=f"pounce_worker @{commit} ({loop})"))
    return peers


#: How to install what a peer lacks, when the module's name does not say it.
INSTALL_HINTS = {
    "gunicorn_h1c": "Gunicorn's C parser: pip install gunicorn_h1c, or the bench extra",
    "gunicorn.workers.gasgi": "gunicorn >= 24 has -k asgi",
}


def gunicorn_label(interp: Interpreter) -> str:
    return f"gunicorn -k asgi (py parser+{_gasgi_loop(interp)})"


def not_installed(interp: Interpreter, missing: Sequence[str]) -> str:
    hints = [INSTALL_HINTS[m] for m in missing if m in INSTALL_HINTS]
    return f"not installed in {interp.path}: {', '.join(missing)}" + (f" ({'; '.join(hints)})" if hints else "")



def feature_launch(py: str, loop: str, feature: str) -> Launch:
    launch = pounce_launch(py, loop)
    launch.env.update(FEATURES[feature][1])
    return launch

