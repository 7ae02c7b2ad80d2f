"""Gunicorn config for bench/ws.py's ``pounce-uvloop-puremask`` row (``-c python:bench.ws_puremask``).

Unmasks in pure Python even where websockets' C routine is installed: the cost on a
machine without ``websockets`` (or on a free-threaded build with one older than 16.0),
measured in the same run as the rest.
"""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    from pounce_worker.websocket import frames, mask

    frames.unmask = mask.unmask_py  # frames.py took its own reference at import
