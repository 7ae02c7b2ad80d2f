"""Which pounce_worker a benchmark runs: a snapshot of the working tree, or a git commit exported outside the repo.

bench/run.py copies the code under test at the start (``snapshot``) so a ten-minute
run measures one version even while someone edits the tree; ``--ref`` takes that
copy from a commit instead.

A redesign is proven "no slower" only against the old code measured in the same
run on the same machine: two runs minutes apart on a shared 2-core machine differ
by more than the change being judged. So bench/run.py and bench/cost.py run the
working tree and an older commit side by side (``--baseline REF``), each server
or child process importing its own copy of the package. The copy is a
``git archive`` of ``pounce_worker/`` into a temporary directory outside the
repository (no ``git worktree`` to prune, nothing written into the checkout), and
every process is asked where it really imported ``pounce_worker`` from, because an
editable install or a stale ``sys.path`` entry would silently measure the working
tree twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pounce_worker"


class RefError(RuntimeError):
    """A commit that cannot be exported; the message is git's own."""


def _git(*argv: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RefError(f"git {argv[0]}: {exc}") from exc
    if done.returncode:
        raise RefError(done.stderr.decode(errors="replace").strip() or f"git {argv[0]} exited {done.returncode}")
    return done.stdout


def commit_of(ref: str) -> str:
    """The short commit id ``ref`` names now: a branch or ``HEAD~1`` moves, the id says what ran."""
    return _git("rev-parse", "--short", "--verify", f"{ref}^{{commit}}").decode().strip()


def export(ref: str, dest: Path) -> None:
    """Write ``pounce_worker/`` as of ``ref`` under ``dest`` (which must be outside the repository)."""
    archive = _git("archive", "--format=tar", ref, PACKAGE)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.10.12 / 3.11.4: our own git archive, so no hostile paths
            tar.extractall(dest)


@contextlib.contextmanager
def exported(ref: str) -> Iterator[Path]:
    """A temporary directory holding ``pounce_worker/`` as of ``ref``; removed on the way out, Ctrl-C included."""
    tmp = Path(tempfile.mkdtemp(prefix="pounce-ref-"))
    try:
        export(ref, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: What the servers import from the snapshot besides pounce_worker.
BENCH_FILES = (Path("bench/__init__.py"), Path("bench/apps.py"), Path("bench/floor.py"))


def code_files(root: Path) -> list[Path]:
    """pounce_worker's sources, the bench app and floor.py, relative to ``root``."""
    files = sorted(p.relative_to(root) for p in (root / "pounce_worker").rglob("*.py") if "__pycache__" not in p.parts)
    return [*files, *BENCH_FILES]


def code_digest(root: Path, files: Sequence[Path]) -> str:
    """What a run's JSON records of the code it ran, and how it tells that the working tree changed meanwhile."""
    digest = hashlib.sha256()
    for rel in files:
        digest.update(str(rel).encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update((root / rel).read_bytes())
    return digest.hexdigest()[:16]


def snapshot(dest: Path, ref: str | None = None) -> tuple[list[Path], str]:
    """Copy pounce_worker/ and the bench app into ``dest``; the servers import them from there.

    The working tree may change while a run takes ten minutes (someone is editing
    pounce_worker); every server of a run then still runs the same code. With
    ``ref``, pounce_worker comes from that git commit instead of the working tree.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if ref is None:
        files = code_files(ROOT)
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    else:
        export(ref, dest)
        for rel in BENCH_FILES:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
        files = code_files(dest)
    return files, code_digest(dest, files)


def git_state(paths: Sequence[str] = ("pounce_worker", "bench/apps.py")) -> dict[str, Any]:
    """The commit checked out and the files of ``paths`` changed locally, for the record of a run."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"head": git("rev-parse", "--short", "HEAD").strip() or None,
            "dirty": git("status", "--porcelain", "--", *paths).rstrip("\n").splitlines()}


def python_path(first: Sequence[Path], env: Mapping[str, str]) -> str:
    """PYTHONPATH with ``first`` ahead of what ``env`` already has: ahead of site-packages and editable installs."""
    return os.pathsep.join(filter(None, [*(str(p) for p in first), env.get("PYTHONPATH", "")]))


#: Run by the servers' interpreter, started as a server is: what ``-k pounce_worker.ThreadWorker`` imports at
#: boot, then where each pounce_worker module came from.
_PROBE = """
import json, os, sys
import pounce_worker
getattr(pounce_worker, "ThreadWorker", None)
root = os.path.dirname(os.path.realpath(pounce_worker.__file__)) + os.sep
modules = [m for n, m in list(sys.modules.items()) if n.startswith("pounce_worker.")]
files = [m.__file__ for m in modules if getattr(m, "__file__", None)]
stray = sorted(f for f in files if not os.path.realpath(f).startswith(root))
print(json.dumps({"file": pounce_worker.__file__, "stray": stray}))
"""


@dataclass(frozen=True)
class Origin:
    """Where a process took pounce_worker from.

    ``stray`` matters because an editable install (setuptools' ``__editable__`` finder)
    resolves ``pounce_worker.X`` by name, not through the package's ``__path__``: an old
    commit's package that lacks X, or a check for a module of the new layout, silently
    gets the working tree's X instead of an ImportError.
    """

    file: str | None
    stray: tuple[str, ...] = ()

    def wrong(self, directory: Path) -> str | None:
        """Why this is not all from ``directory``, or None when it is."""
        if not is_under(self.file, directory):
            return f"pounce_worker imported from {self.file}, not from {directory}"
        if self.stray:
            return (f"pounce_worker from {directory} but {len(self.stray)} of its modules from elsewhere, "
                    f"e.g. {self.stray[0]}")
        return None


def imported_from(python: str, cwd: Path, env: Mapping[str, str]) -> Origin:
    """What ``python``, started in ``cwd`` with ``env`` as a server is, imports as pounce_worker."""
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                              cwd=str(cwd), env=dict(env))
        found = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return Origin(None)
    return Origin(found["file"], tuple(found["stray"]))


def loaded_here() -> Origin:
    """The same for this process, for every pounce_worker module it has loaded so far."""
    package = sys.modules["pounce_worker"]
    root = Path(package.__file__ or "").resolve().parent
    stray = sorted(str(m.__file__) for n, m in list(sys.modules.items())
                   if n.startswith("pounce_worker.") and getattr(m, "__file__", None)
                   and not Path(str(m.__file__)).resolve().is_relative_to(root))
    return Origin(package.__file__, tuple(stray))


def is_under(path: str | None, directory: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(directory.resolve())
