"""The corpus: each case sends raw bytes to one server and returns what it observed.

A case is a function ``run(ctx) -> dict`` registered with ``@case``. The dict
is the observation the suite compares across servers: normalized responses
(status, headers minus Date/Server as a multiset, body, framing, completeness,
interim 1xx), whether the connection stayed open (a probe request on the same
socket), the records the app wrote about what it saw (scope, messages), and
any case-specific facts (exit codes, timings reduced to booleans).

Everything that legitimately varies between two runs of the same server
(ports, dates, chunk boundaries of a body read from TCP) is kept out of the
observation, so any remaining difference is a difference between servers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .client import Conn, Response
from .servers import ROOT_PATH, Served, ServerPool, _connectable, make_server

RECORD_TIMEOUT = 5.0
#: How long to wait for a record where the server may refuse the request before the app runs.
#: The app writes its record as it returns, right after its last send(): by the time the
#: response was read and the connection probed, a record that will exist is already there.
NOT_CALLED_WAIT = 0.5


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Ctx], dict[str, Any]]
    flavor: str = "main"  # "main", "root" (root_path /api) or "own" (the case starts its own server)
    doc: str = ""


CASES: dict[str, Case] = {}


Runner = Callable[["Ctx"], dict[str, Any]]


def case(name: str, flavor: str = "main") -> Callable[[Runner], Runner]:
    def register(fn: Runner) -> Runner:
        assert name not in CASES, name
        CASES[name] = Case(name, fn, flavor, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
        return fn

    return register


class Ctx:
    """What a case gets: the target's name and (for pooled flavors) its running server."""

    def __init__(self, target: str, served: Served | None, case_name: str = "case") -> None:
        self.target = target
        self.served = served
        self.case_name = case_name
        self.tokens = 0

    @property
    def port(self) -> int:
        assert self.served is not None
        return self.served.port

    def conn(self, timeout: float = 10.0) -> Conn:
        return Conn(self.port, timeout)

    def token(self) -> str:
        """A token naming the app's record; deterministic, since the app echoes it back in scopes."""
        self.tokens += 1
        return f"{self.case_name}-{self.tokens}"

    def record(self, token: str, timeout: float = RECORD_TIMEOUT) -> dict[str, Any] | None:
        """The app's record for ``token``, waiting for it (the app writes it when it returns)."""
        assert self.served is not None
        path = self.served.record_dir / f"{token}.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return dict(json.loads(path.read_text()))
            time.sleep(0.02)
        return None


# -- helpers -----------------------------------------------------------------------


def body_view(body: bytes) -> Any:
    if len(body) <= 400:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body.decode("latin-1")
    return {"len": len(body), "sha256": hashlib.sha256(body).hexdigest()[:16]}


def norm(resp: Response | None) -> dict[str, Any] | None:
    """A response as compared: Date and Server dropped, header names lowercased, as a sorted multiset."""
    if resp is None:
        return None
    headers = sorted([k, v] for k, v in resp.headers if k not in ("date", "server"))
    return {
        "version": resp.version,
        "status": resp.status,
        "reason": resp.reason,
        "headers": headers,
        "body": body_view(resp.body),
        "framing": resp.framing,
        "complete": resp.complete,
        "interim": resp.interim,
    }


def req(method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
        version: str = "HTTP/1.1", token: str | None = None, host: bool = True, length: bool | None = None) -> bytes:
    """Request bytes; Content-Length is added for a body unless ``length=False``."""
    lines = [f"{method} {target} {version}"]
    if host:
        lines.append("Host: compat.test")
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if token:
        lines.append(f"X-Compat-Token: {token}")
    if length or (length is None and body):
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return out + b"0\r\n" + trailer + b"\r\n"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[str, bytes]:
    boundary = "compatboundary7d93"
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, (filename, content, ctype) in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", out


def exchange(ctx: Ctx, data: bytes, method: str = "GET", token: str | None = None, probe: bool = True,
             timeout: float = 10.0, record_timeout: float = RECORD_TIMEOUT) -> dict[str, Any]:
    """One request on a fresh connection: its response, whether the connection stays open, the app's record."""
    with ctx.conn(timeout) as c:
        c.send(data)
        resp = c.try_response(method, timeout)
        obs: dict[str, Any] = {"responses": [norm(resp)]}
        if probe:
            obs["open_after"] = c.still_open()
    if token:
        obs["records"] = [ctx.record(token, record_timeout)]
    return obs


