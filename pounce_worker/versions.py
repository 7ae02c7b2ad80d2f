"""Reading an optional dependency's version, where a feature depends on it.

Two places gate on another package's release: HTTP/2 on h2's (http2.unusable), and the C
unmasking on websockets' (websocket/mask.py: only from 16.0 does its extension declare that
it needs no GIL). Both want the release's leading numbers as PEP 440 writes them:
``4.3rc1`` and ``4.3.post1`` are 4.3 releases, never 4.31.
"""

from __future__ import annotations

import re

_RELEASE = re.compile(r"(\d+)(?:\.(\d+))?")


def release(version: str) -> tuple[int, int] | None:
    """(major, minor) of ``version`` (a missing minor is 0), or None when it does not start with one."""
    found = _RELEASE.match(version)
    if found is None:
        return None
    return int(found[1]), int(found[2] or 0)
