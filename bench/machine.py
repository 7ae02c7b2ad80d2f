"""Where a benchmark runs: the CPU, and what the interpreter that runs the servers has installed.

Shared by bench/run.py, bench/h2.py and bench/ws.py, which record both with their results.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import refs


def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo, else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


_PROBE = r"""
import importlib.util, importlib.metadata as md, json, platform, sys
mods = [m for m in sys.argv[1].split(",") if m]
dists = [d for d in sys.argv[2].split(",") if d]
def has(m):
    try:
        return importlib.util.find_spec(m) is not None
    except Exception:
        return False
def ver(d):
    try:
        return md.version(d)
    except Exception:
        return None
probe = getattr(sys, "_is_gil_enabled", None)
print(json.dumps({
    "modules": {m: has(m) for m in mods},
    "versions": {d: ver(d) for d in dists},
    "python": platform.python_implementation() + " " + platform.python_version(),
    "version": platform.python_version(),
    "gil": bool(probe()) if probe else not getattr(sys.flags, "nogil", False),
}))
"""


@dataclass
class Interpreter:
    """The interpreter that runs the servers, as one run of it found itself."""

    path: str
    modules: dict[str, bool]
    versions: dict[str, str | None]
    python: str  # "CPython 3.13.0"
    version: str  # "3.13.0"
    gil: bool

    @classmethod
    def probe(cls, path: str, modules: Sequence[str], dists: Sequence[str],
              code_dir: Path | None = None) -> Interpreter:
        """Which of ``modules`` it can import and the versions of ``dists``; with ``code_dir``, as a
        server started there sees them (that directory first on PYTHONPATH, and the working directory)."""
        env = None if code_dir is None else dict(os.environ, PYTHONPATH=refs.python_path([code_dir], os.environ))
        out = subprocess.run(
            [path, "-c", _PROBE, ",".join(modules), ",".join(dists)],
            capture_output=True, text=True, timeout=60, check=True, env=env, cwd=code_dir,
        )
        return cls(path=path, **json.loads(out.stdout))

    def missing(self, modules: Sequence[str]) -> list[str]:
        return [m for m in modules if not self.modules.get(m)]

    def version_record(self) -> dict[str, str]:
        """``{"python": "3.13.0", dist: version, ...}`` for the distributions it has, in the order asked."""
        return {"python": self.version, **{d: v for d, v in self.versions.items() if v is not None}}
