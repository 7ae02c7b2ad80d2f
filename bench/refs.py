"""pounce_worker as of a git commit, exported outside the repository: what ``--ref``/``--baseline`` run.

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
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

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


def python_path(first: Sequence[Path], env: Mapping[str, str]) -> str:
    """PYTHONPATH with ``first`` ahead of what ``env`` already has: ahead of site-packages and editable installs."""
    return os.pathsep.join(filter(None, [*(str(p) for p in first), env.get("PYTHONPATH", "")]))


def imported_from(python: str, cwd: Path, env: Mapping[str, str]) -> str | None:
    """``pounce_worker.__file__`` as ``python`` sees it started in ``cwd`` with ``env``, as a server is started."""
    try:
        done = subprocess.run([python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
                              capture_output=True, text=True, timeout=60, cwd=str(cwd), env=dict(env))
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def is_under(path: str | None, directory: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(directory.resolve())