def simple(ctx: Ctx, method: str, target: str, headers: list[tuple[str, str]] | None = None,
           body: bytes = b"", record: bool = True, record_timeout: float = RECORD_TIMEOUT, **kw: Any,
           ) -> dict[str, Any]:
    """One request with a record token; the observation includes what the app saw (None: not called)."""
    token = ctx.token() if record else None
    return exchange(ctx, req(method, target, headers, body, token=token, **kw), method, token,
                    record_timeout=record_timeout)


# -- plain responses -----------------------------------------------------------------


@case("plain")
def _plain(ctx: Ctx) -> dict[str, Any]:
    """GET a text/plain response with Content-Length."""
    return simple(ctx, "GET", "/plain")


@case("json")
def _json(ctx: Ctx) -> dict[str, Any]:
    """GET a JSON response with non-ASCII text."""
    return simple(ctx, "GET", "/json")


@case("no_content_length")
def _no_length(ctx: Ctx) -> dict[str, Any]:
    """A response without Content-Length: the server picks chunked framing."""
    return simple(ctx, "GET", "/nolength")


@case("response_headers_repeated")
def _resp_headers(ctx: Ctx) -> dict[str, Any]:
    """Repeated Set-Cookie and custom headers, mixed case, a latin-1 value."""
    return simple(ctx, "GET", "/headers")


@case("custom_status")
def _custom_status(ctx: Ctx) -> dict[str, Any]:
    """A status code without a standard reason phrase (299)."""
    return simple(ctx, "GET", "/custom-status")


@case("asgi_spec_version")
def _asgi_version(ctx: Ctx) -> dict[str, Any]:
    """scope["asgi"]: the ASGI version and the HTTP spec version the server claims."""
    return simple(ctx, "GET", "/asgi")


@case("big_response_8mb")
def _big(ctx: Ctx) -> dict[str, Any]:
    """8 MiB in 64 KiB more_body chunks: write flow control."""
    return simple(ctx, "GET", "/big")


@case("scope_basic")
def _scope_basic(ctx: Ctx) -> dict[str, Any]:
    """The scope of a plain GET, as the app sees it and echoes it back."""
    return simple(ctx, "GET", "/scope/basic?x=1", headers=[("User-Agent", "compat/1"), ("Accept", "*/*")])


# -- streaming -------------------------------------------------------------------------


@case("stream_many_chunks")
def _stream(ctx: Ctx) -> dict[str, Any]:
    """1000 more_body chunks without Content-Length."""
    return simple(ctx, "GET", "/stream?n=1000")


@case("stream_with_content_length")
def _stream_cl(ctx: Ctx) -> dict[str, Any]:
    """400 more_body chunks under a declared Content-Length."""
    return simple(ctx, "GET", "/stream-cl")


# -- request bodies ---------------------------------------------------------------------


