"""The free-threaded leg: the whole suite again, under a free-threaded interpreter.

Free-threaded CPython (3.14t) is not on the package registries here, so the
leg runs when ``POUNCE_FREETHREADED_PYTHON`` names such an interpreter (for
example a local 3.14t build, or a build of the colesbury/nogil-3.12 fork) and
is reported as skipped, with this reason, otherwise.

The leg makes a venv for that interpreter, installs the test dependencies
that install there (a C extension without a wheel for that ABI may not: the
tests needing it skip with their own reason), and runs the suite unchanged,
with the repo on PYTHONPATH instead of an editable install (old pips on
experimental builds cannot build one).
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pounce_worker.mode import gil_enabled
from tests.harness import ROOT, serve

FT_ENV = "POUNCE_FREETHREADED_PYTHON"
IN_LEG_ENV = "POUNCE_IN_FREETHREADED_LEG"

PROBE = (
    "import sys; probe = getattr(sys, '_is_gil_enabled', None); "
    "print('gil' if (probe() if probe else not getattr(sys.flags, 'nogil', False)) else 'nogil', "
    "'fork' if probe is None else 'cpython')"
)

#: The colesbury/nogil-3.12 fork's C accelerator for asyncio keeps a free list and
#: a running-loop cache without locks, and crashes with several loop threads.
#: The leg makes that fork use asyncio's pure-Python implementation; 3.13t/3.14t
#: need nothing of the kind.
NOGIL_FORK_PTH = "import sys; sys.modules.setdefault('_asyncio', None)\n"


def _test_requirements() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    install = parser["options"]["install_requires"].splitlines()
    extras = parser["options.extras_require"]["test"].splitlines()
    return [r.strip() for r in install + extras if r.strip()]


@pytest.mark.timeout(3600)
def test_whole_suite_under_free_threaded_python() -> None:
    python = os.environ.get(FT_ENV)
    if not python:
        pytest.skip(
            f"free-threaded leg not run: set {FT_ENV} to a free-threaded interpreter "
            "(e.g. python3.14t, or a colesbury/nogil-3.12 build) to run the whole suite under it"
        )
    probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, f"{python} does not run: {probe.stderr}"
    gil, flavour = probe.stdout.split()
    assert gil == "nogil", f"{FT_ENV}={python} has its GIL enabled: it is not a free-threaded build"

    digest = hashlib.sha1(python.encode()).hexdigest()[:8]
    venv = ROOT / f".venv-ft-{digest}"
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=600)
    failed = []
    for requirement in _test_requirements():
        result = subprocess.run(
            [str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
            capture_output=True, text=True, timeout=900,
        )
        if result.returncode != 0:
            failed.append(requirement)
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    pth = Path(site) / "pounce_nogil_fork_asyncio.pth"
    if flavour == "fork":
        pth.write_text(NOGIL_FORK_PTH)
    elif pth.exists():
        pth.unlink()

    env = dict(os.environ)
    env.pop(FT_ENV, None)
    env[IN_LEG_ENV] = "1"
    env["PYTHONPATH"] = str(ROOT)
    # Emptied here, not by the inner pytest: its rm_rf calls shutil.rmtree(onexc=...), which
    # the nogil alpha's shutil lacks.
    shutil.rmtree(venv / "pytest-tmp", ignore_errors=True)
    result = subprocess.run(
        # A fixed --basetemp: pytest's cleanup of numbered temp dirs fails on the nogil alpha.
        # tmp_path_retention_policy=all: nor does the inner pytest remove passed tests' tmp_path
        # (the same rmtree); the basetemp is emptied above at the next run.
        [str(vpy), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", f"--basetemp={venv / 'pytest-tmp'}",
         "-o", "tmp_path_retention_policy=all", "tests",
         "--deselect", "tests/test_freethreaded.py::test_whole_suite_under_free_threaded_python"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3500,
    )
    lines = result.stdout.splitlines()
    tail = "\n".join([line for line in lines if line.startswith(("FAILED", "ERROR"))][:40] + lines[-3:])
    print(f"free-threaded leg ({python}, {flavour}); not installable there: {failed or 'none'}\n{tail}")
    assert result.returncode == 0, f"suite failed under {python}:\n{tail}\n{result.stderr[-3000:]}"


@pytest.mark.skipif(gil_enabled(), reason="needs a free-threaded interpreter (runs in the free-threaded leg)")
def test_auto_mode_is_threads_and_gil_stays_off() -> None:
    """On a free-threaded build, auto mode picks threads and booting the worker keeps the GIL off."""
    with serve("tests.apps:echo", mode=None, threads=3) as server:
        log = server.log()
        assert "threads mode (the interpreter is free-threaded), 3 event loop(s) with asyncio" in log
        assert "GIL was re-enabled" not in log
