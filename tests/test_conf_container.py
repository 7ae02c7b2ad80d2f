"""conf/Dockerfile and conf/kubernetes/deployment.yaml, checked as far as this machine allows.

There is no container engine or cluster here, so: every path, port, command and
variable they mention is checked against the repository and against each other,
and the image's CMD really runs (from the checkout, which the Dockerfile's COPY
lines map onto /app) with the image's ENV plus the manifest's container env,
after which the HEALTHCHECK command and the probe paths are exercised on it.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from pounce_worker.mode import gil_enabled
from tests.harness import CONF, GUNICORN_CONF, ROOT, WORKER_BOOT_LINE, ConfGunicorn, conf_values
from tests.test_freethreaded import IN_LEG_ENV

try:
    import yaml
except ImportError:  # pragma: no cover - the test extra installs it
    yaml = None

DOCKERFILE = CONF / "Dockerfile"
MANIFEST = CONF / "kubernetes" / "deployment.yaml"


# -- reading the files ---------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        line = pending + stripped
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def instructions(name: str) -> list[str]:
    return [rest for instruction, rest in dockerfile() if instruction == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions("ENV"):
        for token in shlex.split(rest):
            name, sep, value = token.partition("=")
            assert sep, f"ENV {rest!r}: use NAME=value"
            env[name] = value
    return env


def workdir() -> PurePosixPath:
    dirs = instructions("WORKDIR")
    assert dirs, "the Dockerfile sets a WORKDIR"
    return PurePosixPath(dirs[-1])


def copies() -> list[tuple[PurePosixPath, str]]:
    """Every COPY as (path in the image, source in the build context), with Docker's rules:
    into a directory destination (trailing ``/`` or several sources) a file keeps its name
    and a directory's contents land in it; otherwise the source becomes the destination."""
    out = []
    for rest in instructions("COPY"):
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        sources, raw_dest = words[:-1], words[-1]
        dest = PurePosixPath(workdir(), raw_dest)
        into_dir = raw_dest.endswith("/") or len(sources) > 1
        for source in sources:
            if into_dir and not (ROOT / source).is_dir():
                out.append((dest / PurePosixPath(source).name, source))
            else:
                out.append((dest, source))
    return out


def to_checkout(container_path: str) -> Path:
    """Where a path inside the image comes from in this checkout (the build context)."""
    path = PurePosixPath(workdir(), container_path)
    for target, source in reversed(copies()):  # a later COPY wins
        if path == target or target in path.parents:
            return ROOT / source / path.relative_to(target)
    raise AssertionError(f"{path} is not COPY'd into the image")


def exec_form(rest: str) -> list[str]:
    argv = json.loads(rest)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), f"not exec form: {rest}"
    return argv


def healthcheck_argv() -> list[str]:
    (rest,) = instructions("HEALTHCHECK")
    _, _, command = rest.partition(" CMD ")
    return exec_form(command)


