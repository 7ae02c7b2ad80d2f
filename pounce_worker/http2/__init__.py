"""HTTP/2, spoken with h2 (python-hyper: sans-I/O and pure Python, like h11).

h2 is optional, as in Gunicorn (``gunicorn[http2]``, here ``pounce_worker[http2]``):
``AVAILABLE`` says whether it imports, and the worker refuses to boot with ``h2``
in ``http_protocols`` when it does not (worker.check_config), naming the setting.
Nothing here is imported on the HTTP/1.1 path until a connection turns to HTTP/2.
"""

from __future__ import annotations

import importlib.util

#: Whether the h2 package is installed (checked without importing it: boot stays light).
AVAILABLE = importlib.util.find_spec("h2") is not None
