"""The release artefacts: what ``python -m build`` makes of this tree, installed and serving.

The sdist and the wheel are built from a copy of the tree in pytest's tmp dir
(nothing is written into the source tree: checked), their contents are checked
against what a user and a packager need, and the wheel is installed into a new
venv (its dependencies from the package index, pounce_worker itself only from
the wheel, ``--no-deps``). A real ``gunicorn -k pounce_worker.ThreadWorker
conf.example_app:app`` from that venv, started outside the source tree with
``conf/`` taken from the sdist, then answers a request; a hook in its config
logs where the worker imported pounce_worker from, so the test knows the wheel
was served, not the checkout.

It needs the package index (for ``build``, setuptools and the dependencies):
without it the test fails, it does not skip. One run per interpreter leg.
"""

from __future__ import annotations

import email.parser
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

import pounce_worker
from tests.harness import HOST, ROOT, listening_socket

#: Names never copied from the source tree into the build copy (venvs, caches, earlier builds).
COPY_IGNORE = (".git", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
               ".hypothesis", "logs")
#: What the sdist must hold, relative to its top directory.
SDIST_NEEDS = (
    "PKG-INFO", "setup.cfg", "pyproject.toml", "README.rst", "CHANGELOG.rst", "LICENSE",
    "docs/settings.rst", "conf/example_app.py", "conf/gunicorn.conf.py", "conf/systemd/pounce.service",
    "tests/run", "tests/harness/__init__.py", "tests/test_package.py", "pounce_worker/__init__.py",
)
#: The Python versions the classifiers name; python_requires starts at the first.
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")

#: A Gunicorn config for the served app: logs what the worker really imported.
PROBE_CONF = '''
def post_worker_init(worker):
    import pounce_worker
    worker.log.info("probe: pounce_worker %s from %s, worker %s.%s", pounce_worker.__version__,
                    pounce_worker.__file__, type(worker).__module__, type(worker).__qualname__)
'''


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in COPY_IGNORE or n.startswith(".venv") or n.endswith((".egg-info", ".pyc"))}


def _run(cmd: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _tree_state() -> tuple[str, frozenset[str]]:
    """What a build run in the source tree would change: git's view, and build leftovers at the top."""
    status = ""
    if (ROOT / ".git").exists() and shutil.which("git"):
        status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
                                capture_output=True, text=True, timeout=60).stdout
    leftovers = frozenset(
        f"{p.name}@{p.stat().st_mtime_ns}" for p in ROOT.iterdir()
        if p.name in ("build", "dist") or p.name.endswith(".egg-info")
    )
    return status, leftovers


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POUNCE_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(getattr(sys.flags, "nogil", False) and sys.version_info < (3, 12, 0, "final"),
                    reason="the colesbury/nogil-3.12 fork (3.12.0a4) cannot run the current packaging that "
                           "build needs (InvalidVersion on '0.dev0'); the pure-Python wheel is built and "
                           "served on the other legs")
