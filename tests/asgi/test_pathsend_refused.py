"""A pathsend refused before anything left (a missing file) makes the response a whole 500. An app
that catches the error and sends a fallback body, or another file, must not put its bytes after
that 500 on the wire (found in review, session 6): its send raises, and the 500 is what goes out."""
import pytest

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def app_factory(after):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        try:
            await send({"type": "http.response.pathsend", "path": "/nonexistent/file"})
        except OSError:
            await after(send)
    return app


async def body(send):
    await send({"type": "http.response.body", "body": b"fallback body"})


async def pathsend_again(send):
    await send({"type": "http.response.pathsend", "path": "/etc/hostname"})


@pytest.mark.parametrize("after", [body, pathsend_again])
def test_app_falls_back(make_rig, fast, after):
    rig = make_rig(app_factory(after), fast_path=fast)
    conn = rig.connect()
    conn.send(GET)
    out = conn.output()
    assert out.count(b"HTTP/1.1") == 1, out
    assert out.endswith(b"Internal Server Error"), out
