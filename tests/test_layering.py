"""The package's import graph: no cycle, and imports go down the floors of CONTRIBUTING.md's
layout table, lazy imports inside functions included (imports under ``if TYPE_CHECKING:`` never
run and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pointmap

ROOT = Path(pointmap.__file__).resolve().parent

# CONTRIBUTING.md's table: top-level module or package -> floor
FLOORS = {
    "errors": 0,
    "arrays": 1, "io_utils": 1, "process_group": 1, "stages": 1, "predictions": 1, "image_meta": 1,
    "model": 2, "geometry": 2, "images": 2, "video": 2, "pairs": 2, "store": 2,
    "scene": 3, "formats": 3, "inference": 3, "matching": 3, "testing": 3,
    "distributed": 4, "known_cameras": 4, "retrieval": 4, "align": 4, "export": 4, "train": 4,
    "pipeline": 5, "localization": 5, "online": 5,
    "api": 6,
    "eval": 7, "app": 7,
    "cli": 8,
    "__main__": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def import_graph() -> dict[str, set[str]]:
    """Module -> the pointmap modules it imports (at top level or inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in mods else base_name
                           for a in node.names]
            for t in targets:
                while t and t not in mods:  # ``import a.b.c`` of a non-module attribute
                    t = t.rpartition(".")[0]
                if t.startswith("pointmap") and t != name:
                    graph[name].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(g) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_lazy_imports():
    g = import_graph()
    assert "pointmap.app" in g["pointmap.cli"]  # cli imports the app inside a function
    assert {"pointmap.align.coarse", "pointmap.predictions"} <= g["pointmap.align.optimizer"]  # relative imports


def test_no_import_cycle():
    assert find_cycles(import_graph()) == []


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_module_has_a_floor_and_imports_go_down():
    g = import_graph()
    assert {_top(m) for m in g} - {""} == set(FLOORS), "add new modules to CONTRIBUTING.md's table and FLOORS"
    up = sorted(f"{m} -> {d}" for m, ds in g.items() for d in ds
                if _top(m) and _top(d) and _top(m) != _top(d) and FLOORS[_top(d)] >= FLOORS[_top(m)])
    assert up == []
    users = {m for m, ds in g.items() for d in ds if _top(d) == "testing" and _top(m) != "testing"}
    assert users == set()  # the library never imports its test helpers
    assert {m for m, ds in g.items() if "pointmap.app" in ds} == {"pointmap.cli"}
