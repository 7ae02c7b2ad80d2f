"""The HTTP/2 fast path's caches: what h2 would send, and bounded memory (found in review, session 6)."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.settings
import hpack
from hpack import NeverIndexedHeaderTuple

from pounce_worker.http2.fastpath import FastMachine
from pounce_worker.http2.hpack_cache import MAX_CACHED_BYTES, held_size
from pounce_worker.http2.machine import ServerMachine


def client(streams: int, table_size: int | None = None) -> tuple[h2.connection.H2Connection, bytes]:
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    if table_size is not None:
        c.local_settings = h2.settings.Settings(client=True, initial_values={1: table_size})
    c.initiate_connection()
    for sid in range(1, 2 * streams, 2):
        c.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "x")],
                       end_stream=True)
    return c, c.data_to_send()


def sent_fields(out: bytes) -> list[list[tuple[str, bytes, bytes]]]:
    decoder, blocks, i = hpack.Decoder(), [], 0
    while i < len(out):
        size, kind = int.from_bytes(out[i:i + 3], "big"), out[i + 3]
        if kind == 1:
            blocks.append([(type(f).__name__, bytes(f[0]), bytes(f[1])) for f in decoder.decode(out[i + 9:i + 9 + size],
                                                                                              raw=True)])
        i += 9 + size
    return blocks


def test_a_never_indexed_field_stays_never_indexed_after_an_equal_list_was_cached():
    """hpack's NeverIndexedHeaderTuple equals the plain tuple: the cached block must not stand for it."""
    _, data = client(3, table_size=0)
    sent = {}
    for cls in (ServerMachine, FastMachine):
        machine = cls()
        machine.initiate_connection()
        machine.receive_data(data)
        machine.data_to_send()
        machine.send_headers(1, [(b":status", b"200"), (b"set-cookie", b"s=1")], end_stream=True)
        machine.send_headers(3, [(b":status", b"200"), (b"set-cookie", b"s=1")], end_stream=True)
        machine.send_headers(5, [(b":status", b"200"), NeverIndexedHeaderTuple(b"set-cookie", b"s=1")], end_stream=True)
        sent[cls] = sent_fields(machine.data_to_send())
    assert sent[FastMachine] == sent[ServerMachine]
    assert sent[FastMachine][2][1][0] == "NeverIndexedHeaderTuple"


def test_response_caches_hold_at_most_their_byte_budget():
    """An app echoing a client-chosen 16 KB value (a redirect's Location) in every response."""
    c, data = client(0)
    machine = FastMachine()
    machine.initiate_connection()
    machine.receive_data(data)
    machine.data_to_send()
    for i in range(64):
        sid = 2 * i + 1
        c.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":path", "/x"), (":authority", "a")],
                       end_stream=True)
        machine.receive_data(c.data_to_send())
        machine.send_headers(sid, [(b":status", b"301"), (b"location", b"/%d-" % i + b"a" * 16000)], end_stream=True)
        machine.data_to_send()
    for cache in (machine.sent_heads, machine.encoder.cache):  # type: ignore[attr-defined]
        held = sum(held_size(block if isinstance(block, bytes) else block[0], key) for key, block in cache.items())
        assert held <= MAX_CACHED_BYTES