def manifest() -> tuple[dict[str, Any], dict[str, Any]]:
    if yaml is None:
        if os.environ.get(IN_LEG_ENV) or not gil_enabled():
            # The free-threaded leg installs what installs there; PyYAML does not build on
            # every experimental interpreter (the nogil-3.12 alpha), so it skips, saying so.
            pytest.skip(f"PyYAML cannot be imported on this interpreter ({sys.version.split()[0]}, "
                        "free-threaded leg): the manifest is checked by the other legs")
        pytest.fail("PyYAML is not installed: pip install pyyaml (it belongs in the test extra)", pytrace=False)
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service"}, list(kinds)
    return kinds["Deployment"], kinds["Service"]


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet would set it (resourceFieldRef resolved, divisor 1 rounds up)."""
    env = {}
    limits = container["resources"]["limits"]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["resourceFieldRef"]
        assert ref["containerName"] == container["name"]
        resource = ref["resource"]
        assert resource == "limits.cpu", resource
        assert str(ref.get("divisor", "1")) == "1"
        cpu = str(limits["cpu"])
        cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        env[item["name"]] = str(math.ceil(cores))
    return env


def port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


# -- the Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_base_user_signal_ports() -> None:
    args = dict(a.split("=", 1) for a in instructions("ARG") if "=" in a)
    (base,) = instructions("FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?", base), base
    assert instructions("STOPSIGNAL") == ["SIGTERM"]
    # A numeric non-root user, created in the image with that id.
    (user,) = instructions("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit())
    assert any(f"--uid {uid}" in run for run in instructions("RUN")), "useradd --uid matching USER"
    # The exposed port is where gunicorn binds in the image, and conf/gunicorn.conf.py's default port.
    (expose,) = instructions("EXPOSE")
    env = image_env()
    default_port = port_of(conf_values({})["bind"][0])  # type: ignore[index]
    assert int(expose.split("/")[0]) == port_of(env["GUNICORN_BIND"]) == default_port
    assert env["GUNICORN_BIND"].startswith("0.0.0.0:"), "inside a container, listen on every interface"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "nothing written next to the code (read-only root)"


def test_dockerfile_copies_what_pip_install_needs() -> None:
    for _target, source in copies():
        assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
    steps = dockerfile()
    install = next(i for i, (ins, rest) in enumerate(steps)
                   if ins == "RUN" and re.search(r"pip install \.(\s|$)", rest))
    copied_before = {Path(s).as_posix() for ins, rest in steps[:install] if ins == "COPY"
                     for s in shlex.split(rest)[:-1] if not s.startswith("--")}
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    packages = setup["options"]["packages"].split()
    if packages == ["find:"]:  # the top-level packages find: includes (their subpackages come with them)
        include = setup["options.packages.find"]["include"].replace(",", " ").split()
        packages = [name for name in include if "." not in name and "*" not in name]
    needed = {"pyproject.toml", "setup.cfg", *packages}
    for value in setup["metadata"].values():
        if value.startswith("file:"):
            needed.update(v.strip() for v in value[5:].split(","))
    assert needed <= copied_before, f"not copied before pip install: {needed - copied_before}"


def test_dockerfile_cmd_and_healthcheck_point_at_real_things() -> None:
    (cmd,) = instructions("CMD")
    argv = exec_form(cmd)
    # "gunicorn" is the console script the gunicorn distribution installs.
    scripts = {ep.name for ep in importlib.metadata.distribution("gunicorn").entry_points
               if ep.group == "console_scripts"}
    assert argv[0] in scripts
    config = argv[argv.index("--config") + 1]
    assert to_checkout(config) == GUNICORN_CONF
    env = image_env()
    module, _, attr = env["APP_MODULE"].partition(":")
    assert to_checkout(module.replace(".", "/") + ".py").exists()
    assert attr
    check = healthcheck_argv()
    assert check[0] == "python"
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", check[-1])
    assert url is not None and int(url.group(1)) == port_of(env["GUNICORN_BIND"])


class ImageCmd(ConfGunicorn):
    """The image's CMD run from the checkout (= /app) with the image's environment."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        super().__init__(None, workers=workers, env=env)
        (cmd,) = instructions("CMD")
        self.cmd = exec_form(cmd)

    def command(self) -> list[str]:
        super().command()  # makes the listening socket
        return [self.python, "-m", "gunicorn", *self.cmd[1:]]


def _runtime_env(mode: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in image_env().items() if k != "GUNICORN_BIND"}  # loopback fd instead
    env.update({k: v for k, v in (extra or {}).items() if k != "GUNICORN_BIND"})
    # The image's user has no home and the root filesystem may be read-only.
    env.update({"HOME": "/nonexistent", "TMPDIR": "/nonexistent", "POUNCE_WORKER_MODE": mode})
    return env


