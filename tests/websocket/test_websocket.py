"""WebSockets end to end: a real gunicorn master serving tests/ws_apps.py, real clients.

Most tests use the ``websockets`` client library (it validates the handshake,
masks, fragments, answers pings, negotiates permessage-deflate). Where a test
needs a client that misbehaves on purpose (never answers pings, vanishes
without a close frame, sends a bad handshake), it speaks over a raw socket,
with wsproto as the client-side framer. What the app saw (the disconnect code,
the scope) comes back through ``$WS_REPORT_DIR``, written by the app itself.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as _connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from tests.conftest import MODES
from tests.harness import HOST, Gunicorn, parse_response, read_until_close, wait_until
from tests.test_settings_tls import _client_context, _tls_args, certs  # noqa: F401 - certs is a fixture

APP = "tests.ws_apps:app"
#: Gunicorn's websocket_max_message_size for the shared servers: small, so 1009 is cheap to reach.
MAX_SIZE = 1024 * 1024


def _report_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pounce-ws-report-"))


def _start(mode: str, *args: str, env: dict[str, str] | None = None) -> Gunicorn:
    report = _report_dir()
    server = Gunicorn(APP, *args, mode=mode, env={"WS_REPORT_DIR": str(report), **(env or {})})
    server.report_dir = report  # type: ignore[attr-defined]
    return server.start()


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """One master per mode shared by the tests that do not stop or restart it."""
    access = Path(tempfile.mkdtemp(prefix="pounce-ws-access-")) / "access.log"
    gunicorn = _start(str(request.param), "--websocket-max-message-size", str(MAX_SIZE),
                      "--access-logfile", str(access))
    gunicorn.access_log = access  # type: ignore[attr-defined]
    try:
        yield gunicorn
    finally:
        gunicorn.stop()


def report(server: Gunicorn, name: str, timeout: float = 10.0) -> dict[str, Any]:
    path: Path = server.report_dir / f"{name}.json"  # type: ignore[attr-defined]
    assert wait_until(path.exists, timeout), f"the app wrote no report {name!r}:\n{server.output()}"
    return dict(json.loads(path.read_text()))


def url(server: Gunicorn, path: str) -> str:
    return f"ws://{HOST}:{server.port}{path}"


def connect(uri: str, **kwargs: Any) -> Any:
    """The websockets client, never through a proxy from the environment: loopback only."""
    return _connect(uri, proxy=None, **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- settings and the upgrade rule (no server needed) --------------------------------------------


def _config(env: dict[str, str], **settings: object) -> Any:
    from gunicorn.config import Config

    from pounce_worker.config import ServerConfig

    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    return ServerConfig.from_gunicorn(cfg, env={"POUNCE_WORKER_MODE": "threads", **env})


def test_ws_settings_defaults_and_values() -> None:
    default = _config({})
    assert (default.ws_ping_interval, default.ws_ping_timeout, default.ws_per_message_deflate,
            default.ws_max_size) == (20.0, 20.0, True, 16 * 1024 * 1024)
    chosen = _config({"POUNCE_WS_PING_INTERVAL": "2.5", "POUNCE_WS_PING_TIMEOUT": "0",
                      "POUNCE_WS_PER_MESSAGE_DEFLATE": "0"}, websocket_max_message_size=0)
    assert (chosen.ws_ping_interval, chosen.ws_ping_timeout, chosen.ws_per_message_deflate,
            chosen.ws_max_size) == (2.5, 0.0, False, 0)


@pytest.mark.parametrize("name", ["POUNCE_WS_PING_INTERVAL", "POUNCE_WS_PING_TIMEOUT",
                                  "POUNCE_WS_PER_MESSAGE_DEFLATE"])
def test_bad_ws_settings_name_the_variable(name: str) -> None:
    from pounce_worker.config import ConfigError

    with pytest.raises(ConfigError, match=rf"{name}='soon' is not a number"):
        _config({name: "soon"})
    with pytest.raises(ConfigError, match=rf"{name}='-1' must not be negative"):
        _config({name: "-1"})


@pytest.mark.parametrize(("headers", "wanted"), [
    ([(b"upgrade", b"websocket"), (b"connection", b"Upgrade")], True),
    ([(b"upgrade", b"WebSocket"), (b"connection", b"keep-alive, upgrade")], True),
    ([(b"connection", b"keep-alive"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")], True),
    ([(b"upgrade", b"websocket")], False),  # no Connection: upgrade
    ([(b"upgrade", b"h2c"), (b"connection", b"Upgrade")], False),
    ([(b"upgrade", b"websocket, h2c"), (b"connection", b"Upgrade")], False),
    ([(b"connection", b"upgradeable"), (b"upgrade", b"websocket")], False),
])
def test_wants_upgrade(headers: list[tuple[bytes, bytes]], wanted: bool) -> None:
    from pounce_worker.websocket.upgrade import wants_upgrade

    assert wants_upgrade(headers) is wanted


# -- a raw client: wsproto over a blocking socket ------------------------------------------------


class RawClient:
    """A WebSocket client that does only what the test says (no automatic pongs or close replies)."""

    def __init__(self, port: int, path: str = "/echo", extensions: list[Any] | None = None) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="localhost", target=path, extensions=extensions or [])))
        self.events: list[Any] = []
        accepted = self.next_event(10)
        assert isinstance(accepted, AcceptConnection), accepted

    def next_event(self, timeout: float) -> Any:
        """The next event from the server; None on EOF, TimeoutError when nothing came."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.ws.events():
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event from the server")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.ws.receive_data(data)

    def send(self, event: Any) -> None:
        self.sock.sendall(self.ws.send(event))

    def close(self) -> None:
        self.sock.close()


