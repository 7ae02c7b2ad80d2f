"""The kinds of view a real project has: plain, database (sync and async), request body, streaming, slow."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

log = logging.getLogger("tests.django_site")
#: The cache warmer of each event loop (a loop per thread in threads mode), started by /warm/.
warmers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
cache: dict[str, int] = {}


async def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"plain from django\n", content_type="text/plain")


def _count_items() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), sum(value) FROM site_item")
        count, _total = cursor.fetchone()
    return int(count)


def db(request: HttpRequest) -> HttpResponse:
    """A synchronous view (Django runs it in its thread) reading the database."""
    return JsonResponse({"items": _count_items()})


async def adb(request: HttpRequest) -> HttpResponse:
    """An async view reading the database through sync_to_async."""
    return JsonResponse({"items": await sync_to_async(_count_items)()})


@csrf_exempt
async def echo(request: HttpRequest) -> HttpResponse:
    """Reads the request body (a POST)."""
    return JsonResponse({"received": len(request.body)})


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Streams ``n`` chunks (default 20) from an async iterator, with a pause between them."""
    count = int(request.GET.get("n", "20"))
    size = int(request.GET.get("size", "1024"))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"%06d " % i + b"x" * size + b"\n"
            await asyncio.sleep(0.005)

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def sleep(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(float(request.GET.get("s", "0.05")))
    return HttpResponse(b"slept\n", content_type="text/plain")


async def _warm_cache() -> None:
    """Refreshes a cached count until the server stops: a background task of the app's own."""
    log.warning("cache warmer started")
    try:
        while True:
            cache["items"] = await sync_to_async(_count_items)()
            await asyncio.sleep(0.2)
    finally:
        log.warning("cache warmer stopped")


async def warm(request: HttpRequest) -> HttpResponse:
    """Starts this loop's cache warmer once (a reference is kept, as asyncio asks)."""
    loop = asyncio.get_running_loop()
    if loop not in warmers:
        warmers[loop] = asyncio.create_task(_warm_cache())
    return JsonResponse({"items": cache.get("items")})
