"""Apps for tests/asgi/test_asgi_parity.py: served by pounce_worker and by Gunicorn's ``-k asgi`` alike.

``scope_probe`` answers every HTTP request and WebSocket with its scope as JSON, so a
test can compare what each worker hands the app for the same request. ``early_hints``
sends informational (1xx) responses the way Gunicorn's ``-k asgi`` accepts them
(``http.response.informational``) and the way the ASGI spec's Early Hints extension
does (``http.response.early_hint``).
"""

from __future__ import annotations

import json
from typing import Any

#: The hinted page: above POUNCE_COMPRESSION_MIN_SIZE's default, so gzip applies when asked.
BODY = b"<html>hinted</html>" * 200
LINKS = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def scope_json(scope: dict[str, Any]) -> bytes:
    described = _jsonable(scope)
    described["_types"] = {key: type(value).__name__ for key, value in scope.items()}
    return json.dumps(described, sort_keys=True).encode()


async def scope_probe(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["from_lifespan"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope_json(scope).decode()})
        await send({"type": "websocket.close", "code": 1000})
        return
    body = scope_json(scope)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def early_hints(scope, receive, send):
    """``/`` one 103 then 200; ``/two`` two 103s; ``/spec`` the ASGI spec's message;
    ``/after-start`` a 103 after the response started (the body says what send() did);
    ``/stream`` a 103 before a streamed (chunked) body; ``/advertised`` whether the
    scope advertises the extension (the body is ``yes``/``no``)."""
    if scope["type"] == "lifespan":
        return
    path = scope["path"]
    body = BODY
    headers = [(b"content-type", b"text/html"), (b"link", LINKS[0])]
    if path == "/advertised":
        extensions = scope.get("extensions") or {}
        body = b"yes" if "http.response.early_hint" in extensions else b"no"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/after-start":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        try:
            await send({"type": "http.response.informational", "status": 103, "headers": [(b"link", LINKS[0])]})
        except RuntimeError as exc:
            outcome = b"refused: " + str(exc).encode()
        else:
            outcome = b"accepted"
        await send({"type": "http.response.body", "body": outcome})
        return
    if path == "/spec":
        await send({"type": "http.response.early_hint", "links": LINKS})
    else:
        await send({"type": "http.response.informational", "status": 103,
                    "headers": [(b"link", link) for link in LINKS]})
        if path == "/two":
            await send({"type": "http.response.informational", "status": 103, "headers": [(b"link", LINKS[1])]})
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if path == "/stream":
        await send({"type": "http.response.body", "body": body[:100], "more_body": True})
        await send({"type": "http.response.body", "body": body[100:]})
    else:
        await send({"type": "http.response.body", "body": body})
