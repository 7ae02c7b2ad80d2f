"""Diff two observations into a flat ``{path: [reference, other]}`` dict.

Response headers are compared as multisets: their entry holds only the
headers one side has and the other lacks. Everything else compares by value,
lists element by element, so a diff points at the exact field that differs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

MISSING = "<missing>"


def _is_response_headers(path: str) -> bool:
    return path.startswith("responses[") and path.endswith("].headers")


def diff(ref: Any, other: Any, path: str = "") -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    if isinstance(ref, dict) and isinstance(other, dict):
        for key in sorted(set(ref) | set(other), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out.update(diff(ref.get(key, MISSING), other.get(key, MISSING), sub))
        return out
    if isinstance(ref, list) and isinstance(other, list):
        if _is_response_headers(path):
            a = Counter(tuple(h) for h in ref)
            b = Counter(tuple(h) for h in other)
            only_ref = sorted(list(h) for h in (a - b).elements())
            only_other = sorted(list(h) for h in (b - a).elements())
            if only_ref or only_other:
                out[path] = [only_ref, only_other]
            return out
        for i in range(max(len(ref), len(other))):
            out.update(diff(ref[i] if i < len(ref) else MISSING, other[i] if i < len(other) else MISSING,
                            f"{path}[{i}]"))
        return out
    if ref != other:
        out[path] = [ref, other]
    return out


def summarize(d: dict[str, list[Any]], width: int = 90) -> str:
    """One line per differing path, values truncated."""
    lines = []
    for path, (a, b) in d.items():
        sa, sb = repr(a), repr(b)
        if len(sa) > width:
            sa = sa[:width] + "..."
        if len(sb) > width:
            sb = sb[:width] + "..."
        lines.append(f"  {path}: {sa} -> {sb}")
    return "\n".join(lines)
