"""The package's shape, read from its source: no import cycle, no module over 500 lines,
no reach into h11's private names.

An import cycle hidden by an import inside a function still makes the two modules one
(neither can be understood, tested or changed alone); imports under ``if TYPE_CHECKING:``
are for type checkers only and do not count. h11's private names (``h11._abnf``, a
connection's ``_receive_buffer``) can change in any release: the fast path's grammar is
written out in http1/parse.py instead, so h11's next minor release may install.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pounce_worker"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules ``name`` imports, at module level or in a function, TYPE_CHECKING aside."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def resolve(base: str, names: list[str]) -> None:
        submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
        found.update(submodules)
        if base in known and (len(submodules) < len(names) or not names):
            found.add(base)  # names defined in the module (or package __init__) itself
        # Importing a submodule runs its package's __init__ too (the top package's aside: every
        # module is in it, and its __init__ only re-exports the worker class for Gunicorn).
        parts = base.split(".")
        for end in range(2, len(parts)):
            if ".".join(parts[:end]) in known:
                found.add(".".join(parts[:end]))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("pounce_worker"):
                        resolve(alias.name, [])
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base_parts = package[: len(package) - child.level + 1]
                    base = ".".join(base_parts + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                if base.startswith("pounce_worker"):
                    resolve(base, [alias.name for alias in child.names])
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle() -> None:
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert "pounce_worker.asgi" in graph["pounce_worker.http1.exchange"]  # the graph sees relative imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_frozen_config_does_not_import_the_status_server() -> None:
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    reached: set[str] = set()
    todo = ["pounce_worker.config"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert "pounce_worker.status.server" not in reached
    assert "pounce_worker.loop.server" not in reached


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_at_most_500_lines(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concern"


def test_no_h11_private_names() -> None:
    offenders = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                value = node.value
                # h11._x, or a private attribute read off an h11 connection (conn._receive_buffer)
                if (isinstance(value, ast.Name) and value.id == "h11") or (
                    isinstance(value, ast.Attribute) and value.attr in ("conn", "h11")
                ):
                    offenders.append(f"{name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("h11._"):
                offenders.append(f"{name}:{node.lineno} from {node.module}")
    assert not offenders, offenders


def test_inprocess_marker_follows_what_a_module_imports() -> None:
    """tests/run's second GIL leg runs the ``inprocess`` tests (and ``smoke``): the marker must
    keep finding them, or that leg would quietly shrink to its ten smoke tests."""
    import tests.compat.test_compat as compat
    import tests.http1.test_connection as connection
    import tests.websocket.test_frames as frames
    import tests.websocket.test_websocket as websocket
    from tests.conftest import _starts_no_server

    assert _starts_no_server(frames) and _starts_no_server(connection)
    assert not _starts_no_server(websocket)  # starts gunicorn masters through tests/harness
    assert not _starts_no_server(compat)  # starts uvicorn and ours by itself
