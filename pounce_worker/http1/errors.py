"""The server's own HTTP/1.1 error responses: a refusal, or a 500 in place of the app's.

One shape for all of them: a plain-text body that says what happened, its
length, and ``Connection: close`` (the connection ends after any of them).
Reason phrases are RFC 9110's, whatever this Python's ``http.HTTPStatus`` says
(3.11 has "Request-URI Too Long"; Gunicorn and 3.13 say "URI Too Long").
"""

from __future__ import annotations

from ..asgi import STATUS_PHRASES

REJECT_PHRASES = {413: b"Content Too Large", 414: b"URI Too Long"}
#: Header lines some refusals must carry. 405 (CONNECT, see asgi/scope.py) needs Allow (RFC 9110
#: §15.5.6): the methods an origin server serving a generic ASGI app takes. The server hands every
#: method but CONNECT to the app, which alone knows its routes; these are the ones web apps and
#: their frameworks serve. TRACE is left out: frameworks do not implement it, and a server that
#: advertises it is reported by security scanners (cross-site tracing).
REJECT_FIELDS = {405: b"allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n"}


def error_page(status: int, body: bytes, lines: bytes = b"") -> bytes:
    """A complete ``status`` response carrying ``body``; ``lines`` are extra header lines."""
    reason = REJECT_PHRASES.get(status) or (STATUS_PHRASES[status] if 0 <= status < 600 else b"")
    head = b"HTTP/1.1 %d %s\r\n%scontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n" % (
        status, reason, lines
    )
    return head + b"%scontent-length: %d\r\n\r\n%s" % (REJECT_FIELDS.get(status, b""), len(body), body)


#: The 500 that replaces a response none of which left yet (pathsend's file failed to open).
ERROR_PAGE = error_page(500, b"Internal Server Error")
