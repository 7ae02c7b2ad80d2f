"""The floor: about 50 lines of pure-Python asyncio HTTP/1.1 serving the same ASGI app.

Issue 7 measures the server's overhead against this: it parses only what the
benchmark sends (no validation, no limits, no timeouts, no flow control, no
logging), so it is not a server anyone should run; it shows how fast the
interpreter and the event loop alone can answer the same app.

    python bench/floor.py HOST PORT module:app [asyncio|uvloop]
"""

from __future__ import annotations

import asyncio
import importlib
import sys


class Floor(asyncio.Protocol):
    def __init__(self, app, loop):
        self.app, self.loop, self.buf = app, loop, b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            lines = self.buf[:end].split(b"\r\n")
            method, target, _ = lines[0].split(b" ")
            headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
            length = next((int(v) for n, v in headers if n.lower() == b"content-length"), 0)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            path, _, query = target.partition(b"?")
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": method.decode(), "scheme": "http", "path": path.decode(),
                     "raw_path": path, "query_string": query, "root_path": "",
                     "headers": [(n.lower(), v) for n, v in headers], "server": None, "client": None}
            self.loop.create_task(self.app(scope, self.receive(body), self.send))

    def receive(self, body):
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}
        return receive

    async def send(self, message):
        if message["type"] == "http.response.start":
            headers = message.get("headers", ())
            self.chunked = all(n.lower() != b"content-length" for n, _ in headers)
            head = [b"HTTP/1.1 %d OK\r\n" % message["status"]] + [b"%s: %s\r\n" % h for h in headers]
            self.head = b"".join(head) + (b"transfer-encoding: chunked\r\n\r\n" if self.chunked else b"\r\n")
        else:
            body, more = message.get("body", b""), message.get("more_body", False)
            if self.chunked:
                body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (b"" if more else b"0\r\n\r\n")
            self.transport.write(self.head + body)
            self.head = b""


def main() -> None:
    host, port, target = sys.argv[1:4]
    if len(sys.argv) > 4 and sys.argv[4] == "uvloop":
        import uvloop
        uvloop.install()
    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: Floor(app, loop), host, int(port)))
    print(f"floor serving on {host}:{port}", flush=True)
    loop.run_until_complete(server.serve_forever())


if __name__ == "__main__":
    main()
