"""Imports flow down the layers of DESIGN.md and never in a circle, lazy (function-level) imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import clipforge

SRC = Path(__file__).resolve().parents[2] / "src"

# DESIGN.md's layers, top to bottom; the public API (api.py: the one model loader; zoo.py: open_clip's
# surface over it) sits between the tasks and data.
LAYERS: dict[str, int] = {
    "cli": 7, "server": 7,
    "zeroshot": 5, "evaluate": 5, "train": 5, "library": 5, "similarity": 5,
    "api": 4, "zoo": 4, "zoo_training": 4,
    "data": 3,
    "inference": 2,
    "models": 1, "text": 1, "image": 1, "weights": 1,
    "atomic": 0, "disk_full": 0, "regular_file": 0, "figures": 0, "errors": 0, "pretrained": 0, "_lazy": 0, "cores": 0,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "clipforge").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    facade = clipforge._EXPORTS  # `clipforge.load` / `from clipforge import load` reach clipforge.api
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
            if base == "clipforge":
                found |= {facade[alias.name] for alias in node.names if alias.name in facade}
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "clipforge"
              and node.attr in facade and name != "clipforge"):
            found.add(facade[node.attr])
    resolved = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        # a submodule naming its own package's __init__ (for a re-exported name) is not an edge
        if target.startswith("clipforge") and target != name and not name.startswith(target + "."):
            resolved.add(target)
    return resolved


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _area(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_the_graph_is_read_correctly() -> None:
    graph = _graph()
    assert "clipforge.weights.loading" in graph["clipforge.api"] or "clipforge.weights" in graph["clipforge.api"]
    assert "clipforge.api" in graph["clipforge.cli.common"]  # a lazy, function-level import counts
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "clipforge.api" in graph["clipforge.zoo"]  # through the facade: `import clipforge; clipforge.create_model`


def test_no_module_imports_in_a_circle() -> None:
    graph = _graph()
    modules = _cycles(graph)
    areas: dict[str, set[str]] = {}
    for name, targets in graph.items():
        areas.setdefault(_area(name), set()).update(_area(t) for t in targets if _area(t) != _area(name))
    packages = _cycles(areas)
    assert (modules, packages) == ([], []), f"import cycles: modules {modules}, packages {packages}"


def test_no_module_imports_upward() -> None:
    unplaced = {_area(name) for name in _graph()} - set(LAYERS) - {"clipforge", "__main__"}
    assert unplaced == set(), f"place these in LAYERS (DESIGN.md's layers): {sorted(unplaced)}"
    upward = sorted(f"{name} -> {target}" for name, targets in _graph().items() for target in targets
                    if LAYERS.get(_area(target), -1) > LAYERS.get(_area(name), 99))
    assert upward == [], f"imports against the layers of DESIGN.md: {upward}"