@case("body_content_length")
def _body_cl(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/echo", [("Content-Type", "text/plain")], b"hello world")


@case("body_content_length_empty")
def _body_cl_empty(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/echo", [("Content-Type", "text/plain")], b"", length=True)


@case("body_chunked")
def _body_chunked(ctx: Ctx) -> dict[str, Any]:
    """Chunked upload with a chunk extension and a trailer."""
    token = ctx.token()
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    return exchange(ctx, req("POST", "/echo", [("Transfer-Encoding", "chunked")], token=token) + body, "POST", token)


@case("body_chunked_empty")
def _body_chunked_empty(ctx: Ctx) -> dict[str, Any]:
    token = ctx.token()
    return exchange(ctx, req("POST", "/echo", [("Transfer-Encoding", "chunked")], token=token) + b"0\r\n\r\n",
                    "POST", token)


TEN_MB = bytes(range(256)) * (10 * 1024 * 1024 // 256)


@case("body_content_length_10mb")
def _body_cl_10mb(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/echo", [("Content-Type", "application/octet-stream")], TEN_MB)


@case("body_chunked_10mb")
def _body_chunked_10mb(ctx: Ctx) -> dict[str, Any]:
    token = ctx.token()
    parts = [TEN_MB[i:i + 65536] for i in range(0, len(TEN_MB), 65536)]
    data = req("POST", "/echo", [("Transfer-Encoding", "chunked")], token=token) + chunked(parts)
    return exchange(ctx, data, "POST", token)


@case("expect_100_continue")
def _expect(ctx: Ctx) -> dict[str, Any]:
    """Expect: 100-continue; the body is sent only after the interim response."""
    token = ctx.token()
    with ctx.conn() as c:
        c.send(req("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "11")], token=token))
        first = c.read_head(timeout=5)
        got_100 = first.status == 100
        c.send(b"hello world")
        resp = c.read_response("POST", head=None if got_100 else first)
        if got_100:
            resp.interim.insert(0, 100)
        obs = {"responses": [norm(resp)], "open_after": c.still_open()}
    obs["records"] = [ctx.record(token)]
    return obs


@case("expect_100_rejected")
def _expect_rejected(ctx: Ctx) -> dict[str, Any]:
    """Expect: 100-continue, the app answers 413 without reading: no 100 may be sent."""
    token = ctx.token()
    with ctx.conn() as c:
        c.send(req("POST", "/reject", [("Expect", "100-continue"), ("Content-Length", "1000")], token=token))
        resp = c.read_response("POST", timeout=5)
        # The client sends the body anyway; the server must skip it and serve the next request.
        c.send(b"z" * 1000)
        obs = {"responses": [norm(resp)], "open_after": c.still_open()}
    obs["records"] = [ctx.record(token)]
    return obs


@case("body_unread_then_pipelined")
def _unread(ctx: Ctx) -> dict[str, Any]:
    """The app answers without reading a 100 KiB body; a pipelined request follows the body."""
    data = req("POST", "/plain", body=b"q" * 102400) + req("GET", "/echo?after=unread")
    with ctx.conn() as c:
        c.send(data)
        responses = [norm(c.try_response("POST")), norm(c.try_response())]
        return {"responses": responses, "open_after": c.still_open()}


@case("http10_post_body")
def _http10_post(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/echo", body=b"one-oh body", version="HTTP/1.0")


@case("transfer_encoding_and_content_length")
def _te_cl(ctx: Ctx) -> dict[str, Any]:
    """Both framings declared (a smuggling vector): h11 refuses the request."""
    token = ctx.token()
    data = req("POST", "/echo", [("Content-Length", "3"), ("Transfer-Encoding", "chunked")], token=token,
               length=False) + b"5\r\nhello\r\n0\r\n\r\n"
    return exchange(ctx, data, "POST", token, record_timeout=NOT_CALLED_WAIT)


_TE_CHUNKED = ("Transfer-Encoding", "chunked")

# Requests h11 accepts and pounce_worker refuses on purpose (pounce_worker/validate.py):
# each one is a way two HTTP parsers in a row can disagree about a request.
STRICT_REQUESTS = {
    "strict_repeated_content_length": req("POST", "/echo", [("Content-Length", "5"), ("Content-Length", "5")],
                                          length=False) + b"hello",
    "strict_host_list": req("GET", "/scope/hostlist", [("Host", "a.test, b.test")], host=False),
    "strict_bare_lf": b"GET /scope/barelf HTTP/1.1\nHost: compat.test\n\n",
    "strict_obs_fold": req("GET", "/scope/fold", [("X-Folded", "first"), (" continued", "")]).replace(
        b"\r\n continued: ", b"\r\n continued"),
    "strict_control_char_in_value": req("GET", "/scope/ctl", [("X-Ctl", "a\x01b")]),
    "strict_lowercase_method": req("get", "/scope/lower"),
    "strict_http_1_2": req("GET", "/scope/v12", version="HTTP/1.2"),
    "strict_expect_unknown": req("POST", "/echo", [("Expect", "200-ok")], body=b"x"),
    "strict_repeated_content_type": req("GET", "/scope/ctype", [("Content-Type", "a/b"), ("Content-Type", "c/d")]),
    "strict_host_invalid": req("GET", "/scope/hostspace", [("Host", "a b")], host=False),
    "strict_authority_form_get": req("GET", "compat.test:80"),
    "strict_asterisk_form_get": req("GET", "*"),
    "strict_transfer_encoding_http_1_0": req("POST", "/echo", [_TE_CHUNKED], version="HTTP/1.0")
    + b"5\r\nhello\r\n0\r\n\r\n",
    "strict_chunk_size_whitespace": req("POST", "/echo", [_TE_CHUNKED]) + b"5 \r\nhello\r\n0\r\n\r\n",
    "strict_chunk_extension": req("POST", "/echo", [_TE_CHUNKED]) + b"5;a b\r\nhello\r\n0\r\n\r\n",
    "strict_trailer_content_length": req("POST", "/echo", [_TE_CHUNKED])
    + b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
}


def _strict_case(name: str, data: bytes) -> None:
    def run(ctx: Ctx) -> dict[str, Any]:
        return exchange(ctx, data, "GET", None)

    run.__doc__ = f"h11 accepts, pounce_worker's validate.py refuses: {name[len('strict_'):]}."
    case(name)(run)


for _name, _data in STRICT_REQUESTS.items():
    _strict_case(_name, _data)


@case("upgrade_h2c_ignored")
def _upgrade(ctx: Ctx) -> dict[str, Any]:
    """An Upgrade the server does not support: answered as plain HTTP/1.1, connection kept."""
    return simple(ctx, "GET", "/scope/upgrade", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                                 ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])


# -- body-less responses ------------------------------------------------------------------


@case("head_content_length")
def _head_cl(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "HEAD", "/plain")


@case("head_no_length")
def _head_nolength(ctx: Ctx) -> dict[str, Any]:
    """HEAD on a route whose GET is chunked: same headers, no body."""
    return simple(ctx, "HEAD", "/nolength")


@case("status_204")
def _204(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/status/204")


@case("status_304")
def _304(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/status/304", [("If-None-Match", '"v1"')])


@case("status_204_app_sends_body")
def _204_body(ctx: Ctx) -> dict[str, Any]:
    """App bug: a body on a 204."""
    return simple(ctx, "GET", "/status/204-with-body")


# -- connection management -------------------------------------------------------------------


@case("keepalive_100_requests")
def _keepalive(ctx: Ctx) -> dict[str, Any]:
    """100 sequential requests on one connection."""
    statuses: list[int | None] = []
    framings: set[str] = set()
    digest = hashlib.sha256()
    with ctx.conn() as c:
        for i in range(100):
            c.send(req("GET", f"/echo?i={i}"))
            resp = c.try_response()
            if resp is None:
                statuses.append(None)
                break
            statuses.append(resp.status)
            framings.add(resp.framing)
            digest.update(resp.body)
        open_after = c.still_open()
    return {"served": len([s for s in statuses if s == 200]), "framings": sorted(framings),
            "bodies_sha256": digest.hexdigest()[:16], "open_after": open_after}


@case("pipelined")
def _pipelined(ctx: Ctx) -> dict[str, Any]:
    """Three requests in one write (one with a body), answered in order."""
    data = req("GET", "/echo?n=1") + req("POST", "/echo?n=2", body=b"abcde") + req("GET", "/plain")
    with ctx.conn() as c:
        c.send(data)
        responses = [norm(c.try_response()) for _ in range(3)]
        return {"responses": responses, "open_after": c.still_open()}


@case("pipelined_mixed")
def _pipelined_mixed(ctx: Ctx) -> dict[str, Any]:
    """HEAD, a chunked POST, a 204, a stream and a 304, pipelined in one write: framing bookkeeping."""
    data = (req("HEAD", "/nolength") + req("POST", "/echo", [("Transfer-Encoding", "chunked")])
            + chunked([b"abc", b"defg"]) + req("GET", "/status/204") + req("GET", "/stream?n=3")
            + req("GET", "/status/304") + req("HEAD", "/plain"))
    methods = ["HEAD", "POST", "GET", "GET", "GET", "HEAD"]
    with ctx.conn() as c:
        c.send(data)
        responses = [norm(c.try_response(m)) for m in methods]
        return {"responses": responses, "open_after": c.still_open()}


@case("pipelined_then_close")
def _pipelined_close(ctx: Ctx) -> dict[str, Any]:
    """Pipelined requests where the second says Connection: close; the third must not be answered."""
    data = (req("GET", "/echo?n=1") + req("GET", "/echo?n=2", [("Connection", "close")])
            + req("GET", "/echo?n=3"))
    with ctx.conn() as c:
        c.send(data)
        responses = [norm(c.try_response()) for _ in range(3)]
        return {"responses": responses, "closed": c.wait_closed()}


@case("http10_no_keepalive")
def _http10(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/plain", version="HTTP/1.0")


@case("http10_keepalive_requested")
def _http10_ka(ctx: Ctx) -> dict[str, Any]:
    """HTTP/1.0 asking for keep-alive (h11 does not do 1.0 keep-alive)."""
    return simple(ctx, "GET", "/plain", [("Connection", "keep-alive")], version="HTTP/1.0")


@case("http10_no_length")
def _http10_nolength(ctx: Ctx) -> dict[str, Any]:
    """HTTP/1.0 and no Content-Length: a close-delimited body."""
    return simple(ctx, "GET", "/nolength", version="HTTP/1.0")


@case("http10_no_host")
def _http10_nohost(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/scope/nohost", version="HTTP/1.0", host=False)


@case("connection_close_request")
def _conn_close(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/plain", [("Connection", "close")])


@case("connection_close_app")
def _conn_close_app(ctx: Ctx) -> dict[str, Any]:
    """The app sends Connection: close itself."""
    return simple(ctx, "GET", "/close")


# -- targets, paths, query strings -------------------------------------------------------------


@case("query_string")
def _query(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/scope/q?a=1&b=%20x&c&a=2&d=%E2%9C%93&e=caf%C3%A9+x")


@case("percent_encoded_path")
def _pct_path(ctx: Ctx) -> dict[str, Any]:
    """Percent-encoded UTF-8, an encoded slash, a bad escape, an invalid UTF-8 escape."""
    return simple(ctx, "GET", "/scope/caf%C3%A9/a%2Fb/%20sp/%zz/%ff/%E2%9C%93")


@case("non_ascii_raw_path")
def _raw_non_ascii(ctx: Ctx) -> dict[str, Any]:
    """Raw UTF-8 bytes in the request target (not allowed by RFC 9112; h11 rejects)."""
    token = ctx.token()
    data = b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: compat.test\r\nX-Compat-Token: " + token.encode() + b"\r\n\r\n"
    return exchange(ctx, data, "GET", token, record_timeout=NOT_CALLED_WAIT)


@case("odd_targets")
def _odd_targets(ctx: Ctx) -> dict[str, Any]:
    """A fragment, a bare '?', double slashes, dot segments, a semicolon: passed through untouched."""
    targets = ["/scope/frag#section", "/scope/bare?", "//scope//double", "/scope/a/../b/./c", "/scope/semi;p=1?q"]
    with ctx.conn() as c:
        responses = []
        for target in targets:
            c.send(req("GET", target))
            responses.append(norm(c.try_response()))
        return {"responses": responses, "open_after": c.still_open()}


@case("absolute_form_target")
def _absolute(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "http://compat.test/scope/abs?x=1")


@case("options_asterisk")
def _options_star(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "OPTIONS", "*")


@case("bad_request_line")
def _bad_line(ctx: Ctx) -> dict[str, Any]:
    """Garbage instead of a request line: a 400 from the server, the app is never called."""
    return exchange(ctx, b"THIS IS NOT HTTP\r\n\r\n", "GET", None)


# -- request headers ----------------------------------------------------------------------------


@case("request_headers_repeated")
def _req_headers(ctx: Ctx) -> dict[str, Any]:
    """Repeated fields, mixed-case names, a latin-1 value, surrounding whitespace."""
    headers = [("X-Dup", "a"), ("x-dup", "b"), ("Cookie", "a=1"), ("Cookie", "b=2"),
               ("X-Latin1", "caf\u00e9"), ("X-Spaces", "   padded   "), ("X-Empty", "")]
    return simple(ctx, "GET", "/scope/headers", headers)


@case("request_headers_90_fields")
def _many_headers(ctx: Ctx) -> dict[str, Any]:
    """90 header fields of ~100 bytes: within both servers' limits."""
    headers = [(f"X-Field-{i:03d}", "v" * 90) for i in range(90)]
    return simple(ctx, "GET", "/scope/many", headers)


@case("request_header_8000_bytes")
def _big_header(ctx: Ctx) -> dict[str, Any]:
    """One 8000-byte header value: within gunicorn's limit_request_field_size=8190 and h11's 16 KiB."""
    return simple(ctx, "GET", "/scope/big", [("X-Big", "b" * 8000)])


@case("request_headers_120_fields")
def _too_many_headers(ctx: Ctx) -> dict[str, Any]:
    """120 header fields: over gunicorn's limit_request_fields=100, fine for h11."""
    headers = [(f"X-Field-{i:03d}", "v") for i in range(120)]
    return simple(ctx, "GET", "/scope/toomany", headers, record_timeout=NOT_CALLED_WAIT)


@case("request_head_32kb_trickled")
def _head_32kb(ctx: Ctx) -> dict[str, Any]:
    """A 32 KiB request head sent in 2 KiB pieces: over h11's default 16 KiB incomplete-head limit."""
    token = ctx.token()
    data = req("GET", "/scope/head32k", [(f"X-Pad-{i}", "p" * 4000) for i in range(8)], token=token)
    with ctx.conn() as c:
        for i in range(0, len(data), 2048):
            if not c.send(data[i:i + 2048]):
                break
            time.sleep(0.005)
        resp = c.try_response()
        obs = {"responses": [norm(resp)], "open_after": c.still_open()}
    obs["app_called"] = ctx.record(token, timeout=NOT_CALLED_WAIT) is not None
    return obs


@case("request_line_5000_bytes")
def _long_line(ctx: Ctx) -> dict[str, Any]:
    """A 5000-byte request target: over gunicorn's limit_request_line=4094, fine for h11."""
    return simple(ctx, "GET", "/scope/" + "l" * 5000, record_timeout=NOT_CALLED_WAIT)


# -- root_path ----------------------------------------------------------------------------------


@case("root_path_scope", flavor="root")
def _root_scope(ctx: Ctx) -> dict[str, Any]:
    """--root-path /api: root_path, path and raw_path in the scope."""
    return simple(ctx, "GET", "/scope/rooted?x=1")


@case("root_path_starlette", flavor="root")
def _root_starlette(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/starlette/items/7?q=rooted")


@case("root_path_django", flavor="root")
def _root_django(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/django/articles/2024/rooted/?q=1")


@case("root_path_prefixed_target", flavor="root")
def _root_prefixed(ctx: Ctx) -> dict[str, Any]:
    """A proxy that did not strip the prefix: the target already starts with /api."""
    return simple(ctx, "GET", ROOT_PATH + "/scope/prefixed")


# -- disconnects --------------------------------------------------------------------------------


@case("disconnect_during_stream")
def _disc_stream(ctx: Ctx) -> dict[str, Any]:
    """The client leaves mid-stream: the app must see http.disconnect; then it calls send again."""
    token = ctx.token()
    with ctx.conn() as c:
        c.send(req("GET", "/stream-until-disconnect", token=token))
        head = c.read_head()
        c._read_exact(100, time.monotonic() + 5)
    return {"status": head.status, "records": [ctx.record(token)]}


@case("disconnect_during_upload")
def _disc_upload(ctx: Ctx) -> dict[str, Any]:
    """The client leaves after sending 64 KiB of a 1 MiB body."""
    token = ctx.token()
    with ctx.conn() as c:
        c.send(req("POST", "/upload-until-disconnect", [("Content-Length", str(1 << 20))], token=token))
        c.send(b"u" * 65536)
        time.sleep(0.2)
    return {"records": [ctx.record(token)]}


@case("disconnect_starlette_endless_stream")
def _disc_starlette(ctx: Ctx) -> dict[str, Any]:
    """Starlette StreamingResponse of an endless generator: does it stop when the client leaves?"""
    token = ctx.token()
    with ctx.conn() as c:
        c.send(req("GET", "/starlette/stream-forever", token=token))
        head = c.read_head()
        c._read_exact(2000, time.monotonic() + 5)
    record = ctx.record(token, timeout=10.0)  # an unstopped generator runs to its ~3 s cap
    return {"status": head.status, "generator_ended": (record or {}).get("notes", {}).get("generator_ended")}


# -- app errors ----------------------------------------------------------------------------------


@case("app_raises_before_start")
def _raise_before(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/raise-before")


@case("app_raises_after_start")
def _raise_after(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/raise-after")


@case("app_raises_right_after_head")
def _raise_after_head(ctx: Ctx) -> dict[str, Any]:
    """http.response.start, then an exception before any body message."""
    return simple(ctx, "GET", "/raise-after-head")


@case("app_returns_after_head_only")
def _start_only(ctx: Ctx) -> dict[str, Any]:
    """http.response.start, then the app returns without any body message."""
    return simple(ctx, "GET", "/start-only")


@case("app_sets_transfer_encoding")
def _app_te(ctx: Ctx) -> dict[str, Any]:
    """The app declares Transfer-Encoding: chunked itself."""
    return simple(ctx, "GET", "/app-sets-te")


@case("app_header_injection")
def _injection(ctx: Ctx) -> dict[str, Any]:
    """CR LF in a response header value: must be refused (500), never written."""
    return simple(ctx, "GET", "/header-injection")


@case("app_bad_header_name")
def _bad_name(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/bad-header-name")


@case("app_status_101")
def _status_101(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/status-101")


@case("app_body_bytearray_memoryview")
def _memoryview(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/memoryview")


@case("app_returns_without_response")
def _silent(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/silent")


@case("app_returns_mid_body")
def _incomplete(ctx: Ctx) -> dict[str, Any]:
    """more_body=True, then the app returns."""
    return simple(ctx, "GET", "/incomplete")


@case("app_body_longer_than_content_length")
def _cl_long(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/cl-too-long")


@case("app_body_shorter_than_content_length")
def _cl_short(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/cl-too-short")


# -- lifespan ---------------------------------------------------------------------------------------


@case("lifespan_state")
def _state(ctx: Ctx) -> dict[str, Any]:
    """Lifespan state in the request scope, copied per request (a mutation does not leak)."""
    with ctx.conn() as c:
        responses = []
        for _ in range(2):
            c.send(req("GET", "/state"))
            responses.append(norm(c.try_response()))
        return {"responses": responses, "open_after": c.still_open()}


@case("lifespan_startup_failure", flavor="own")
def _startup_failure(ctx: Ctx) -> dict[str, Any]:
    """lifespan.startup.failed: the server must exit non-zero without ever serving."""
    server = make_server(ctx.target, "tests.compat.apps:startup_fails", bind_fd=False)
    server.start(wait=False)
    served = False
    try:
        assert server.proc is not None
        deadline = time.monotonic() + 30
        while server.proc.poll() is None and time.monotonic() < deadline:
            if not served and _connectable(server.port):
                try:
                    with Conn(server.port, timeout=1.0) as c:
                        c.send(req("GET", "/plain"))
                        resp = c.try_response(timeout=1.0)
                        served = served or (resp is not None and resp.status == 200)
                except (OSError, TimeoutError):
                    pass
            time.sleep(0.05)
        code: int | str | None = server.proc.poll()
        if code is None:
            code = "still running after 30s"
        elif not served and _connectable(server.port):
            served = True
    finally:
        server.stop()
    output = server.output()
    shutil.rmtree(server.tmp, ignore_errors=True)
    return {"exit_code": code, "served": served, "said_why": "database unreachable" in output}


# -- Starlette -------------------------------------------------------------------------------------


@case("starlette_routing")
def _st_routing(ctx: Ctx) -> dict[str, Any]:
    """Path params with a convertor, a 404, a 405."""
    with ctx.conn() as c:
        responses = []
        for method, target in [("GET", "/starlette/items/42?q=x"), ("GET", "/starlette/items/nope"),
                               ("POST", "/starlette/hello"), ("GET", "/starlette/hello")]:
            c.send(req(method, target, length=method == "POST"))
            responses.append(norm(c.try_response(method)))
        return {"responses": responses, "open_after": c.still_open()}


@case("starlette_json_body")
def _st_json(ctx: Ctx) -> dict[str, Any]:
    body = json.dumps({"name": "caf\u00e9", "n": [1, 2, 3]}).encode()
    return simple(ctx, "POST", "/starlette/json", [("Content-Type", "application/json")], body)


@case("starlette_form_urlencoded")
def _st_form(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/starlette/form", [("Content-Type", "application/x-www-form-urlencoded")],
                  b"a=1&b=two+words&c=%E2%9C%93&a=3")


@case("starlette_form_multipart")
def _st_multipart(ctx: Ctx) -> dict[str, Any]:
    ctype, body = multipart({"title": "report"}, {"upload": ("data.bin", bytes(range(256)) * 400,
                                                             "application/octet-stream")})
    return simple(ctx, "POST", "/starlette/form", [("Content-Type", ctype)], body)


@case("starlette_file")
def _st_file(ctx: Ctx) -> dict[str, Any]:
    """FileResponse: GET, HEAD and a Range request on one connection."""
    with ctx.conn() as c:
        responses = []
        for method, headers in [("GET", []), ("HEAD", []), ("GET", [("Range", "bytes=0-99")])]:
            c.send(req(method, "/starlette/file", headers))
            responses.append(norm(c.try_response(method)))
        return {"responses": responses, "open_after": c.still_open()}


@case("starlette_streaming_response")
def _st_stream(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/starlette/stream")


@case("starlette_background_task")
def _st_background(ctx: Ctx) -> dict[str, Any]:
    """A 1.5 s background task: the response comes first, and the next request on the
    connection is served without waiting for the task (uvicorn frees the connection
    as soon as the response is complete)."""
    token = ctx.token()
    with ctx.conn() as c:
        start = time.monotonic()
        c.send(req("GET", "/starlette/background?sleep=1.5", token=token))
        first = c.try_response()
        first_fast = time.monotonic() - start < 0.75
        start = time.monotonic()
        c.send(req("GET", "/plain"))
        second = c.try_response()
        second_fast = time.monotonic() - start < 0.75
    record = ctx.record(token, timeout=RECORD_TIMEOUT + 1.0)
    return {
        "responses": [norm(first), norm(second)],
        "response_before_task_done": first_fast,
        "next_request_not_blocked_by_task": second_fast,
        "records": [record],
    }


@case("starlette_lifespan_state")
def _st_state(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/starlette/state")


# -- FastAPI ----------------------------------------------------------------------------------------


@case("fastapi_routing_and_validation")
def _fa_routing(ctx: Ctx) -> dict[str, Any]:
    """Typed path and query params, and a 422 for a bad path param."""
    with ctx.conn() as c:
        responses = []
        for target in ("/fastapi/items/5?q=hi", "/fastapi/items/five", "/fastapi/missing"):
            c.send(req("GET", target))
            responses.append(norm(c.try_response()))
        return {"responses": responses, "open_after": c.still_open()}


@case("fastapi_json_model")
def _fa_model(ctx: Ctx) -> dict[str, Any]:
    body = json.dumps({"name": "widget", "price": 2.5, "tags": ["a", "b"]}).encode()
    return simple(ctx, "POST", "/fastapi/items", [("Content-Type", "application/json")], body)


@case("fastapi_json_model_invalid")
def _fa_model_bad(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/fastapi/items", [("Content-Type", "application/json")], b'{"name": 1}')


@case("fastapi_upload")
def _fa_upload(ctx: Ctx) -> dict[str, Any]:
    ctype, body = multipart({"title": "t"}, {"file": ("blob.bin", b"\x00\xff" * 50000, "application/octet-stream")})
    return simple(ctx, "POST", "/fastapi/upload", [("Content-Type", ctype)], body)


@case("fastapi_background_task")
def _fa_background(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/fastapi/background", length=True)


@case("fastapi_lifespan_state")
def _fa_state(ctx: Ctx) -> dict[str, Any]:
    """State yielded by FastAPI's lifespan reaches request.state."""
    return simple(ctx, "GET", "/fastapi/state")


# -- Django -------------------------------------------------------------------------------------------


@case("django_routing")
def _dj_routing(ctx: Ctx) -> dict[str, Any]:
    with ctx.conn() as c:
        responses = []
        for target in ("/django/hello/", "/django/articles/2024/slug-here/?q=a&q=b", "/django/nope/"):
            c.send(req("GET", target))
            responses.append(norm(c.try_response()))
        return {"responses": responses, "open_after": c.still_open()}


@case("django_json_body")
def _dj_json(ctx: Ctx) -> dict[str, Any]:
    body = json.dumps({"k": "v", "n": 3}).encode()
    return simple(ctx, "POST", "/django/json/", [("Content-Type", "application/json")], body)


@case("django_form_urlencoded")
def _dj_form(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "POST", "/django/form/", [("Content-Type", "application/x-www-form-urlencoded")],
                  b"a=1&a=2&b=caf%C3%A9")


@case("django_form_multipart")
def _dj_multipart(ctx: Ctx) -> dict[str, Any]:
    ctype, body = multipart({"x": "1"}, {"doc": ("doc.txt", b"hello django\n" * 1000, "text/plain")})
    return simple(ctx, "POST", "/django/form/", [("Content-Type", ctype)], body)


@case("django_file_response")
def _dj_file(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/django/file/")


@case("django_streaming_response")
def _dj_stream(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/django/stream/")


@case("django_lifespan_state")
def _dj_state(ctx: Ctx) -> dict[str, Any]:
    return simple(ctx, "GET", "/django/state/")


# -- helpers for the tests -------------------------------------------------------------------------------


def run_case(c: Case, target: str, served: Served | None) -> dict[str, Any]:
    """Run ``c`` against ``target``; the observation is JSON-normalized (tuples become lists)."""
    try:
        obs = c.run(Ctx(target, served, c.name))
    except TimeoutError as exc:
        obs = {"error": f"timeout: {exc}"}
    except OSError as exc:
        obs = {"error": f"{type(exc).__name__}: {exc}"}
    return dict(json.loads(json.dumps(obs)))


class Compat:
    """The running servers and every observation made so far, shared by all compat tests."""

    def __init__(self, pool: ServerPool) -> None:
        self.pool = pool
        self.observations: dict[tuple[str, str], dict[str, Any]] = {}

    def observe(self, target: str, c: Case) -> dict[str, Any]:
        key = (target, c.name)
        if key not in self.observations:
            served = None if c.flavor == "own" else self.pool.get(target, c.flavor)
            self.observations[key] = run_case(c, target, served)
        return self.observations[key]

    def server_output(self, target: str, flavor: str) -> str:
        served = self.pool.servers.get((target, flavor))
        return served.output()[-4000:] if served is not None else ""


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except Exception:
        return False
    return True


#: Frameworks whose cases cannot run on this interpreter (the free-threaded leg may lack
#: wheels for their C extensions, e.g. pydantic-core): case-name prefix -> reason.
UNAVAILABLE: dict[str, str] = {
    prefix: f"{prefix} cannot be imported on this interpreter"
    for prefix, module in (("starlette", "starlette"), ("fastapi", "fastapi"), ("django", "django"))
    if not _importable(module)
}


def unavailable(name: str) -> str | None:
    """Why the case ``name`` cannot run here, or None."""
    return UNAVAILABLE.get(name.split("_", 1)[0])


# WebSocket cases live in their own module; importing it registers them in CASES.
from . import ws_cases  # noqa: E402,F401
