"""HTTP/2 for pounce_worker: conf/gunicorn.conf.py plus Gunicorn 27's HTTP/2 settings.

    gunicorn -c conf/http2.conf.py myapp:app

Two deployments, one file:

* behind a TLS-terminating proxy that speaks HTTP/2 upstream in cleartext (h2c:
  Cloud Run, fly.io, Envoy, a service-mesh sidecar): the proxy's address goes in
  ``FORWARDED_ALLOW_IPS``; only peers listed there may speak h2c, everyone
  else is served HTTP/1.1 as if HTTP/2 were off. Never expose an h2c port to
  the internet;
* with TLS here (``GUNICORN_CERTFILE`` and ``GUNICORN_KEYFILE``): ALPN offers
  ``h2`` then ``http/1.1`` to every client; h2c settings are ignored.

Check it with curl::

    curl --http2-prior-knowledge http://127.0.0.1:8000/   # h2c, as such a proxy speaks it
    curl --http2 http://127.0.0.1:8000/                   # h2c by Upgrade
    curl -k --http2 https://127.0.0.1:8000/               # TLS + ALPN ("HTTP/2 200")

Needs the h2 package: ``pip install pounce_worker[http2]`` (the boot fails,
naming ``http_protocols``, without it).

=================================  ==============================================================
``GUNICORN_HTTP_PROTOCOLS``        ``http_protocols``, in preference order (default ``h2,h1``)
``GUNICORN_HTTP2_CLEARTEXT``       ``http2_cleartext``: off, prior-knowledge, upgrade, both
                                   (default ``both``)
``FORWARDED_ALLOW_IPS``            Gunicorn's own variable: the proxies trusted with h2c (and
                                   with forwarded headers); default 127.0.0.1,::1
``GUNICORN_CERTFILE``              TLS certificate (with ``GUNICORN_KEYFILE``): HTTP/2 by ALPN
``GUNICORN_HTTP2_MAX_STREAMS``     ``http2_max_concurrent_streams`` per connection (100)
=================================  ==============================================================
"""

import os
import runpy
from pathlib import Path

_base = runpy.run_path(str(Path(__file__).with_name("gunicorn.conf.py")))
globals().update({name: value for name, value in _base.items() if not name.startswith("_")})

http_protocols = os.environ.get("GUNICORN_HTTP_PROTOCOLS", "h2,h1")
http2_cleartext = os.environ.get("GUNICORN_HTTP2_CLEARTEXT", "both")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
http2_max_concurrent_streams = int(os.environ.get("GUNICORN_HTTP2_MAX_STREAMS", "100"))
certfile = os.environ.get("GUNICORN_CERTFILE") or None
keyfile = os.environ.get("GUNICORN_KEYFILE") or None
