"""The in-process rig's fixtures (tests/inprocess.py): ``clock`` and ``make_rig``."""

from tests.inprocess import clock, make_rig  # noqa: F401
