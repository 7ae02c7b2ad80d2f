"""The one multiplexing ASGI app the compatibility suite serves, routed on path.

Every server under comparison (uvicorn, pounce_worker in both modes, gunicorn's
``-k asgi``) serves ``tests.compat.apps:app``. Paths under ``/starlette``,
``/fastapi`` and ``/django`` go to apps built on those frameworks; the rest are
raw ASGI handlers, each with one purpose.

What the app saw is recorded when the request carries ``x-compat-token``: the
``receive``/``send`` pair is wrapped, and when the app call returns (after any
background task) a JSON record is written to ``$COMPAT_RECORD_DIR/<token>.json``:
the scope (minus client/server ports), the messages received, what was sent and
how ``send`` behaved, and any exception the app raised. The tests compare those
records across servers exactly like they compare the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from tests.ws_apps import app as ws_app

#: The file every framework's file response serves: this module's own source.
SAMPLE_FILE = Path(__file__).resolve()
#: Routes handled by a framework; a trailing disconnect those apps listen for is timing, not behaviour.
FRAMEWORK_PREFIXES = ("/starlette", "/fastapi", "/django")


# -- recording -------------------------------------------------------------------


def _state_view(state: Any) -> dict[str, str]:
    return {str(k): repr(v) for k, v in sorted((state or {}).items())}


def scope_view(scope: dict[str, Any]) -> dict[str, Any]:
    """The scope as JSON, minus what legitimately varies per connection (ports)."""
    client = scope.get("client")
    server = scope.get("server")
    return {
        "type": scope["type"],
        "http_version": scope.get("http_version"),
        "method": scope.get("method"),
        "scheme": scope.get("scheme"),
        "path": scope.get("path"),
        "raw_path": None if scope.get("raw_path") is None else scope["raw_path"].decode("latin-1"),
        "query_string": scope.get("query_string", b"").decode("latin-1"),
        "root_path": scope.get("root_path"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope.get("headers", [])],
        "client_host": client[0] if client else None,
        "server_host": server[0] if server else None,
        "state": _state_view(scope.get("state")),
    }


class Recorder:
    """Wraps one request's receive/send and writes what happened when the app returns."""

    def __init__(self, scope: dict[str, Any], token: str) -> None:
        self.scope = scope
        self.token = token
        self.received: list[str] = []
        self.request_bytes = hashlib.sha256()
        self.request_len = 0
        self.last_more_body: bool | None = None
        self.sent: list[str] = []
        self.sent_bytes = 0
        self.send_errors: list[str] = []
        self.notes: dict[str, Any] = {}
        self.exception: str | None = None

    async def receive(self, receive):
        message = await receive()
        kind = message["type"]
        if not self.received or self.received[-1] != kind:
            self.received.append(kind)
        if kind == "http.request":
            body = message.get("body", b"")
            self.request_len += len(body)
            self.request_bytes.update(body)
            self.last_more_body = bool(message.get("more_body", False))
        return message

    async def send(self, send, message):
        kind = message["type"]
        if kind == "http.response.start":
            self.sent.append(f"start:{message['status']}")
        elif kind == "http.response.body":
            self.sent_bytes += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.sent.append("body:final")
            elif not self.sent or self.sent[-1] != "body:more":
                self.sent.append("body:more")
        try:
            await send(message)
        except BaseException as exc:
            self.send_errors.append(f"{type(exc).__name__} (OSError={isinstance(exc, OSError)})")
            raise

    def write(self) -> None:
        directory = os.environ.get("COMPAT_RECORD_DIR")
        if not directory:
            return
        received = list(self.received)
        path = self.scope.get("path", "")
        if path.startswith(FRAMEWORK_PREFIXES) or any(path.startswith(self.scope.get("root_path", "") + p)
                                                       for p in FRAMEWORK_PREFIXES):
            # Frameworks listen for the disconnect concurrently with the response
            # and cancel that listener when done: whether it got there is a race.
            if received and received[-1] == "http.disconnect" and self.last_more_body is False:
                received.pop()
        record = {
            "scope": scope_view(self.scope),
            "received": received,
            "request_body": {"len": self.request_len, "sha256": self.request_bytes.hexdigest()[:16],
                             "last_more_body": self.last_more_body},
            "sent": self.sent,
            "sent_bytes": self.sent_bytes,
            "send_errors": self.send_errors,
            "notes": self.notes,
            "exception": self.exception,
        }
        tmp = Path(directory) / f".{self.token}.tmp"
        tmp.write_text(json.dumps(record, sort_keys=True))
        tmp.replace(Path(directory) / f"{self.token}.json")


