"""HTTP/2 response heads: ``headers.ResponseCache`` answers exactly as ``headers.response`` (in-process, no server)."""

from __future__ import annotations

from typing import Any

import pytest

from pounce_worker.http2.headers import ResponseCache, response

DEFAULTS = [
    ((b"server", b"gunicorn"), (b"date", b"Sat, 05 Dec 2026 06:00:00 GMT")),
    ((b"server", b"gunicorn"), (b"date", b"Sat, 05 Dec 2026 06:00:01 GMT")),
]
#: Header lists an app sends: valid, rewritten (case, connection-specific fields), refused.
LISTS: list[Any] = [
    [(b"content-type", b"text/plain"), (b"content-length", b"13")],
    [(b"Content-Type", b"text/plain"), (b"Server", b"mine"), (b"connection", b"close")],
    [(b"content-length", b"5"), (b"content-length", b"5"), (b"x-a", b" padded ")],
    [(b"date", b"yesterday")],
    [],
    [[b"x-list", b"pair"]],  # a list pair: unhashable, checked every time
    [(b"x-mutable", bytearray(b"v"))],
    [(b"bad name", b"v")],
    [(b"x-bad", b"a\nb")],
    [(b"content-length", b"-1")],
    [(b"content-length", b"1"), (b"content-length", b"2")],
    [(b"x", "str")],
    [(b"only-name",)],
]


def outcome(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)


def test_cache_answers_as_response_does() -> None:
    """Each list twice (the second from the cache where it was kept), under another status and Date."""
    cache = ResponseCache()
    for headers in LISTS:
        for status, defaults in ((200, DEFAULTS[0]), (404, DEFAULTS[1]), (304, DEFAULTS[0])):
            expected = outcome(response, status, headers, defaults)
            assert outcome(cache.response, status, headers, defaults) == expected, (headers, status)
            assert outcome(cache.response, status, iter(headers), defaults) == expected, (headers, status)
    kept = set(cache.entries)
    assert kept == {tuple(LISTS[i]) for i in range(5)}  # valid lists of bytes pairs only


def test_cache_is_bounded() -> None:
    cache = ResponseCache()
    for i in range(200):
        cache.response(200, [(b"x-n", b"%d" % i), (b"x-big", b"v" * (i * 10))], DEFAULTS[0])
        assert len(cache.entries) <= ResponseCache.MAX_ENTRIES
        assert cache.held <= ResponseCache.MAX_BYTES
    block, _ = cache.response(200, [(b"x-huge", b"v" * (ResponseCache.MAX_BYTES + 1))], DEFAULTS[0])
    assert block[-1][0] == b"x-huge" and cache.held <= ResponseCache.MAX_BYTES


@pytest.mark.parametrize("status", [200, 500])
def test_defaults_yield_to_the_apps_fields(status: int) -> None:
    cache = ResponseCache()
    for _ in range(2):
        block, length = cache.response(status, [(b"Server", b"app"), (b"content-length", b"0")], DEFAULTS[0])
        assert block == [(b":status", b"%d" % status), DEFAULTS[0][1], (b"server", b"app"), (b"content-length", b"0")]
        assert length == 0
