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
    "arrays": 1, "io_utils": 1, "process_group": 1, "stages": 1, "predictions": 1, "image_meta": 1, "workers": 1,
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


# ------------------------------------------------------------------ CONTRIBUTING.md's table itself
CONTRIBUTING = ROOT.parents[1] / "CONTRIBUTING.md"


def _entries(cell: str) -> tuple[list[tuple[str, object]], bool]:
    """The backticked names of a table cell, each with its parenthesised sub-list (``None`` when it
    has none), and whether free text such as "then one module per format" leaves the list open."""
    items: list[tuple[str, object]] = []
    open_ended, i, n = False, 0, len(cell)
    while i < n:
        c = cell[i]
        if c == "`":
            j = cell.index("`", i + 1)
            items.append((cell[i + 1:j], None))
            i = j + 1
        elif c == "(" and items:
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(cell[j], 0)
                j += 1
            items[-1] = (items[-1][0], _entries(cell[i + 1:j - 1]))
            i = j
        else:
            if c.isalpha():
                open_ended = True
            i += 1
    return items, open_ended


def _table() -> list[tuple[int, list[tuple[str, object]]]]:
    """``(floor, entries)`` of every row of the layout table."""
    rows = []
    for line in CONTRIBUTING.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows.append((int(cells[0]), _entries(cells[1])[0]))
    return rows


def _check_listing(folder: Path, entries: list[tuple[str, object]], open_ended: bool, where: str) -> list[str]:
    """What differs between a package's listed files and sub-packages and the folder's own."""
    problems = []
    listed = {name.rstrip("/") for name, _ in entries}
    present = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
    present |= {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    missing = listed - present
    if missing:
        problems.append(f"{where}: listed but absent: {sorted(missing)}")
    if not open_ended and present - listed:
        problems.append(f"{where}: present but not listed: {sorted(present - listed)}")
    for name, sub in entries:
        if sub is not None and (folder / name.rstrip("/")).is_dir():
            problems += _check_listing(folder / name.rstrip("/"), *sub, where=f"{where}{name}")
    return problems


def test_contributing_table_is_true():
    """Every row's floor is the one FLOORS holds, and every package's list of files (and of its
    sub-packages' files) is the folder's, unless the row says "one module per ..."."""
    rows = _table()
    floors = {name.removesuffix(".py").rstrip("/"): floor for floor, entries in rows for name, _ in entries}
    assert floors == FLOORS
    problems = []
    for _, entries in rows:
        for name, sub in entries:
            if sub is not None and name.endswith("/"):
                problems += _check_listing(ROOT / name.rstrip("/"), *sub, where=name)
    assert problems == []


def test_table_reader_sees_lists_and_open_ends():
    items, open_ended = _entries("`a/` (`x.py`, `b/` (`y.py`), then one module per thing), `c.py`")
    assert [n for n, _ in items] == ["a/", "c.py"] and not open_ended
    sub_items, sub_open = items[0][1]
    assert [n for n, _ in sub_items] == ["x.py", "b/"] and sub_open
    assert _check_listing(ROOT / "geometry", [("camera.py", None)], False, "geometry/") != []