def test_image_cmd_serves_and_healthcheck_passes(mode: str) -> None:
    env = _runtime_env(mode)
    workers = int(conf_values(env)["workers"])  # type: ignore[call-overload]
    server = ImageCmd(env, workers)
    with server:
        assert f"pounce_worker: {mode} mode (" in server.log()
        assert httpx.get(server.url + "/", timeout=5).json()["path"] == "/"
        check = [sys.executable, *healthcheck_argv()[1:]]
        check[-1] = check[-1].replace(":8000/", f":{server.port}/")
        assert subprocess.run(check, timeout=10).returncode == 0, server.output()
    # And it fails when nothing answers: a real check, not a constant.
    assert subprocess.run(check, timeout=10, capture_output=True).returncode != 0


# -- the Kubernetes manifest ----------------------------------------------------------------------


def test_manifest_labels_ports_and_image() -> None:
    deployment, service = manifest()
    assert deployment["apiVersion"] == "apps/v1" and service["apiVersion"] == "v1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    container = the_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (expose,) = instructions("EXPOSE")
    assert ports["http"] == int(expose.split("/")[0]) == port_of(container_env(container)["GUNICORN_BIND"])
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports or port["targetPort"] in ports.values()
    # The image is the one conf/Dockerfile's comment tells you to build.
    repository = container["image"].rsplit(":", 1)[0]
    assert f"-t {repository}" in DOCKERFILE.read_text()
    # The pod runs as the image's user.
    (user,) = instructions("USER")
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == int(user.split(":")[0])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports or container[probe]["httpGet"]["port"] in ports.values()


def test_manifest_env_is_what_the_config_reads() -> None:
    deployment, _ = manifest()
    container = the_container(deployment)
    conf_text = GUNICORN_CONF.read_text()
    for name in container_env(container):
        assert f'"{name}"' in conf_text or f"``{name}``" in conf_text, f"{name} is not read by {GUNICORN_CONF}"
    # GUNICORN_CPUS follows the CPU limit, so the layout fills exactly the cores the pod may use.
    values = conf_values({**image_env(), **container_env(container), "POUNCE_WORKER_MODE": "processes"})
    limit = math.ceil(float(str(container["resources"]["limits"]["cpu"]).rstrip("m")))
    assert values["workers"] == limit
    values = conf_values({**image_env(), **container_env(container), "POUNCE_WORKER_MODE": "threads"})
    assert (values["workers"], values["threads"]) == (1, limit)


def test_termination_grace_covers_prestop_and_drain() -> None:
    deployment, _ = manifest()
    pod = deployment["spec"]["template"]["spec"]
    container = the_container(deployment)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and shutil.which("sleep"), "preStop runs coreutils' sleep (in the python image)"
    pre_stop = float(command[1])
    assert 1 <= pre_stop <= 30, "long enough for endpoint removal to reach the proxies"
    graceful = float(conf_values({**image_env(), **container_env(container)})["graceful_timeout"])  # type: ignore[arg-type]
    # kubelet: preStop, then SIGTERM; gunicorn drains for graceful_timeout; SIGKILL at the grace period.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful + 5
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "a rollout never drops below the replica count"


def test_probe_paths_are_served_by_the_app(mode: str) -> None:
    """The probes' paths answer 200 on a server started with the pod's environment."""
    deployment, _ = manifest()
    container = the_container(deployment)
    env = _runtime_env(mode, container_env(container))
    workers = int(conf_values(env)["workers"])  # type: ignore[call-overload]
    with ImageCmd(env, workers) as server:
        booted = re.findall(WORKER_BOOT_LINE, server.log())
        assert len(booted) == workers
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            r = httpx.get(server.url + get["path"], timeout=container[probe]["timeoutSeconds"])
            assert r.status_code == 200, (probe, r.status_code, r.text)
        # A path the app does not treat as a probe is not mistaken for one.
        assert httpx.get(server.url + "/readyz-not", timeout=5).json()["path"] == "/readyz-not"
