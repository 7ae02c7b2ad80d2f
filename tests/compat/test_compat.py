"""Differential compatibility: pounce_worker against uvicorn (h11), case by case.

Each case in cases.py runs once against uvicorn and once against pounce_worker
in each forced mode (threads, processes), every server started once per
session. The observations must be identical, except for the intended
differences in differences.py, which must be observed exactly. Any other
difference is a pounce_worker bug: the case carries xfail(strict=True) with a
diagnosis in BUGS below, so fixing the bug turns it into an XPASS failure
until the mark is removed.
"""

from __future__ import annotations

from typing import Any

import pytest

from .cases import CASES, Compat, unavailable
from .compare import diff, summarize
from .differences import DIFFERENCES, diff_matches
from .servers import POUNCE_TARGETS, REFERENCE

#: Differences from uvicorn that are pounce_worker bugs: case -> reason (both modes unless noted).
BUGS: dict[str, str] = {
}

assert not set(BUGS) & set(DIFFERENCES), "a case is either an intended difference or a bug"
assert set(BUGS) | set(DIFFERENCES) <= set(CASES), set(BUGS) | set(DIFFERENCES) - set(CASES)


def _params() -> list[Any]:
    params = []
    for name in CASES:
        for target in POUNCE_TARGETS:
            marks = [pytest.mark.xfail(strict=True, reason=BUGS[name])] if name in BUGS else []
            if unavailable(name):
                marks = [pytest.mark.skip(reason=unavailable(name))]
            params.append(pytest.param(name, target, marks=marks, id=f"{name}[{target.split('-')[1]}]"))
    return params


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("name", "target"), _params())
def test_same_as_uvicorn(compat: Compat, name: str, target: str) -> None:
    case = CASES[name]
    reference = compat.observe(REFERENCE, case)
    assert "error" not in reference, f"uvicorn run failed: {reference['error']}"
    observed = compat.observe(target, case)
    found = diff(reference, observed)
    known = DIFFERENCES.get(name)
    if known is None:
        assert not found, (
            f"{name}: {target} differs from uvicorn (not an intended difference; see differences.py):\n"
            f"{summarize(found)}\n{compat.server_output(target, case.flavor)}"
        )
    else:
        assert diff_matches(known["diff"], found), (
            f"{name}: the intended difference ({known['what']}) changed or disappeared.\n"
            f"expected: {known['diff']!r}\nfound:\n{summarize(found)}"
        )


def test_modes_agree(compat: Compat) -> None:
    """Threads and processes mode must be indistinguishable on the wire and to the app."""
    disagree = {}
    for name, case in CASES.items():
        if unavailable(name):
            continue
        found = diff(compat.observe(POUNCE_TARGETS[0], case), compat.observe(POUNCE_TARGETS[1], case))
        if found:
            disagree[name] = summarize(found)
    assert not disagree, "\n".join(f"{k}:\n{v}" for k, v in disagree.items())


def test_every_difference_is_documented() -> None:
    for name, entry in DIFFERENCES.items():
        assert entry.get("what") and entry.get("why") and entry.get("diff"), name
    for name, reason in BUGS.items():
        assert reason.startswith("BUG: "), name