def raw_handshake(port: int, headers: list[str], method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    lines = [f"{method} /echo HTTP/1.1", "Host: localhost", *headers]
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data, _how = read_until_close(sock, 10)
    return parse_response(data)


UPGRADE = ["Upgrade: websocket", "Connection: Upgrade"]
KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="


# -- messages ------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_echo_text_and_binary(server: Gunicorn) -> None:
    async def go() -> list[Any]:
        async with connect(url(server, "/echo?report=echo")) as ws:
            out = []
            for message in ("hello", b"\x00\x01\xff", "é ünïcode ☃", b"", "x" * 70000):
                await ws.send(message)
                out.append(await ws.recv())
            return out

    assert run(go()) == ["hello", b"\x00\x01\xff", "é ünïcode ☃", b"", "x" * 70000]
    seen = report(server, "echo")
    assert seen["messages"] == 5
    assert seen["code"] == 1000  # the client's close frame, passed on
    assert (seen["spec_version"], seen["scheme"], seen["path"]) == ("2.4", "ws", "/echo")
    assert seen["extensions"] == ["websocket.http.response"]


def test_fragmented_messages_are_joined(server: Gunicorn) -> None:
    async def go() -> tuple[Any, Any]:
        async with connect(url(server, "/echo"), compression=None) as ws:
            await ws.send(["frag", "men", "ted ☃"])
            text = await ws.recv()
            await ws.send([b"\x01" * 1000, b"\x02" * 3000])
            data = await ws.recv()
            return text, data

    assert run(go()) == ("fragmented ☃", b"\x01" * 1000 + b"\x02" * 3000)


def test_server_push_without_reading(server: Gunicorn) -> None:
    async def go() -> list[Any]:
        async with connect(url(server, "/push?n=50&report=push")) as ws:
            return [await ws.recv() for _ in range(50)]

    assert run(go()) == [f"push {i}" for i in range(50)]
    assert report(server, "push")["code"] == 1000


def test_client_ping_is_answered(server: Gunicorn) -> None:
    async def go() -> float:
        async with connect(url(server, "/echo")) as ws:
            pong = await ws.ping(b"are you there")
            return float(await asyncio.wait_for(pong, 10))

    assert run(go()) >= 0  # the latency; awaiting it means the pong with our payload came back


def _raw_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """A client frame built by hand, to send what wsproto (rightly) would not."""
    head = bytes([(0x80 if fin else 0) | opcode, (0x80 if masked else 0) | len(payload)])
    if not masked:
        return head + payload
    mask = b"\x01\x02\x03\x04"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(("frame", "code"), [
    (_raw_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
    (_raw_frame(0x1, b"unmasked", masked=False), 1002),  # a client frame must be masked
    (_raw_frame(0x9, b"x", fin=False), 1002),  # a fragmented control frame
], ids=["invalid-utf8", "unmasked", "fragmented-ping"])
def test_protocol_errors_close_with_their_code(server: Gunicorn, frame: bytes, code: int) -> None:
    name = f"proto-{code}-{frame[0]}-{frame[1]}"
    client = RawClient(server.port, f"/echo?report={name}")
    client.sock.sendall(frame)
    event = client.next_event(10)
    assert isinstance(event, CloseConnection) and event.code == code, event
    assert client.next_event(10) is None  # then the server closes the connection
    client.close()
    assert report(server, name)["code"] == code


def test_frames_sent_before_the_101_are_kept(server: Gunicorn) -> None:
    """A client that does not wait for the 101: its first frame reaches the app once it accepts."""
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(ws.send(Request(host="localhost", target="/echo")) + _raw_frame(0x1, b"early bird"))
        events: list[Any] = []
        deadline = time.monotonic() + 10
        while len(events) < 2 and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            ws.receive_data(data)
            events += list(ws.events())
    assert isinstance(events[0], AcceptConnection), events
    assert isinstance(events[1], TextMessage) and events[1].data == "early bird", events


def test_starlette_websocket_endpoint(server: Gunicorn) -> None:
    """A framework on top: Starlette's WebSocket (accept, JSON, denial response, WebSocketDisconnect)."""
    pytest.importorskip("starlette")  # the free-threaded leg may lack it
    async def go() -> tuple[Any, Any]:
        async with connect(url(server, "/starlette/chat?token=secret&report=star"), subprotocols=["chat"],
                           additional_headers={"X-Client": "test"}) as ws:
            await ws.send(json.dumps({"n": 1}))
            answer = json.loads(await ws.recv())
            await ws.close(4100, "done")
            return ws.subprotocol, answer

    assert run(go()) == ("chat", {"echo": {"n": 1}, "client": "test"})
    assert report(server, "star") == {"code": 4100, "reason": "done"}
    with pytest.raises(InvalidStatus) as caught:
        run(connect(url(server, "/starlette/chat")).__aenter__())
    assert (caught.value.response.status_code, caught.value.response.body) == (401, b"who are you?")


# -- handshake -----------------------------------------------------------------------------------


def test_subprotocol_negotiation(server: Gunicorn) -> None:
    async def go() -> tuple[Any, Any, Any]:
        async with connect(url(server, "/echo?subprotocol=first&report=sub"), subprotocols=["chat", "superchat"]) as ws:
            chosen = ws.subprotocol
        async with connect(url(server, "/echo?subprotocol=superchat"), subprotocols=["chat", "superchat"]) as ws:
            second = ws.subprotocol
        async with connect(url(server, "/echo?subprotocol=first")) as ws:
            none = ws.subprotocol
        return chosen, second, none

    assert run(go()) == ("chat", "superchat", None)
    assert report(server, "sub")["subprotocols"] == ["chat", "superchat"]


def test_unoffered_subprotocol_is_an_app_error(server: Gunicorn) -> None:
    with pytest.raises(InvalidStatus) as caught:
        run(connect(url(server, "/echo?subprotocol=other"), subprotocols=["chat"]).__aenter__())
    assert caught.value.response.status_code == 500
    assert "was not offered by the client" in server.log()


def test_accept_headers(server: Gunicorn) -> None:
    async def go() -> tuple[Any, Any]:
        async with connect(url(server, "/headers")) as ws:
            headers = ws.response.headers
            return headers, await ws.recv()

    headers, message = run(go())
    assert headers["x-accepted-by"] == "ws_apps"
    assert headers["set-cookie"] == "session=abc"
    assert headers["server"] == "pounce"
    assert "date" in headers
    assert message == "hello"


def test_invalid_handshakes_are_refused_like_uvicorn(server: Gunicorn) -> None:
    status, headers, _ = raw_handshake(server.port, [*UPGRADE, "Sec-WebSocket-Version: 13"])
    assert status == 400  # no Sec-WebSocket-Key
    status, headers, _ = raw_handshake(server.port, [*UPGRADE, KEY, "Sec-WebSocket-Version: 8"])
    assert (status, headers.get("sec-websocket-version")) == (426, "13")
    status, _, _ = raw_handshake(server.port, [*UPGRADE, KEY, "Sec-WebSocket-Version: 13"], method="POST")
    assert status == 400
    assert "Invalid WebSocket handshake" in server.log()


def test_other_upgrades_stay_http(server: Gunicorn) -> None:
    status, _headers, body = raw_handshake(server.port, ["Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings",
                                                         "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
                                                         "Connection: close"])
    assert status == 200
    assert json.loads(body) == {"type": "http", "path": "/echo"}


def test_denial_response(server: Gunicorn) -> None:
    with pytest.raises(InvalidStatus) as caught:
        run(connect(url(server, "/deny")).__aenter__())
    response = caught.value.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "text/plain"
    assert response.body == b"not authorized\n"


def test_denial_response_without_length_is_chunked(server: Gunicorn) -> None:
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(b"GET /deny-chunked HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data, how = read_until_close(sock, 10)
    status, headers, body = parse_response(data)
    assert (status, headers.get("transfer-encoding"), headers.get("x-why"), body) == (
        404, "chunked", "nothing here", b"no such socket")
    assert how == "eof"


def test_a_response_held_before_a_pipelined_handshake_goes_first(server: Gunicorn) -> None:
    """A plain request and a handshake in one packet: the plain response (held until the loop
    iteration ends, see HTTPConnection.hold) leaves before the 101, never after it."""
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data.partition(b"HTTP/1.1 101")[2] and len(data) < 65536:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    first, _, rest = data.partition(b"HTTP/1.1 101")
    assert first.startswith(b"HTTP/1.1 200 ") and b'"path": "/plain"' in first, data
    assert rest, data


def test_close_before_accept_is_403(server: Gunicorn) -> None:
    with pytest.raises(InvalidStatus) as caught:
        run(connect(url(server, "/refuse")).__aenter__())
    assert caught.value.response.status_code == 403


def test_app_error_before_accept_is_500(server: Gunicorn) -> None:
    with pytest.raises(InvalidStatus) as caught:
        run(connect(url(server, "/fail-before-accept")).__aenter__())
    assert caught.value.response.status_code == 500
    assert caught.value.response.body == b"Internal Server Error"
    assert "boom before accept" in server.log()


def test_access_log_has_a_line_per_session(server: Gunicorn) -> None:
    """One line when the session ends: 101 for an accepted socket, the status of a refusal."""
    async def go() -> None:
        async with connect(url(server, "/echo?log=accepted")) as ws:
            await ws.send("x")
            await ws.recv()
        with pytest.raises(InvalidStatus):
            await connect(url(server, "/refuse?log=refused")).__aenter__()

    run(go())
    path: Path = server.access_log  # type: ignore[attr-defined]

    def lines() -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    assert wait_until(lambda: sum("log=" in line for line in lines()) == 2, 10), lines()
    # Gunicorn's default format: status, then the bytes sent (the 1-byte echo).
    assert any('"GET /echo?log=accepted HTTP/1.1" 101 1 ' in line for line in lines()), lines()
    assert any('"GET /refuse?log=refused HTTP/1.1" 403' in line for line in lines()), lines()


# -- closing -------------------------------------------------------------------------------------


def test_server_close_code_and_reason(server: Gunicorn) -> None:
    async def go() -> tuple[Any, Any]:
        async with connect(url(server, "/close?code=4001&reason=bye+now&report=sclose")) as ws:
            first = await ws.recv()
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
            return first, caught.value.rcvd

    first, rcvd = run(go())
    assert first == "bye soon"
    assert (rcvd.code, rcvd.reason) == (4001, "bye now")
    # After its own close, the app's receive() gives the disconnect with the code it sent.
    after = report(server, "sclose")["after_close"]
    assert after == {"type": "websocket.disconnect", "code": 4001, "reason": "bye now"}


def test_client_close_code_reaches_app(server: Gunicorn) -> None:
    async def go() -> None:
        async with connect(url(server, "/echo?report=cclose")) as ws:
            await ws.send("one")
            await ws.recv()
            await ws.close(code=4002, reason="client says bye")

    run(go())
    seen = report(server, "cclose")
    assert (seen["code"], seen["reason"], seen["messages"]) == (4002, "client says bye", 1)


def test_abrupt_close_is_1006_for_the_app(server: Gunicorn) -> None:
    client = RawClient(server.port, "/echo?report=abrupt")
    client.send(TextMessage(data="ping?"))
    assert isinstance(client.next_event(10), TextMessage)
    client.close()  # no close frame: the TCP connection just ends
    assert report(server, "abrupt")["code"] == 1006


def test_app_return_closes_with_1000(server: Gunicorn) -> None:
    async def go() -> tuple[Any, Any]:
        async with connect(url(server, "/return")) as ws:
            first = await ws.recv()
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
            return first, caught.value.rcvd

    first, rcvd = run(go())
    assert first == "done"
    assert rcvd is not None and rcvd.code == 1000


def test_app_error_after_accept_closes_with_1011(server: Gunicorn) -> None:
    async def go() -> Any:
        async with connect(url(server, "/fail-after-accept")) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
            return caught.value.rcvd

    rcvd = run(go())
    assert rcvd is not None and rcvd.code == 1011
    assert "boom after accept" in server.log()


# -- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragments"])
def test_message_over_max_size_closes_with_1009(server: Gunicorn, fragmented: bool) -> None:
    name = f"big-{fragmented}"

    async def go() -> Any:
        async with connect(url(server, f"/echo?report={name}"), max_size=None, compression=None) as ws:
            await ws.send(b"x" * MAX_SIZE)  # exactly the limit: allowed
            assert len(await ws.recv()) == MAX_SIZE
            big = [b"y" * 65536] * (MAX_SIZE // 65536 + 1) if fragmented else b"y" * (MAX_SIZE + 1)
            with pytest.raises(ConnectionClosed) as caught:
                await ws.send(big)
                await ws.recv()
            return caught.value.rcvd

    rcvd = run(go())
    assert rcvd is not None and rcvd.code == 1009
    assert str(MAX_SIZE) in rcvd.reason
    seen = report(server, name)
    assert (seen["code"], seen["messages"]) == (1009, 1)


def test_permessage_deflate_is_negotiated(server: Gunicorn) -> None:
    text = "compressible " * 20000  # 260 kB that deflate squeezes far below MAX_SIZE on the wire

    async def go() -> tuple[Any, Any]:
        async with connect(url(server, "/echo")) as ws:
            await ws.send(text)
            return ws.response.headers.get("sec-websocket-extensions"), await ws.recv()

    extensions, echoed = run(go())
    assert extensions is not None and extensions.startswith("permessage-deflate")
    assert echoed == text


def test_deflate_bomb_is_cut_at_max_size(server: Gunicorn) -> None:
    """A compressed message that inflates beyond the limit is refused while it inflates."""
    async def go() -> Any:
        async with connect(url(server, "/echo"), max_size=None) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.send(b"\x00" * (MAX_SIZE * 8))  # ~8 kB on the wire
                await ws.recv()
            return caught.value.rcvd

    rcvd = run(go())
    assert rcvd is not None and rcvd.code == 1009


def test_deflate_with_context_takeover_keeps_one_history(server: Gunicorn) -> None:
    """Compressed messages both ways with context takeover (websockets' default offer, as a browser):
    each echo inflates on the client's side of one continuing history, repeats included."""
    messages: list[Any] = ["hello " * 200, bytes(range(256)) * 64, "hello " * 200, "é" * 5000, b"", ""]

    async def go() -> list[Any]:
        async with connect(url(server, "/echo"), max_size=None) as ws:
            extensions = ws.response.headers.get("sec-websocket-extensions") or ""
            assert "permessage-deflate" in extensions and "no_context_takeover" not in extensions
            echoed = []
            for message in messages:
                await ws.send(message)
                echoed.append(await ws.recv())
            return echoed

    assert run(go()) == messages


def test_deflate_limit_is_exact(server: Gunicorn) -> None:
    """A compressed message of exactly the limit once inflated is delivered; one byte more is 1009."""
    async def go() -> Any:
        async with connect(url(server, "/echo"), max_size=None) as ws:
            await ws.send(b"\x00" * MAX_SIZE)
            assert len(await ws.recv()) == MAX_SIZE
            with pytest.raises(ConnectionClosed) as caught:
                await ws.send(b"\x00" * (MAX_SIZE + 1))
                await ws.recv()
            return caught.value.rcvd

    rcvd = run(go())
    assert rcvd is not None and rcvd.code == 1009 and str(MAX_SIZE) in rcvd.reason


def test_backpressure_stops_reading_until_the_app_consumes(server: Gunicorn) -> None:
    """The app reads nothing: the client's sends block (kernel buffers fill), then all arrive once it reads."""
    total = 40
    chunk = 256 * 1024
    go_file = server.report_dir / f"go-{time.monotonic_ns()}"  # type: ignore[attr-defined]

    async def go() -> tuple[int, Any]:
        async with connect(url(server, f"/stall?n={total}&go={go_file}"), compression=None,
                           max_size=None, write_limit=chunk) as ws:
            sent = 0

            async def sender() -> None:
                nonlocal sent
                for _ in range(total):
                    await ws.send(b"z" * chunk)
                    sent += 1

            task = asyncio.create_task(sender())
            # Until the client cannot send more: progress stopped for a second and a half.
            last, since = -1, time.monotonic()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.1)
                if sent != last:
                    last, since = sent, time.monotonic()
                elif time.monotonic() - since > 1.5:
                    break
            blocked_at = sent
            go_file.touch()
            await asyncio.wait_for(task, 20)
            return blocked_at, json.loads(await ws.recv())

    blocked_at, result = run(go())
    # Without backpressure the server would queue all 10 MiB; with it, what got through is
    # what the kernel buffers and one queued message hold.
    assert blocked_at < total, "the server kept reading while the app consumed nothing"
    assert result == {"count": total, "bytes": total * chunk}


@pytest.mark.parametrize("mode", MODES)
def test_wss_over_tls(mode: str, certs: dict[str, Path]) -> None:  # noqa: F811 - the imported fixture
    """The session takes over a TLS transport as it does a plain one; the scope says wss."""
    server = _start(mode, *_tls_args(certs))
    try:
        async def go() -> Any:
            uri = f"wss://127.0.0.1:{server.port}/echo?report=tls"
            async with connect(uri, ssl=_client_context(certs)) as ws:
                await ws.send("over tls")
                first = await ws.recv()
                await ws.send(b"\x00" * 100000)
                return first, len(await ws.recv())

        assert run(go()) == ("over tls", 100000)
        assert report(server, "tls")["scheme"] == "wss"
    finally:
        server.stop()


def test_ping_flood_from_a_client_that_never_reads_is_bounded(server: Gunicorn) -> None:
    """Pings ask for pongs: a client sending pings without reading must not grow the server's memory.

    The session stops reading while its write buffer is full, so the client's own
    sends stall; without that, every ping read would leave a pong in memory.
    """
    from tests.harness import proc_status_kb

    frame = _raw_frame(0x9, b"p" * 125)
    batch = frame * 8000  # ~1 MiB of pings per sendall
    total = 60
    client = RawClient(server.port, "/push?n=0")
    pids = server.worker_pids()
    before = sum(proc_status_kb(pid, "VmRSS") for pid in pids)
    client.sock.settimeout(3)
    sent = 0
    try:
        for _ in range(total):
            client.sock.sendall(batch)
            sent += 1
    except TimeoutError:
        pass
    grown_mb = (sum(proc_status_kb(pid, "VmRSS") for pid in pids) - before) / 1024
    client.close()
    assert sent < total, "the server kept reading pings it could not answer"
    # The kernel buffers and one write buffer's worth of pongs, not 60 MiB of them.
    assert grown_mb < 24, grown_mb


# -- keep-alive ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
def test_ping_timeout_closes_a_dead_peer_and_live_peers_stay(mode: str) -> None:
    server = _start(mode, env={"POUNCE_WS_PING_INTERVAL": "0.3", "POUNCE_WS_PING_TIMEOUT": "0.6",
                               "POUNCE_WS_PER_MESSAGE_DEFLATE": "0"})
    try:
        dead = RawClient(server.port, "/echo?report=dead")
        started = time.monotonic()
        seen = []
        while True:
            event = dead.next_event(10)
            seen.append(event)
            if event is None or isinstance(event, CloseConnection):
                break
        assert isinstance(seen[0], Ping), seen
        assert isinstance(seen[-1], CloseConnection) and seen[-1].code == 1011, seen
        assert seen[-1].reason == "keepalive ping timeout"
        assert dead.next_event(5) is None  # then the server closes the TCP connection
        assert time.monotonic() - started < 8
        dead.close()
        assert report(server, "dead")["code"] == 1011

        async def live() -> tuple[Any, Any]:
            # The websockets client answers pings: it outlives many intervals and timeouts.
            async with connect(url(server, "/echo"), ping_interval=None) as ws:
                await asyncio.sleep(2.5)
                await ws.send("still here")
                return await ws.recv(), ws.response.headers.get("sec-websocket-extensions")

        echoed, extensions = run(live())
        assert echoed == "still here"
        assert extensions is None  # POUNCE_WS_PER_MESSAGE_DEFLATE=0
        assert "did not answer a ping" in server.log()
    finally:
        server.stop()


# -- worker lifecycle ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_closes_open_sockets_with_1012(mode: str) -> None:
    server = _start(mode)
    try:
        async def go() -> Any:
            async with connect(url(server, "/hold?report=term")) as ws:
                assert (await ws.recv()).startswith("pid ")
                server.signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.recv()
                return caught.value.rcvd

        rcvd = run(go())
        assert rcvd is not None and rcvd.code == 1012
        assert report(server, "term")["code"] == 1012
        assert server.wait(20) == 0  # the app returned: the worker drained well within graceful_timeout
        assert "did not stop in time" not in server.log()
    finally:
        server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
def test_handshake_pending_at_sigterm_is_accepted_then_closed_with_1012(mode: str) -> None:
    """A stop does not cut a handshake the app is still deciding: the socket opens, then gets 1012."""
    server = _start(mode)
    try:
        async def go() -> Any:
            connecting = asyncio.ensure_future(connect(url(server, "/hold?delay=1.5")).__aenter__())
            await asyncio.sleep(0.5)  # the request is in, the app sleeps before accepting
            server.signal(signal.SIGTERM)
            ws = await connecting
            try:
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.recv()  # nothing but the close: the app's send after accept finds it closing
                return caught.value.rcvd
            finally:
                await ws.close()

        rcvd = run(go())
        assert rcvd is not None and rcvd.code == 1012
        # The app's send after its accept raised ClientDisconnected (an OSError), which ended it.
        server.wait_for_log(r"WebSocket /hold ended by the socket closing \(ClientDisconnected\)")
        assert server.wait(20) == 0
    finally:
        server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
def test_hup_closes_open_sockets_with_1012_and_new_workers_serve(mode: str) -> None:
    server = _start(mode)
    try:
        async def hold_then_hup() -> tuple[str, Any]:
            async with connect(url(server, "/hold?report=hup")) as ws:
                pid = await ws.recv()
                server.signal(signal.SIGHUP)
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.recv()
                return pid, caught.value.rcvd

        old_pid, rcvd = run(hold_then_hup())
        assert rcvd is not None and rcvd.code == 1012
        assert report(server, "hup")["code"] == 1012

        async def fresh() -> str:
            async with connect(url(server, "/hold")) as ws:
                return str(await ws.recv())

        assert wait_until(lambda: _pid_differs(fresh, old_pid), 20)
        assert server.proc is not None and server.proc.poll() is None  # the master kept running
    finally:
        server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", MODES)
def test_messages_count_toward_max_requests(mode: str) -> None:
    server = _start(mode, "--max-requests", "8", "--max-requests-jitter", "0")
    try:
        async def go() -> tuple[int, Any, str]:
            async with connect(url(server, "/hold")) as ws:
                first_pid = await ws.recv()
            async with connect(url(server, "/echo")) as ws:
                rounds = 0
                with pytest.raises(ConnectionClosed) as caught:
                    # Uncounted, this socket would never see a stop: two handshakes spend 2 of 8.
                    for _ in range(200):
                        await ws.send("m")
                        await ws.recv()
                        rounds += 1
                        if rounds >= 3:
                            await asyncio.sleep(0.02)  # time for the worker to act on its spent budget
                return rounds, caught.value.rcvd, first_pid

        rounds, rcvd, first_pid = run(go())
        # hold: handshake + one sent (2); echo: handshake (3), then 2 per round: the 8th is the
        # third round's message. The stop then takes a moment to reach the loop (the main
        # thread acts on it), during which a few more rounds may be served.
        assert 2 <= rounds < 200, rounds
        assert rcvd is not None and rcvd.code == 1012
        server.wait_for_log(r"Autorestarting worker", timeout=20)

        async def after() -> str:
            async with connect(url(server, "/hold")) as ws:
                return str(await ws.recv())

        assert wait_until(lambda: _pid_differs(after, first_pid), 20)
    finally:
        server.stop()


def _pid_differs(coro_fn: Any, old: str) -> bool:
    try:
        return bool(run(coro_fn()) != old)
    except (OSError, ConnectionClosed, InvalidStatus):
        return False


# -- without wsproto -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_without_wsproto_upgrades_are_plain_http(mode: str, tmp_path: Path) -> None:
    fake = tmp_path / "wsproto"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('wsproto is hidden by the test')\n")
    from tests.harness import ROOT

    server = _start(mode, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    try:
        assert "wsproto is not installed" in server.log()
        status, _headers, body = raw_handshake(server.port, [*UPGRADE, KEY, "Sec-WebSocket-Version: 13",
                                                             "Connection: close"])
        assert status == 200
        assert json.loads(body) == {"type": "http", "path": "/echo"}
    finally:
        server.stop()

