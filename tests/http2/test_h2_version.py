"""The h2 versions HTTP/2 is served with: checked at boot, from the package's metadata.

machine.py and fastpath.py read h2's frame buffer, which h2 4.3 laid out as it is now
(4.1 and 4.2 kept its bytes in ``data``, not ``_data``): with an older h2 every HTTP/2
connection failed with an AttributeError instead of the master refusing to boot. On 4.3
the suite fails too (a refusal before the app ran left its stream open): 4.4 is the floor.
"""

from __future__ import annotations

import pytest
from gunicorn.config import Config

from pounce_worker import http2
from pounce_worker.config import ConfigError
from pounce_worker.worker import ThreadWorker


@pytest.mark.parametrize(
    ("version", "usable"),
    [("4.4.0", True), ("4.4.1", True), ("4.10.2", True), ("4.4.0rc1", True), ("4.4", True), ("4.4.0.post1", True),
     ("4.1.0", False), ("4.2.0", False), ("4.3.0", False), ("3.2.0", False), ("5.0.0", False), ("unknown", False),
     # The minor's leading digits only: these are 4.3 and 4.1 releases, not 4.31 or 4.110.
     ("4.3rc1", False), ("4.3b2", False), ("4.3post1", False), ("4.3+deb1", False), ("4.1a10", False), ("4", False)],
)
def test_usable_versions(version: str, usable: bool) -> None:
    why = http2.unusable(version)
    assert (why is None) is usable
    if why is not None:
        assert version in why


def test_installed_h2_is_usable() -> None:
    """The one the suite runs against, and what this package reads of it (h2's frame buffer)."""
    from h2.frame_buffer import FrameBuffer

    assert http2.unusable() is None
    buffer = FrameBuffer(server=True)
    assert isinstance(buffer._data, bytearray) and buffer._headers_buffer == [] and buffer._preamble_len == 24


def test_an_old_h2_fails_the_boot_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http2.importlib.metadata, "version", lambda name: "4.1.0")
    cfg = Config()
    cfg.set("http_protocols", "h2,h1")
    with pytest.raises(ConfigError, match=r"http_protocols=h2,h1 includes h2 but h2 4\.1\.0 is installed; "
                                          r"pounce_worker needs h2>=4\.4,<5"):
        ThreadWorker.validated_config(cfg)
    cfg.set("http_protocols", "h1")
    ThreadWorker.validated_config(cfg)  # HTTP/1.1 only: h2's version does not matter


def test_an_h2_without_metadata_is_asked_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vendored, frozen or in a zipapp, h2 imports without its dist-info: its ``__version__`` decides."""
    import h2

    def missing(name: str) -> str:
        raise http2.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(http2.importlib.metadata, "version", missing)
    assert http2.unusable() is None
    monkeypatch.setattr(h2, "__version__", "4.2.0")
    assert http2.unusable() == "h2 4.2.0 is installed; pounce_worker needs h2>=4.4,<5"
