"""Prepare the free-threaded leg of tests/run: a venv for ``POUNCE_FREETHREADED_PYTHON``.

Free-threaded CPython (3.14t) is not on the package registries here, so the
leg runs when ``POUNCE_FREETHREADED_PYTHON`` names such an interpreter (for
example a local 3.14t build, or a build of the colesbury/nogil-3.12 fork);
tests/run says it was not run, and why, otherwise.

``python3 tests/freethreaded_leg.py INTERPRETER`` checks that the interpreter
runs without its GIL, makes ``.venv-ft-<hash>`` with it, installs the test
dependencies one by one, keeping those that install there (a C extension
without a wheel for that ABI may not: the tests needing it skip with their own
reason), and prints the venv's python as its last line. The suite then runs
unchanged in that venv with the repo on PYTHONPATH instead of an editable install
(old pips on experimental builds cannot build one). Anything else goes to stderr.
"""

from __future__ import annotations

import configparser
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def requirements() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    install = parser["options"]["install_requires"].splitlines()
    extras = parser["options.extras_require"]["test"].splitlines()
    return [r.strip() for r in install + extras if r.strip()]


def log(text: str) -> None:
    print(f"tests/freethreaded_leg.py: {text}", file=sys.stderr, flush=True)


def main(python: str) -> int:
    try:
        probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        log(f"POUNCE_FREETHREADED_PYTHON={python} cannot be run: {exc}")
        return 1
    if probe.returncode != 0:
        log(f"{python} does not run: {probe.stderr.strip()}")
        return 1
    gil, flavour = probe.stdout.split()
    if gil != "nogil":
        log(f"POUNCE_FREETHREADED_PYTHON={python} has its GIL enabled: it is not a free-threaded build")
        return 1
    digest = hashlib.sha1(python.encode()).hexdigest()[:8]
    venv = ROOT / f".venv-ft-{digest}"
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=600)
    failed = []
    for requirement in requirements():
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
    log(f"{python} ({flavour}, no GIL); not installable there: {', '.join(failed) or 'none'}")
    print(vpy)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} FREE_THREADED_PYTHON")
    sys.exit(main(sys.argv[1]))
