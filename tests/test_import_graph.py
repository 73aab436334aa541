"""The package's import graph: modules import each other without circles (a circle makes the import order matter
and hides half-initialised modules; one closed by an import inside a function is still a circle of design)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_eq"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the ssl_eq modules it imports (absolute and relative, at any depth of the file), within `package`."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if not name.startswith(package):
            continue
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [base, *subs]  # `from pkg import module`
            else:
                continue
            deps |= {t for t in targets if t in modules and t.startswith(package) and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "ssl_eq.probes.context" in import_graph("ssl_eq.probes")["ssl_eq.probes.sequence"]


# to add: ssl_eq.checkpoints once its format discovery no longer imports its own package from checkpoints/base.py
@pytest.mark.parametrize("package", ["ssl_eq.probes", "ssl_eq.methods", "ssl_eq.datasets", "ssl_eq.renderers",
                                     "ssl_eq.orbit", "ssl_eq.reports"])
def test_no_import_circle(package):
    graph = import_graph(package)
    assert any(graph.values())  # the parser follows the imports
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"
