"""No import cycles in the package, counting imports inside functions too.

A cycle that only closes inside a function still imports fine (the function runs after both modules exist), which is
how the earlier ones crept in: ``config`` <-> ``model``, the data modules, ``executors`` <-> ``methods``, the
policies -> ``train`` -> policies. Such a cycle means two modules each need the other, so neither can be read, tested
or moved alone. The graph here comes from the source (``ast``), so an import at any depth is an edge, whether or not
it has run.

Not edges: the implicit import of a parent package (``aioli_repro.policies.base`` runs ``policies/__init__.py``
first), since a package's ``__init__`` only gathers its own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aioli_repro"


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package is named by its ``__init__.py``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, list[int]]]:
    """module -> {module it imports: [line numbers]}, over the package's own modules, imports at any depth."""
    mods = modules(package)
    root = package.name

    def known(name: str) -> str | None:  # the innermost package module that ``name`` is or lives in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, list[int]]] = {}
    for mod, path in mods.items():
        edges = graph.setdefault(mod, {})
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]) if node.level \
                    else node.module or ""
                base = base.rstrip(".")
                # ``from pkg import name`` imports the module pkg.name when there is one, else pkg itself.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                if target == root or target.startswith(root + "."):
                    found = known(target)
                    if found is not None and found != mod:
                        edges.setdefault(found, []).append(node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """One cycle (a closed path, first module repeated at the end) per strongly connected component of more than one
    module (Tarjan), so a failure names every separate knot."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, comp) for comp in components]


def _closed_path(graph, comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search back to it)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {comp}")  # pragma: no cover - a component always has one


def describe(graph, cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b][0]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "aioli_repro.policies.doge" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(
        describe(graph, c) for c in found)


def test_a_cycle_through_a_function_level_import_is_found_and_named(tmp_path):
    pkg = tmp_path / "aioli_repro"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("import numpy\n\n\ndef f():\n    from .sub.c import y\n    return y\n\nx = 1\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")  # a package gathering its module: no cycle
    (pkg / "sub" / "c.py").write_text("def g():\n    from aioli_repro import a\n    return a\n\ny = 2\n")
    (pkg / "d.py").write_text("from . import a\n")  # imports into the cycle, not part of it
    graph = import_graph(pkg)
    assert graph["aioli_repro.b"] == {"aioli_repro.sub.c": [5]} and graph["aioli_repro.d"] == {"aioli_repro.a": [1]}
    found = cycles(graph)
    assert found == [["aioli_repro.a", "aioli_repro.b", "aioli_repro.sub.c", "aioli_repro.a"]]
    assert describe(graph, found[0]) == ("aioli_repro.a (line 1) -> aioli_repro.b (line 5) -> aioli_repro.sub.c "
                                         "(line 2) -> aioli_repro.a")
    (pkg / "sub" / "c.py").write_text("y = 2\n")
    assert cycles(import_graph(pkg)) == []
