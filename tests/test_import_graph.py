"""Imports flow one way: the import graph of the package, drawn from every import statement (at
module level, inside functions, under `if TYPE_CHECKING:`, relative ones, `from pkg import mod`
naming a submodule, `importlib.import_module("...")` with a literal name), has no cycle, neither
between modules nor between the package's folders (each sub-package one node, each top-level
module its own: `api.py` importing `explain/` while `explain/` imports `api.py` is a cycle even
when no two modules close one).

A package's `__init__` is a node of its own; importing `a.b.c` is an arrow to `a.b.c` alone (the
parents' `__init__` run first, but re-exporting from a package `__init__` is not an arrow back).

`python tests/test_import_graph.py` prints the cycles of the tree as it stands.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, package: str, modules: set[str]) -> set[str]:
    """The package's modules that one syntax node imports (nothing for other nodes)."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:  # `import a.b.c`: the deepest module of the package it names
            parts = alias.name.split(".")
            found |= {next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules),
                           "")} - {""}
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: `from . import x`, `from ..y import z`
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:  # `from pkg import mod` imports the submodule; else the module itself
            found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            found.add(node.args[0].value)
    return found & modules


def import_graph(package_dir: Path) -> Graph:
    """Module -> the package's modules it imports anywhere in its source."""
    root = package_dir.parent
    paths = {module_name(p, root): p for p in package_dir.rglob("*.py")}
    modules = set(paths)
    graph: Graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {t for node in ast.walk(tree) for t in _targets(node, package, modules)} - {name}
    return graph


def folder_graph(graph: Graph, top: str) -> tuple[Graph, dict[tuple[str, str], list[str]]]:
    """The graph between folders: `top.sub` for everything in a sub-package, a top-level module as
    itself; with the module arrows behind each folder arrow."""
    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    folders: Graph = {unit(m): set() for m in graph}
    why: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            a, b = unit(module), unit(target)
            if a != b and a != top and b != top:  # the package __init__ re-exports: not a folder
                folders[a].add(b)
                why.setdefault((a, b), []).append(f"{module} -> {target}")
    return folders, why


def strongly_connected(graph: Graph) -> list[list[str]]:
    """The groups of nodes that reach each other (Tarjan), each with more than one node, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:  # iterative: no recursion limit on a deep graph
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
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
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def one_cycle(graph: Graph, group: list[str]) -> list[str]:
    """A shortest cycle through the group's first node, as a path that ends where it starts."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{group} is not a cycle")


def cycles(package_dir: Path) -> list[str]:
    """One line per cycle of the package (modules first, then folders), naming its arrows."""
    graph = import_graph(package_dir)
    lines = []
    for group in strongly_connected(graph):
        lines.append(" -> ".join(one_cycle(graph, group)) + f"   (all of: {', '.join(group)})")
    folders, why = folder_graph(graph, package_dir.name)
    for group in strongly_connected(folders):
        path = one_cycle(folders, group)
        arrows = "; ".join(why[(a, b)][0] for a, b in zip(path, path[1:]))
        lines.append("folders " + " -> ".join(path) + f"   ({arrows})")
    return lines


def test_the_package_imports_flow_one_way() -> None:
    found = cycles(ROOT / "dinokit")
    assert not found, "import cycles (a function that needs a type takes it as a parameter or lives beside " \
                      "the type; README, Layout):\n" + "\n".join(found)


def test_every_kind_of_import_is_an_arrow(tmp_path: Path) -> None:
    """The graph sees each form of import, and a cycle closed by any one of them is named."""
    pkg = tmp_path / "pkg"
    files = {
        "__init__.py": "from pkg.api import run\n",
        "api.py": "def run():\n    from pkg.sub import deep\n",  # function-level, a submodule by `from`
        "sub/__init__.py": "",
        "sub/deep.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..top import T\n",  # relative
        "sub/side.py": "from . import deep\nimport pkg.sub.deep as d\n",  # relative package, dotted import
        "top.py": "import importlib\nimportlib.import_module('pkg.api')\nT = int\n",
        "leaf.py": "import os\nfrom pkg import top\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph == {
        "pkg": {"pkg.api"}, "pkg.api": {"pkg.sub.deep"}, "pkg.sub": set(), "pkg.sub.deep": {"pkg.top"},
        "pkg.sub.side": {"pkg.sub.deep"}, "pkg.top": {"pkg.api"}, "pkg.leaf": {"pkg.top"},
    }
    assert cycles(pkg) == [
        "pkg.api -> pkg.sub.deep -> pkg.top -> pkg.api   (all of: pkg.api, pkg.sub.deep, pkg.top)",
        "folders pkg.api -> pkg.sub -> pkg.top -> pkg.api   (pkg.api -> pkg.sub.deep; pkg.sub.deep -> pkg.top; "
        "pkg.top -> pkg.api)",
    ]
    (pkg / "top.py").write_text("T = int\n")  # the lazy arrow back removed: no cycle left
    assert cycles(pkg) == []
    (pkg / "sub" / "side.py").write_text("from pkg import api\n")  # two folders only: still a cycle
    (pkg / "api.py").write_text("from pkg.sub.side import x\n")
    assert cycles(pkg) == ["pkg.api -> pkg.sub.side -> pkg.api   (all of: pkg.api, pkg.sub.side)",
                           "folders pkg.api -> pkg.sub -> pkg.api   (pkg.api -> pkg.sub.side; pkg.sub.side -> pkg.api)"]


if __name__ == "__main__":
    print("\n".join(cycles(ROOT / "dinokit")) or "no import cycle")
