"""The deployment examples in conf/ (tests/test_conf_*.py), config files, and the tools tests need."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.harness.gunicorn import BOOT_TIMEOUT, Gunicorn
from tests.harness.ports import ROOT, listening_socket


def write_config(directory: Path, body: str) -> Path:
    """A gunicorn config file (``-c``) holding ``body``; returns its path."""
    path = directory / "gunicorn_test_conf.py"
    path.write_text(body)
    return path


# -- deployment examples in conf/ (tests/test_conf_*.py) ------------------------------------------

CONF = ROOT / "conf"
GUNICORN_CONF = CONF / "gunicorn.conf.py"
#: What conf/gunicorn.conf.py (and Gunicorn itself) read from the environment: removed from the
#: servers' environment unless a test sets them, so the runner's own environment cannot leak in.
CONF_ENV = (
    "GUNICORN_BIND", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_CPUS",
    "GUNICORN_WORKER_CONNECTIONS", "GUNICORN_KEEPALIVE", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS_JITTER", "GUNICORN_LOGLEVEL", "GUNICORN_ACCESSLOG",
    "GUNICORN_CONTROL_SOCKET", "RUNTIME_DIRECTORY", "APP_MODULE", "GUNICORN_CMD_ARGS",
    "FORWARDED_ALLOW_IPS", "POUNCE_WORKER_MODE", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET",
)


def conf_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment minus ``CONF_ENV``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in CONF_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def conf_values(env: dict[str, str] | None = None, config: Path = GUNICORN_CONF) -> dict[str, object]:
    """The settings ``config`` computes under ``env``, evaluated in a fresh interpreter as gunicorn would."""
    code = (
        "import json, runpy, sys\n"
        "ns = runpy.run_path(sys.argv[1])\n"
        "out = {k: v for k, v in ns.items() if not k.startswith('__') and not callable(v)"
        " and not hasattr(v, '__spec__')}\n"
        "out['MODE'] = ns['MODE'].value\n"
        "print(json.dumps(out, default=str))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)], env=conf_environ(env), cwd=str(ROOT),
        capture_output=True, text=True, timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{config} failed under {env}:\n{done.stderr}")
    import json

    return dict(json.loads(done.stdout))


#: A worker's boot line (not the master's "thread mode on a GIL build" warning).
WORKER_BOOT_LINE = r"pounce_worker: (\w+) mode \(.*?\), (\d+) event loop\(s\)"


class ConfGunicorn(Gunicorn):
    """``gunicorn -c conf/gunicorn.conf.py APP``: only the config file and its environment decide.

    The listening socket is made here and handed over through the file's own
    ``GUNICORN_BIND`` (``fd://N``); the log is what the config sends to stderr.
    ``workers`` is how many boot lines ``wait_ready`` waits for.
    """

    def __init__(
        self,
        app: str | None = "conf.example_app:app",
        *args: str,
        mode: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        config: Path = GUNICORN_CONF,
    ) -> None:
        super().__init__(app or "", *args, mode=mode, workers=workers, env=env)
        self.config = config

    def command(self) -> list[str]:
        self.sock = listening_socket()
        self.port = self.sock.getsockname()[1]
        cmd = [self.python, "-m", "gunicorn", "-c", str(self.config), *self.args]
        return [*cmd, self.app] if self.app else cmd

    def environ(self) -> dict[str, str]:
        env = conf_environ()
        if self.mode is not None:
            env["POUNCE_WORKER_MODE"] = self.mode
        assert self.sock is not None
        env["GUNICORN_BIND"] = f"fd://{self.sock.fileno()}"
        env.update(self.extra_env)
        return env

    def log(self) -> str:
        try:
            return (self.tmp / "stdout.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        return f"--- gunicorn output ---\n{self.log()}"

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until ``workers`` workers logged their boot line and the port answers.

        Counts only the worker's "pounce_worker: <mode> mode (<why>), N event loop(s)"
        line: the master's "pounce_worker: thread mode on a GIL build" warning also
        matches ``pounce_worker: \\w+ mode`` and would be counted as a worker.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
            if len(re.findall(WORKER_BOOT_LINE, self.log())) >= self.workers and self._connectable():
                return
            time.sleep(0.05)
        raise TimeoutError(f"gunicorn did not become ready in {timeout}s:\n{self.output()}")


def require_tool(name: str, package: str, *extra_paths: str) -> str:
    """The path of a Debian tool a test needs; fails (never skips) naming the package to install."""
    import shutil

    found = shutil.which(name) or next((p for p in extra_paths if os.access(p, os.X_OK)), None)
    if found is None:
        import pytest

        pytest.fail(f"{name} is not installed: apt-get install {package} (tests/run installs it)", pytrace=False)
    return found