def test_wheel_from_sdist_installs_and_serves(tmp_path: Path) -> None:
    started = time.monotonic()
    before = _tree_state()
    version = pounce_worker.__version__
    env = _clean_env()

    # -- build, from a copy of the tree, the way a release is built -------------------------
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_ignore, symlinks=True)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], 120, env=env)
    vpy = str(venv / "bin" / "python")
    tools = tmp_path / "tools"  # build itself, kept out of the venv that serves
    _run([vpy, "-m", "pip", "install", "-q", "--target", str(tools), "build"], 180, env=env)
    dist = tmp_path / "dist"
    _run([vpy, "-m", "build", "--outdir", str(dist), str(src)], 240, env=dict(env, PYTHONPATH=str(tools)))
    built = time.monotonic()
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    assert [p.name for p in sdists] == [f"pounce_worker-{version}.tar.gz"], sdists
    assert [p.name for p in wheels] == [f"pounce_worker-{version}-py3-none-any.whl"], wheels

    # -- the sdist: what a user and a packager need, nothing from venvs or caches ------------
    top = f"pounce_worker-{version}/"
    with tarfile.open(sdists[0]) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        assert all(n.startswith(top) for n in names), names
        files = {n[len(top):] for n in names}
        missing = [n for n in SDIST_NEEDS if n not in files]
        assert not missing, f"sdist lacks {missing}"
        stray = sorted(f for f in files if re.search(r"(^|/)(\.venv[^/]*|__pycache__|\.[a-z_]*cache|\.git|build|dist)"
                                                     r"/|\.py[cod]$|^bench/", f))
        assert not stray, f"sdist holds what it must not: {stray[:20]}"
        source_modules = {
            p.relative_to(ROOT / "pounce_worker").as_posix() for p in (ROOT / "pounce_worker").rglob("*.py")
        }
        assert {f.split("/", 1)[1] for f in files if f.startswith("pounce_worker/")} == source_modules
        app_dir = tmp_path / "app"  # the example app as a user gets it: conf/ from the sdist
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(top + "conf/"):
                target = app_dir / member.name[len(top):]
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())

    # -- the wheel: the pounce_worker package and its metadata only ----------------------------
    info = f"pounce_worker-{version}.dist-info/"
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        outside = [n for n in names if not n.startswith(("pounce_worker/", info))]
        assert not outside, f"wheel holds more than pounce_worker: {outside}"
        assert {n.split("/", 1)[1] for n in names if n.startswith("pounce_worker/")} == source_modules
        assert any(n.startswith(info) and n.endswith("/LICENSE") for n in names), names
        meta = email.parser.Parser().parsestr(whl.read(info + "METADATA").decode())
    assert meta["Name"] == "pounce_worker" and meta["Version"] == version
    assert meta["Requires-Python"] == f">={PYTHONS[0]}"
    assert meta["Description-Content-Type"] == "text/x-rst"
    assert meta["License-File"] == "LICENSE"
    classifiers = meta.get_all("Classifier") or []
    for v in PYTHONS:
        assert f"Programming Language :: Python :: {v}" in classifiers
    assert "Framework :: AsyncIO" in classifiers
    assert any(c.startswith("Programming Language :: Python :: Free Threading ::") for c in classifiers)
    assert str(meta.get_payload()).startswith("pounce_worker\n============="), "the description is not the README"
    requires = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert any(r.startswith("gunicorn") for r in requires), requires

    # -- install: dependencies from the index, pounce_worker only from the wheel -------------
    _run([vpy, "-m", "pip", "install", "-q", *requires], 240, env=env)
    _run([vpy, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])], 120, env=env)
    _run([vpy, "-m", "pip", "check"], 60, env=env)
    installed = time.monotonic()
    where = _run([vpy, "-c", "import pounce_worker; print(pounce_worker.__file__); print(pounce_worker.__version__)"],
                 60, env=env, cwd=str(app_dir)).stdout.split()
    site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 60,
                     env=env).stdout.strip()).resolve()
    assert Path(where[0]).resolve() == site / "pounce_worker" / "__init__.py", where
    assert not Path(where[0]).resolve().is_relative_to(ROOT), where
    assert where[1] == version

    # -- serve the example app from the venv, outside the source tree --------------------------
    conf = tmp_path / "probe.conf.py"
    conf.write_text(PROBE_CONF)
    errorlog = tmp_path / "error.log"
    sock = listening_socket()
    port = sock.getsockname()[1]
    out = open(tmp_path / "stdout.log", "wb")
    proc = subprocess.Popen(
        [vpy, "-m", "gunicorn", "-k", "pounce_worker.ThreadWorker", "-c", str(conf),
         "-b", f"fd://{sock.fileno()}", "--workers", "1", "--no-control-socket",
         "--error-logfile", str(errorlog), "--log-level", "info", "--chdir", str(app_dir),
         "--graceful-timeout", "5", "conf.example_app:app"],
        env=env, cwd=str(app_dir), stdout=out, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),),
    )

    def log() -> str:
        return errorlog.read_text(errors="replace") if errorlog.exists() else ""

    try:
        deadline = time.monotonic() + 30
        while "probe: pounce_worker" not in log() or not re.search(r"pounce_worker: \w+ mode \(", log()):
            assert proc.poll() is None, f"gunicorn exited with {proc.returncode}:\n{log()}"
            assert time.monotonic() < deadline, f"gunicorn did not boot in 30 s:\n{log()}"
            time.sleep(0.05)
        probe = re.search(r"probe: pounce_worker (\S+) from (\S+), worker (\S+)", log())
        assert probe is not None, log()
        assert probe.group(1) == version
        assert Path(probe.group(2)).resolve() == site / "pounce_worker" / "__init__.py", probe.group(0)
        assert probe.group(3) == "pounce_worker.worker.ThreadWorker"

        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("GET", "/from-the-wheel?leg=" + sys.version.split()[0])
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        data = json.loads(body)
        assert data["path"] == "/from-the-wheel" and data["query"] == "leg=" + sys.version.split()[0]
        assert data["pid"] != proc.pid  # a forked worker answered, not the master
        conn.request("GET", "/readyz")  # lifespan startup ran in the loop that serves
        ready = conn.getresponse()
        assert (ready.status, ready.read()) == (200, b"ready\n")
        conn.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        sock.close()
        out.close()
    assert proc.returncode == 0, f"gunicorn exited with {proc.returncode} after TERM:\n{log()}"
    assert "Traceback" not in log(), log()
    assert "Shutting down: Master" in log(), log()

    assert _tree_state() == before, "the build wrote into the source tree"
    print(f"built in {built - started:.1f} s, installed in {installed - built:.1f} s, "
          f"served and stopped in {time.monotonic() - installed:.1f} s")


@pytest.mark.parametrize("name", ["README.rst", "CHANGELOG.rst"])
def test_rst_renders_without_sphinx(name: str) -> None:
    """A package index renders README.rst with plain docutils: no Sphinx roles, no warnings."""
    core = pytest.importorskip("docutils.core")
    text = (ROOT / name).read_text()
    settings = {"halt_level": 2, "report_level": 2, "warning_stream": False}  # warnings are errors
    core.publish_doctree(text, source_path=str(ROOT / name), settings_overrides=settings)

