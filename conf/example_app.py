"""A small ASGI app for trying pounce_worker and its deployment examples.

    gunicorn -c conf/gunicorn.conf.py conf.example_app:app
    gunicorn -k pounce_worker.ThreadWorker conf.example_app:app

``/healthz`` is the liveness probe (the loop answers), ``/readyz`` the readiness
probe (lifespan startup has completed in this loop); the Kubernetes manifest
and the Dockerfile's HEALTHCHECK use them. Every other path answers with JSON
describing the request.
"""

import json
import os
import threading


async def _send(send, status, data, content_type=b"application/json"):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode())],
    })
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["loop_thread"] = threading.current_thread().name
                scope["state"]["ready"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    path = scope["path"]
    if path == "/healthz":
        return await _send(send, 200, b"ok\n", b"text/plain")
    if path == "/readyz":
        ready = scope.get("state", {}).get("ready", False)
        return await _send(send, 200 if ready else 503, b"ready\n" if ready else b"starting\n", b"text/plain")
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = {
        "method": scope["method"],
        "path": path,
        "query": scope["query_string"].decode("latin-1"),
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "client": list(scope["client"]) if scope.get("client") else None,
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "lifespan_thread": scope.get("state", {}).get("loop_thread"),
        "body_bytes": len(body),
    }
    await _send(send, 200, json.dumps(payload).encode())
