"""What bench/h2.py and bench/ws.py share: one server a peer, booted once, measured in turns, recorded.

Each peer's server is started once from the repository root (``bench.server.Server``:
its own session, pinned with ``taskset``, its output in ``<key>.log``, stopped by its
PID), and stays up for the whole run; the scripts measure the live ones in turns
(``in_turn``) and write ``<name>-<tag>.txt`` and ``.json`` with ``write_results``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import refs
from bench.machine import Interpreter, cpu_model
from bench.peers import Launch
from bench.procs import descendants, exit_status
from bench.server import Server

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    needs: tuple[str, ...]  # modules the interpreter must find
    launch: Callable[[str], Launch]  # the interpreter's path -> the command, PORT in it


#: Options of one script, (flag, add_argument's keywords), where ``options`` puts them.
Own = Sequence[tuple[str, dict[str, Any]]]


def options(ap: argparse.ArgumentParser, quick: str, peer_keys: Sequence[str], after_peers: Own = (),
            load: Own = ()) -> None:
    """The options both scripts have, in their order, with each one's own ``after_peers`` and ``load``."""
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--peers", default=",".join(peer_keys))
    for flag, kw in after_peers:
        ap.add_argument(flag, **kw)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--reps", type=int)
    ap.add_argument("--warmup", type=float)
    for flag, kw in load:
        ap.add_argument(flag, **kw)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the servers")
    ap.add_argument("--tag")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")


def choose(python: str, peers: Sequence[Peer], wanted: Sequence[str],
           dists: Sequence[str]) -> tuple[Interpreter, list[Peer], dict[str, str]] | None:
    """The interpreter as a server started here finds itself (``dists``: the versions to record),
    the ``wanted`` peers it can run, and why each of the others cannot; None, said why, when
    ``python`` does not run."""
    try:
        interp = Interpreter.probe(python, sorted({m for p in peers for m in p.needs}), dists, code_dir=ROOT)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"cannot run {python}: {exc}")
        return None
    runnable, skipped = [], {}
    for peer in peers:
        if peer.key not in wanted:
            continue
        missing = interp.missing(peer.needs)
        if missing:
            skipped[peer.key] = f"not installed: {', '.join(missing)}"
        else:
            runnable.append(peer)
    return interp, runnable, skipped


class SoloServer(Server):
    """One peer's server, started as soon as it is made; ``wait_ready`` until ``answers``."""

    #: How it is asked whether it is up, for the message when it never answers.
    asked = ""

    def __init__(self, peer: Peer, py: str, log_dir: Path, cpu: int | None) -> None:
        log_path = log_dir / f"{peer.key}.log"
        log_path.unlink(missing_ok=True)  # a run's log starts empty: problems() counts the boots in it
        super().__init__(peer.key, peer.launch(py), log_path, cpu, "gunicorn", ROOT)
        self.peer = peer
        self.spawn()

    def answers(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = exit_status(self.proc) if self.proc is not None else None
            if status is not None:
                raise RuntimeError(f"{self.name} exited with {status}; see {self.log_path}")
            if self.answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer{self.asked} within {timeout} s; see {self.log_path}")

    def workers(self) -> list[int]:
        """Its worker processes; empty for a server without children (it is its own worker)."""
        return descendants(self.pid)

    def problems(self) -> list[str]:
        """Worker restarts and the first lines of tracebacks and errors in its log."""
        lines = [ln for ln in self.log_text().splitlines()
                 if any(w in ln for w in ("Traceback", "ERROR", "Booting worker"))]
        boots = sum("Booting worker" in ln for ln in lines)
        out = [ln for ln in lines if "Booting worker" not in ln][:5]
        if boots > 1:
            out.insert(0, f"{boots} worker boots (restarts)")
        return out


def stop_all(servers: Mapping[str, SoloServer]) -> dict[str, list[str]]:
    """Stop every server; the problems their logs show, by key."""
    problems = {}
    for key, server in servers.items():
        server.stop()
        found = server.problems()
        if found:
            problems[key] = found
    return problems


def in_turn(live: list[str], rep: int) -> list[str]:
    """``live`` rotated by ``rep``: each server goes first in its turn."""
    return live[rep % len(live):] + live[:rep % len(live)] if live else []


def spread(values: list[float], fmt: str) -> str:
    """``median (min-max)``, the median alone for one value, ``-`` for none."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def write_results(name: str, args: argparse.Namespace, tag: str, started: _dt.datetime, header: str,
                  versions: dict[str, str], text: str, servers: Mapping[str, SoloServer],
                  skipped: dict[str, str], problems: dict[str, list[str]], results: dict[str, Any],
                  not_run: bool = False, gap: str = "\n") -> None:
    """Print the report and write ``<name>-<tag>.txt`` and ``.json`` into ``args.out_dir``.

    ``header``: its first line; the versions, the commit and (``not_run``) the skipped peers follow.
    """
    git = refs.git_state(("pounce_worker",))
    commit, dirty = git["head"] or "", git["dirty"]
    header += "\n" + ", ".join(f"{k} {v}" for k, v in versions.items())
    header += f"\npounce_worker at {commit or '(not a git checkout)'}{' + uncommitted changes' if dirty else ''}"
    if not_run and skipped:
        header += "\nnot run: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
    if problems:
        text += "\n\nProblems seen in the server logs:\n" + "\n".join(
            f"  {k}: {line}" for k, lines in problems.items() for line in lines)
    out = header + gap + text + "\n"
    print("\n" + out)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}-{tag}.txt").write_text(out)
    (args.out_dir / f"{name}-{tag}.json").write_text(json.dumps({
        "tag": tag, "started": started.isoformat(), "commit": commit, "dirty": bool(dirty),
        "versions": versions, "args": {k: str(v) for k, v in vars(args).items()},
        "cpu_model": cpu_model(), "commands": {k: s.cmd for k, s in servers.items()},
        "skipped": skipped, "problems": problems, "results": results,
    }, indent=1))
