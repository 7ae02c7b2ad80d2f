"""Gunicorn configuration for pounce_worker: one file for GIL and free-threaded Pythons.

    gunicorn -c conf/gunicorn.conf.py myapp:app

The parallelism comes from the interpreter, and this file picks it so that the
same deployment uses every core on either build:

* free-threaded build (3.13t/3.14t, GIL really off): one worker process running
  one event-loop thread per core (``workers=1``, ``threads=<cores>``);
* GIL build: Gunicorn's fork model, one process per core, each with one event
  loop (``workers=<cores>``, ``threads=1``).

It asks ``pounce_worker.mode.choose()``, the worker's own decision, so
``POUNCE_WORKER_MODE=threads|processes`` forces either layout here too (and a
typo in it stops the boot with a message naming the variable).

"Cores" are those this process may use: the CPU affinity mask, capped by a
cgroup CPU quota (a container's CPU limit), or ``GUNICORN_CPUS`` when set.

Environment overrides (all optional; Gunicorn's own ``GUNICORN_CMD_ARGS`` and
command-line flags still override this file):

=============================  ===========================================================
``GUNICORN_BIND``              addresses, comma or space separated (``fd://N`` and
                               ``unix:PATH`` work); default ``$PORT`` on 0.0.0.0 if ``PORT``
                               is set (the PaaS convention Gunicorn follows), else
                               ``127.0.0.1:8000``. Ignored under systemd socket activation.
``WEB_CONCURRENCY``            worker processes (the name Gunicorn, uvicorn and PaaS use)
``GUNICORN_THREADS``           event loops per worker (thread mode only)
``GUNICORN_CPUS``              the core count the two defaults above are derived from
``GUNICORN_WORKER_CONNECTIONS``  connections per worker process (default 1000 per loop)
``GUNICORN_KEEPALIVE``         idle keep-alive seconds (default 35: longer than the 30s
                               upstream ``keepalive_timeout`` in conf/nginx/pounce.conf)
``GUNICORN_TIMEOUT``           seconds a silent worker lives before it is restarted (30)
``GUNICORN_GRACEFUL_TIMEOUT``  seconds in-flight requests get on stop/reload (30)
``GUNICORN_MAX_REQUESTS``      restart a worker after this many requests (0: never)
``GUNICORN_MAX_REQUESTS_JITTER``  random extra requests before that restart (0)
``GUNICORN_LOGLEVEL``          debug, info, warning, error, critical (info)
``GUNICORN_ACCESSLOG``         access log file, ``-`` for stdout (default: none)
``GUNICORN_CONTROL_SOCKET``    path of gunicornc's control socket; default
                               ``$RUNTIME_DIRECTORY/gunicorn.ctl`` under systemd
                               (``RuntimeDirectory=``), otherwise disabled, so two
                               servers never fight over one default path
``APP_MODULE``                 the app when none is given on the command line
``FORWARDED_ALLOW_IPS``        proxies trusted for X-Forwarded-Proto (Gunicorn reads it;
                               default 127.0.0.1,::1: right for nginx on the same host)
=============================  ===========================================================
"""

import math
import os

from pounce_worker import mode as _mode

DEFAULT_BIND = "127.0.0.1:8000"
#: Default connection limit per event loop: Gunicorn's worker_connections default,
#: so a process gets as many connections in thread mode as in process mode per core.
CONNECTIONS_PER_LOOP = 1000


def _env_int(name, default, minimum=0):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be at least {minimum}")
    return value


def cgroup_cpu_limit(root="/sys/fs/cgroup"):
    """Cores allowed by a cgroup CPU quota (rounded up), or None when there is none.

    cgroup v2 says ``<quota> <period>`` or ``max <period>`` in ``cpu.max``;
    v1 has ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us``.
    """
    try:
        with open(os.path.join(root, "cpu.max")) as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and int(period) > 0:
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as fh:
            quota = int(fh.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as fh:
            period = int(fh.read())
    except (OSError, ValueError):
        return None
    if quota > 0 and period > 0:
        return max(1, math.ceil(quota / period))
    return None


def usable_cpus():
    """Cores this process may run on: affinity mask, capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, limit)
    return max(1, cpus)


def _binds():
    raw = os.environ.get("GUNICORN_BIND", "").replace(",", " ").split()
    if raw:
        return raw
    port = os.environ.get("PORT", "").strip()
    if port:
        return [f"0.0.0.0:{port}"]
    return [DEFAULT_BIND]


# -- what runs ----------------------------------------------------------------------

worker_class = "pounce_worker.ThreadWorker"
wsgi_app = os.environ.get("APP_MODULE") or None
bind = _binds()

MODE, MODE_REASON = _mode.choose()
CPUS = _env_int("GUNICORN_CPUS", usable_cpus(), minimum=1)

if MODE is _mode.Mode.THREADS:
    # One process, a loop per core: the loops run in parallel without a GIL.
    workers = _env_int("WEB_CONCURRENCY", 1, minimum=1)
    threads = _env_int("GUNICORN_THREADS", CPUS, minimum=1)
else:
    # Fork model: one single-loop process per core. (threads > 1 would be ignored,
    # with a warning from the worker; GUNICORN_THREADS is passed on so you see it.)
    workers = _env_int("WEB_CONCURRENCY", CPUS, minimum=1)
    threads = _env_int("GUNICORN_THREADS", 1, minimum=1)

LOOPS_PER_WORKER = _mode.loop_count(MODE, threads)

# Per process, shared by its loops (each loop gets an equal share).
worker_connections = _env_int(
    "GUNICORN_WORKER_CONNECTIONS", CONNECTIONS_PER_LOOP * LOOPS_PER_WORKER, minimum=LOOPS_PER_WORKER
)

# -- timeouts -------------------------------------------------------------------------

# Longer than the idle timeout of a proxy that pools connections to us, so the proxy
# closes idle connections first and a request never races our close.
keepalive = _env_int("GUNICORN_KEEPALIVE", 35)
timeout = _env_int("GUNICORN_TIMEOUT", 30)
# On SIGTERM/SIGHUP: time for in-flight requests. Keep it below the process manager's
# stop timeout (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds).
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 0)

# -- logging, housekeeping ---------------------------------------------------------------

loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
errorlog = "-"
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None

# Worker heartbeat files on tmpfs: a container's overlay /tmp can stall them.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"

_control = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
if not _control and os.environ.get("RUNTIME_DIRECTORY"):
    _control = os.path.join(os.environ["RUNTIME_DIRECTORY"].split(":")[0], "gunicorn.ctl")
if _control:
    control_socket = _control
else:
    control_socket_disable = True

SUMMARY = (
    f"{MODE.value} mode ({MODE_REASON}): workers={workers} x threads={threads} "
    f"({LOOPS_PER_WORKER} event loop(s) per worker) for {CPUS} CPU(s), "
    f"worker_connections={worker_connections}, {_mode.interpreter_build()}"
)


def on_starting(server):
    server.log.info("gunicorn.conf.py: %s", SUMMARY)
