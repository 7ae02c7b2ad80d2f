"""HTTP/2, spoken with h2 (python-hyper: sans-I/O and pure Python, like h11).

h2 is optional, as in Gunicorn (``gunicorn[http2]``, here ``pounce_worker[http2]``):
``AVAILABLE`` says whether it imports, and the worker refuses to boot with ``h2``
in ``http_protocols`` when it does not (worker.check_config), naming the setting.
Nothing here is imported on the HTTP/1.1 path until a connection turns to HTTP/2.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from ..versions import release

#: Whether the h2 package is installed (checked without importing it: boot stays light).
AVAILABLE = importlib.util.find_spec("h2") is not None

#: The oldest h2 this package works with (setup.cfg's extras say the same): the one the
#: suite passes on. machine.py and fastpath.py read h2's frame buffer (``_data``,
#: ``_headers_buffer``), laid out so from 4.3 (on 4.1 and 4.2 every HTTP/2 connection
#: failed), and on 4.3 a refusal sent before the app ran did not end its stream.
MIN_H2 = (4, 4)


def unusable(version: str | None = None) -> str | None:
    """Why HTTP/2 cannot be served with the installed h2 (or ``version``), or None when it can.

    Read from the package's metadata, without importing it: the master checks it at boot."""
    if version is None:
        if not AVAILABLE:
            return "the h2 package is not installed"
        try:
            version = importlib.metadata.version("h2")
        except importlib.metadata.PackageNotFoundError:
            # Importable without its metadata (vendored, frozen, a zipapp): ask the module.
            try:
                import h2
            except ImportError:
                return "the h2 package is not installed"
            version = str(getattr(h2, "__version__", "unknown"))
    installed = release(version)
    if installed is None:
        return f"h2 {version} is not a version this package understands"
    if installed < MIN_H2 or installed[0] >= 5:
        return f"h2 {version} is installed; pounce_worker needs h2>={MIN_H2[0]}.{MIN_H2[1]},<5"
    return None