def note(scope: MutableMapping[str, Any], key: str, value: Any) -> None:
    """Add a note to the request's record (frameworks keep the scope dict we passed)."""
    recorder = scope.get("compat.recorder")
    if recorder is not None:
        recorder.notes[key] = value


# -- raw ASGI handlers -----------------------------------------------------------


async def read_body(receive) -> tuple[bytes, bool]:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body, True
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, False


async def respond(send, status: int, body: bytes, headers=(), content_length: bool = True) -> None:
    hdrs = [(b"content-type", b"text/plain; charset=utf-8"), *headers]
    if content_length:
        hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def _query(scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope["query_string"].decode("latin-1")))


async def h_echo(scope, receive, send):
    body, _ = await read_body(receive)
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest()[:16],
    }
    await respond(send, 200, json.dumps(payload, sort_keys=True).encode(), [(b"content-type", b"application/json")])


async def h_plain(scope, receive, send):
    await respond(send, 200, b"hello, world\n")


async def h_json(scope, receive, send):
    data = json.dumps({"ok": True, "items": list(range(5)), "text": "caf\u00e9 \u2713"}).encode("utf-8")
    await respond(send, 200, data, [(b"content-type", b"application/json")])


async def h_nolength(scope, receive, send):
    """A body without Content-Length: chunked on HTTP/1.1, close-delimited on 1.0."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"no length here\n"})


async def h_stream(scope, receive, send):
    count = int(_query(scope).get("n", "200"))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(count):
        await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        if i % 50 == 0:
            await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def h_stream_cl(scope, receive, send):
    """Many more_body chunks under a declared Content-Length."""
    chunks = [b"%05d|" % i for i in range(400)]
    total = sum(len(c) for c in chunks)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(total).encode())]})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def h_status(scope, receive, send):
    code = int(scope["path"].rsplit("/", 1)[1])
    headers = [(b"etag", b'"v1"')] if code == 304 else []
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def h_status_with_body(scope, receive, send):
    """An app bug: a 204 that tries to carry a body."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b"must not be sent"})


async def h_headers(scope, receive, send):
    """Repeated and mixed-case response headers."""
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"set-cookie", b"b=2; Path=/"),
        (b"X-Multi", b"one"),
        (b"x-multi", b"two"),
        (b"X-Latin1", "caf\u00e9".encode("latin-1")),
        (b"Cache-Control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"headers"})


async def h_custom_status(scope, receive, send):
    await respond(send, 299, b"unusual status")


async def h_raise_before(scope, receive, send):
    raise RuntimeError("boom before http.response.start")


async def h_raise_after(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("boom after http.response.start")


async def h_raise_after_head(scope, receive, send):
    """Sends http.response.start, then raises before any body."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    raise RuntimeError("boom right after http.response.start")


async def h_start_only(scope, receive, send):
    """Sends http.response.start and returns without any body message."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})


async def h_silent(scope, receive, send):
    """Returns without sending anything."""


async def h_incomplete(scope, receive, send):
    """Starts a body and returns without finishing it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"unfinished", "more_body": True})


async def h_cl_too_long(scope, receive, send):
    """Declares 5 bytes and sends 20: the protocol layer must refuse."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"x" * 20})


async def h_cl_too_short(scope, receive, send):
    """Declares 20 bytes and finishes after 5."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"20")]})
    await send({"type": "http.response.body", "body": b"x" * 5})


async def h_close(scope, receive, send):
    """The app asks for the connection to be closed after this response."""
    await respond(send, 200, b"closing", [(b"connection", b"close")])


async def h_reject(scope, receive, send):
    """Answers without reading the request body (e.g. after Expect: 100-continue)."""
    await respond(send, 413, b"too large, not reading it")


async def h_state(scope, receive, send):
    state = scope.get("state", {})
    data = json.dumps(_state_view(state), sort_keys=True).encode()
    # Mutating the request's state must not leak into the next request's copy.
    state["mutated_by_request"] = True
    await respond(send, 200, data, [(b"content-type", b"application/json")])


async def h_stream_until_disconnect(scope, receive, send):
    """Streams, waits for http.disconnect, then probes what ``send`` does afterwards."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
    outcome = "returned"
    try:
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"after disconnect", "more_body": True})
    except OSError as exc:
        outcome = f"raised {type(exc).__name__} (an OSError)"
    except Exception as exc:
        outcome = f"raised {type(exc).__name__} (not an OSError)"
    spec = tuple(int(x) for x in scope.get("asgi", {}).get("spec_version", "2.0").split("."))
    note(scope, "send_after_disconnect", outcome)
    # ASGI HTTP spec 2.4: "If send() is called on a closed connection the server
    # should raise a server-specific subclass of OSError." Apps (Starlette) rely on it.
    note(scope, "spec_2_4_promise_kept", spec < (2, 4) or outcome.endswith("(an OSError)"))


