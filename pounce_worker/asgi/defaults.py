"""What every response gets from the server, whatever wire carries it.

RFC 9110 semantics rather than any framing: the statuses that never carry
content (§15.2, §15.3.5, §15.4.5), and the ``Server`` and ``Date`` fields a
response gets unless the app set its own (§10.2.4, §6.6.1; ``Date`` is the
loop's, formatted once per second by ``LoopServer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..loop.server import LoopServer

#: Responses without content: every 1xx, 204 No Content, 304 Not Modified.
NO_BODY_STATUS = frozenset({204, 304}) | frozenset(range(100, 200))


def default_headers(server: LoopServer, headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Server and Date, minus those the app set itself (``headers`` have lower-case names)."""
    names = {name for name, _ in headers}
    defaults = []
    if b"server" not in names:
        defaults.append((b"server", server.config.server_header))
    if b"date" not in names:
        defaults.append((b"date", server.date_header))
    return defaults
