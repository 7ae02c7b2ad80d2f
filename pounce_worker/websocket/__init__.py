"""WebSocket sessions (the ASGI ``websocket`` scope, spec 2.4), spoken with wsproto.

wsproto is to WebSockets what h11 is to HTTP/1.1: a sans-I/O state machine
that parses frames and builds them, and nothing else. This module wires it to
the asyncio transport an ``HTTPConnection`` already owns. The HTTP side only
recognises the handshake request (``wants_upgrade``) and calls ``upgrade``,
which swaps the transport's protocol for a ``WebSocketSession``: from then on
the bytes go to wsproto and never back to h11.

What a session adds around wsproto, and why:

* the ASGI ``receive``/``send`` pair, with the handshake decided by the app
  (``websocket.accept`` with a subprotocol and headers, ``websocket.close``
  before accepting: 403, or a full HTTP denial response through the
  ``websocket.http.response`` extension), as uvicorn's wsproto implementation
  does;
* whole messages: fragments are joined here, and a message larger than
  Gunicorn's ``websocket_max_message_size`` closes the socket with 1009 while
  it is still arriving, so memory stays bounded;
* backpressure both ways: reading stops while the app has not consumed
  ``MAX_QUEUE`` messages (or ``QUEUE_HIGH_WATER`` bytes) and while the peer
  does not read what we write (a ping flood from a client that never reads
  its pongs would otherwise grow our write buffer without bound), and
  ``send`` waits while the transport's write buffer is full;
* keep-alive pings with a timeout, so a peer that vanished without a FIN is
  noticed and its slot freed;
* ``max_requests``: the handshake and every message (received or sent) is
  spent from the worker's budget, so a worker that only holds long-lived
  sockets still recycles;
* graceful stop: open sockets get close code 1012 (service restart) and the
  app its ``websocket.disconnect``, within ``graceful_timeout``.

A session lives on one loop thread and shares nothing with other sessions; it
holds its connection slot until the socket is closed *and* the app returned,
so ``worker_connections`` bounds running WebSocket apps, and a graceful stop
waits for them.
"""