async def h_upload_until_disconnect(scope, receive, send):
    """Reads the body until the client goes away mid-upload."""
    body, disconnected = await read_body(receive)
    note(scope, "saw_disconnect", disconnected)
    note(scope, "got_some_body", len(body) > 0)
    note(scope, "got_whole_body", len(body) == int(dict(scope["headers"]).get(b"content-length", b"0")))


async def h_asgi(scope, receive, send):
    data = json.dumps(scope.get("asgi"), sort_keys=True).encode()
    await respond(send, 200, data, [(b"content-type", b"application/json")])


async def h_big(scope, receive, send):
    """8 MiB in 64 KiB more_body chunks, without Content-Length."""
    chunk = bytes(range(256)) * 256
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    for _ in range(128):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def h_app_sets_te(scope, receive, send):
    """The app frames its own body: Transfer-Encoding: chunked in its headers."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"Transfer-Encoding", b"chunked")]})
    await send({"type": "http.response.body", "body": b"self-declared ", "more_body": True})
    await send({"type": "http.response.body", "body": b"chunked"})


async def h_header_injection(scope, receive, send):
    """An app bug that would be a response-splitting hole: CR LF inside a header value."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-user", b"a\r\nSet-Cookie: injected=1")]})
    await send({"type": "http.response.body", "body": b"must not be sent"})


async def h_bad_header_name(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"x")]})
    await send({"type": "http.response.body", "body": b"must not be sent"})


