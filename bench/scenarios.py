"""The HTTP benchmark's scenarios (bench/run.py): what each requests and how its answer is checked."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _load_apps() -> Any:
    """``bench/apps.py`` as a module, for the expected response sizes (no sys.path games)."""
    spec = importlib.util.spec_from_file_location("_bench_apps", BENCH / "apps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apps = _load_apps()


# -- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    title: str
    body_size: int
    post_bytes: int = 0
    #: Sent as Accept-Encoding by wrk (and the preflight request) when set: --features.
    accept_encoding: str = ""

    def verify(self, status: int, body: bytes) -> str | None:
        """Why a response is wrong for this scenario, or None when it is right."""
        if status != 200:
            return f"status {status}"
        if len(body) != self.body_size:
            return f"body is {len(body)} bytes, expected {self.body_size}"
        if self.name == "plain" and body != apps.PLAIN_BODY:
            return f"body {body[:40]!r}"
        if self.name == "json":
            try:
                json.loads(body)
            except ValueError as exc:
                return f"invalid JSON: {exc}"
        if self.name == "stream" and body != apps.STREAM_PIECE * apps.STREAM_CHUNKS:
            return "streamed bytes differ from what the app sent"
        if self.name == "echo" and body != b"x" * self.post_bytes:
            return "echoed bytes differ from the request body"
        if self.name == "page" and body != apps.PAGE_BODY:
            return "page bytes differ from what the app sent"
        return None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("plain", "/plain", "plain text, 13 B", len(apps.PLAIN_BODY)),
        Scenario("json", "/json", "JSON, 2 KiB", apps.JSON_SIZE),
        Scenario("stream", "/stream", "stream 1 MiB in 64 KiB chunks", apps.STREAM_SIZE),
        Scenario("echo", "/echo", "POST echo, 64 KiB", apps.ECHO_SIZE, post_bytes=apps.ECHO_SIZE),
    )
}
#: Scenarios of the --features section (pounce_worker alone, with and without its opt-in features).
FEATURE_SCENARIOS: dict[str, Scenario] = {
    **{name: SCENARIOS[name] for name in ("plain", "json")},
    "page": Scenario("page", "/page", "HTML page, 16 KiB", apps.PAGE_SIZE),
}
#: --features rows: name -> (title, environment). Every row gets Accept-Encoding: gzip from wrk.
FEATURES: dict[str, tuple[str, dict[str, str]]] = {
    "off": ("pounce_worker, features off", {}),
    "gzip": ("POUNCE_COMPRESSION=gzip", {"POUNCE_COMPRESSION": "gzip"}),
    "timing": ("POUNCE_SERVER_TIMING=1", {"POUNCE_SERVER_TIMING": "1"}),
}

