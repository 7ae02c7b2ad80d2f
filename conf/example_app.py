"""A small ASGI app for trying pounce_worker: ``gunicorn -k pounce_worker.ThreadWorker conf.example_app:app``."""

import json
import threading


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["loop_thread"] = threading.current_thread().name
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "thread": threading.current_thread().name,
        "lifespan_thread": scope.get("state", {}).get("loop_thread"),
        "body_bytes": len(body),
    }
    data = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
    })
    await send({"type": "http.response.body", "body": data})