async def h_status_101(scope, receive, send):
    """A 1xx status in http.response.start: not allowed by the ASGI HTTP spec."""
    await send({"type": "http.response.start", "status": 101, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def h_memoryview(scope, receive, send):
    """Bodies as bytearray and memoryview, and empty more_body chunks in between."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": bytearray(b"bytearray "), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    await send({"type": "http.response.body", "body": memoryview(b"memoryview "), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    await send({"type": "http.response.body", "body": b"bytes"})


async def h_scope(scope, receive, send):
    """Answers with the scope it saw (minus ports), as JSON."""
    body, _ = await read_body(receive)
    view = scope_view(scope)
    view["body_len"] = len(body)
    await respond(send, 200, json.dumps(view, sort_keys=True).encode(), [(b"content-type", b"application/json")])


RAW_ROUTES = {
    "/echo": h_echo,
    "/app-sets-te": h_app_sets_te,
    "/header-injection": h_header_injection,
    "/bad-header-name": h_bad_header_name,
    "/status-101": h_status_101,
    "/memoryview": h_memoryview,
    "/asgi": h_asgi,
    "/big": h_big,
    "/plain": h_plain,
    "/json": h_json,
    "/nolength": h_nolength,
    "/stream": h_stream,
    "/stream-cl": h_stream_cl,
    "/status/204": h_status,
    "/status/304": h_status,
    "/status/204-with-body": h_status_with_body,
    "/headers": h_headers,
    "/custom-status": h_custom_status,
    "/raise-before": h_raise_before,
    "/raise-after": h_raise_after,
    "/raise-after-head": h_raise_after_head,
    "/start-only": h_start_only,
    "/silent": h_silent,
    "/incomplete": h_incomplete,
    "/cl-too-long": h_cl_too_long,
    "/cl-too-short": h_cl_too_short,
    "/close": h_close,
    "/reject": h_reject,
    "/state": h_state,
    "/stream-until-disconnect": h_stream_until_disconnect,
    "/upload-until-disconnect": h_upload_until_disconnect,
}


# -- Starlette -------------------------------------------------------------------


def _build_starlette():
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def hello(request: Request):
        return PlainTextResponse("hello from starlette")

    async def item(request: Request):
        return JSONResponse({"id": request.path_params["item_id"], "q": request.query_params.get("q"),
                             "url_path": request.url.path, "root_path": request.scope.get("root_path")})

    async def echo_json(request: Request):
        data = await request.json()
        return JSONResponse({"received": data}, status_code=201)

    async def form(request: Request):
        async with request.form() as data:
            fields: dict[str, Any] = {}
            for key, value in data.multi_items():
                if not isinstance(value, str):
                    content = await value.read()
                    fields[key] = {"filename": value.filename, "size": len(content),
                                   "sha256": hashlib.sha256(content).hexdigest()[:16]}
                else:
                    fields[key] = value
        return JSONResponse(fields)

    async def file(request: Request):
        return FileResponse(SAMPLE_FILE, media_type="text/plain")

    async def stream(request: Request):
        async def gen():
            for i in range(100):
                yield f"line {i}\n"

        return StreamingResponse(gen(), media_type="text/plain")

    async def stream_forever(request: Request):
        """An endless feed: the server must tell the app when the client has gone."""
        scope = request.scope

        async def gen():
            sent = 0
            ended = "exhausted"  # ran to the safety cap: nobody stopped it
            try:
                while sent < 300:  # safety cap: ~3 s
                    yield "tick\n" * 64
                    sent += 1
                    await asyncio.sleep(0.01)
            except (asyncio.CancelledError, GeneratorExit):
                ended = "stopped"
                raise
            finally:
                note(scope, "generator_ended", ended)

        return StreamingResponse(gen(), media_type="text/plain")

    async def background(request: Request):
        scope = request.scope
        delay = float(request.query_params.get("sleep", "0"))

        async def task() -> None:
            started = time.monotonic()
            await asyncio.sleep(delay)
            note(scope, "background_ran", True)
            note(scope, "background_slept_enough", time.monotonic() - started >= delay)

        return PlainTextResponse("accepted", status_code=202, background=BackgroundTask(task))

    async def state(request: Request):
        return JSONResponse({"raw_startup": getattr(request.state, "raw_startup", None),
                             "fastapi_db": getattr(request.state, "fastapi_db", None)})

    return Starlette(routes=[
        Route("/starlette/hello", hello),
        Route("/starlette/items/{item_id:int}", item),
        Route("/starlette/json", echo_json, methods=["POST"]),
        Route("/starlette/form", form, methods=["POST"]),
        Route("/starlette/file", file, methods=["GET", "HEAD"]),
        Route("/starlette/stream", stream),
        Route("/starlette/stream-forever", stream_forever),
        Route("/starlette/background", background),
        Route("/starlette/state", state),
    ])


# -- FastAPI ---------------------------------------------------------------------


def _build_fastapi():
    from fastapi import BackgroundTasks, FastAPI, File, Form, Request, UploadFile
    from pydantic import BaseModel

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # Yielded state is merged into every request scope's "state".
        yield {"fastapi_db": "connected"}

    api = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    class Item(BaseModel):
        name: str
        price: float
        tags: list[str] = []

    @api.get("/fastapi/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

    @api.post("/fastapi/items")
    async def create_item(item: Item):
        return {"created": item.model_dump(), "total": item.price * 2}

    @api.post("/fastapi/upload")
    async def upload(title: str = Form(...), file: UploadFile = File(...)):  # noqa: B008 - FastAPI's idiom
        content = await file.read()
        return {"title": title, "filename": file.filename, "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest()[:16]}

    @api.post("/fastapi/background", status_code=202)
    async def background(request: Request, tasks: BackgroundTasks):
        scope = request.scope

        async def task(word: str) -> None:
            await asyncio.sleep(0.05)
            note(scope, "background_word", word)

        tasks.add_task(task, "done")
        return {"queued": True}

    @api.get("/fastapi/state")
    async def state(request: Request):
        return {"fastapi_db": getattr(request.state, "fastapi_db", None),
                "raw_startup": getattr(request.state, "raw_startup", None)}

    return api


# -- Django ----------------------------------------------------------------------


def _build_django():
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="compat-suite-not-secret",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
            LOGGING_CONFIG=None,
            DATA_UPLOAD_MAX_MEMORY_SIZE=None,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _django_urlpatterns():
    from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import path

    async def hello(request):
        return HttpResponse("hello from django", content_type="text/plain")

    async def article(request, year: int, slug: str):
        return JsonResponse({"year": year, "slug": slug, "path": request.path, "path_info": request.path_info,
                             "script_name": request.META.get("SCRIPT_NAME"), "q": request.GET.getlist("q")})

    async def echo_json(request):
        data = json.loads(request.body or b"null")
        return JsonResponse({"received": data, "content_type": request.content_type})

    async def form(request):
        files = {k: {"name": f.name, "size": f.size} for k, f in request.FILES.items()}
        return JsonResponse({"fields": {k: request.POST.getlist(k) for k in request.POST}, "files": files})

    def file(request):
        return FileResponse(open(SAMPLE_FILE, "rb"), content_type="text/plain")

    async def stream(request):
        async def gen():
            for i in range(50):
                yield f"row {i}\n".encode()

        return StreamingHttpResponse(gen(), content_type="text/plain")

    async def state(request):
        return JsonResponse(_state_view(request.scope.get("state")))

    return [
        path("django/hello/", hello),
        path("django/articles/<int:year>/<slug:slug>/", article),
        path("django/json/", echo_json),
        path("django/form/", form),
        path("django/file/", file),
        path("django/stream/", stream),
        path("django/state/", state),
    ]


_frameworks: dict[str, Any] = {}


def framework(name: str):
    app = _frameworks.get(name)
    if app is None:
        app = {"starlette": _build_starlette, "fastapi": _build_fastapi, "django": _build_django}[name]()
        _frameworks[name] = app
    return app


def __getattr__(name: str):
    # Django resolves ROOT_URLCONF=<this module> and asks for ``urlpatterns``.
    if name == "urlpatterns":
        return _django_urlpatterns()
    raise AttributeError(name)


# -- the multiplexer -------------------------------------------------------------


async def _lifespan(scope, receive, send):
    """Puts a key in the lifespan state, then lets FastAPI's lifespan add its own."""
    scope["state"]["raw_startup"] = "yes"
    await framework("fastapi")(scope, receive, send)


def _route_path(scope) -> str:
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


async def _dispatch(scope, receive, send):
    path = _route_path(scope)
    for prefix in FRAMEWORK_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return await framework(prefix[1:])(scope, receive, send)
    handler = RAW_ROUTES.get(path, h_scope)
    return await handler(scope, receive, send)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await ws_app(scope, receive, send)  # tests/ws_apps.py, shared with tests/websocket/test_websocket.py
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    token = dict(scope["headers"]).get(b"x-compat-token")
    if token is None:
        return await _dispatch(scope, receive, send)
    recorder = Recorder(scope, token.decode("ascii"))
    scope["compat.recorder"] = recorder
    try:
        await _dispatch(scope, lambda: recorder.receive(receive), lambda m: recorder.send(send, m))
    except BaseException as exc:
        recorder.exception = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        recorder.write()


async def startup_fails(scope, receive, send):
    """Lifespan startup fails: the server must refuse to serve and exit."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await respond(send, 200, b"should never be served")


# Build the frameworks at import, in the master (gunicorn --preload) or worker:
# a slow first request would otherwise be a per-server timing difference.
for _name in ("starlette", "fastapi", "django"):
    framework(_name)
