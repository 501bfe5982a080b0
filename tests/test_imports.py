"""Import layering of the planner package.

Layers flow one way: scenario files -> validated config -> workload -> perf -> model ->
engines -> report/CLI. This test parses every module under ``planner/`` with :mod:`ast`,
collects every import statement -- function-local and ``TYPE_CHECKING`` ones included, since
an import hidden in a function still ties the two modules together -- and checks that

(a) the planner modules form no import cycle, and
(b) no lower-layer module imports an engine, the report, the CLI or the sweep.

Rules for building the graph:

* ``import planner.a.b`` and ``from planner.a import b`` (``b`` a submodule) are edges to
  ``planner.a.b``; ``from planner.a import name`` (``name`` not a submodule) is an edge to
  ``planner.a`` (its ``__init__``). Relative imports are resolved against the importing
  module's package.
* Importing a submodule runs its package's ``__init__`` first, but that alone is not an edge
  to the package: a package ``__init__`` that re-exports its submodules would otherwise be in
  a cycle with every submodule importing a sibling. An edge to a package counts only when
  names are taken from its ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "planner"

#: modules below the engines: they never import an engine, the report, the CLI or the sweep
LOWER = (
    "planner.config",
    "planner.uncertain",
    "planner.workload",
    "planner.distributions",
    "planner.perf",
    "planner.costs",
    "planner.arrivals",
    "planner.traces",
    "planner.requests",
    "planner.sim",
    "planner.catalog",
    "planner.model",
)
UPPER = ("planner.engines", "planner.report", "planner.cli", "planner.sweep", "planner.api")

#: upward edges tolerated for now: none (the one-model refactor removed the last one). Should
#: one ever be listed, the test fails once it is gone, so the set can only shrink.
_PENDING: set[tuple[str, str]] = set()


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> source file for every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Planner modules imported anywhere in ``tree`` (see the module docstring's rules)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()

    def longest_known(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = longest_known(alias.name)
                if target is not None:
                    out.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base not in known:
                target = longest_known(base)
                if target is not None:
                    out.add(target)
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    out.discard(module)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the planner modules it imports, for every module under ``root``."""
    files = module_files(root)
    known = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", known)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None if it is acyclic."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            c = colour.get(nxt, white)
            if c == grey:
                return stack[stack.index(nxt):] + [nxt]
            if c == white and nxt in graph:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = black
        return None

    for node in sorted(graph):
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def upward_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Edges from a lower-layer module to an engine, the report, the CLI or the sweep."""
    return {
        (a, b)
        for a, targets in graph.items()
        if _in(a, LOWER)
        for b in targets
        if _in(b, UPPER)
    }


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_graph_sees_known_imports(graph):
    # guard against a checker that silently finds nothing
    assert "planner.config" in graph["planner.workload"]
    assert "planner.engines.deterministic" in graph["planner.engines.breakeven"]
    # function-local imports count
    assert "planner.engines.deterministic" in graph["planner.report.providers"]


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_imports(graph):
    found = upward_edges(graph)
    unexpected = sorted(found - _PENDING)
    assert not unexpected, "lower layer imports an upper one: " + ", ".join(
        f"{a} -> {b}" for a, b in unexpected)
    gone = sorted(_PENDING - found)
    assert not gone, "no longer present, remove from _PENDING: " + ", ".join(
        f"{a} -> {b}" for a, b in gone)


def test_checker_catches_a_synthetic_cycle():
    fake = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    cycle = find_cycle(fake)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"p.a", "p.b", "p.c"}
    assert find_cycle({"p.a": {"p.b"}, "p.b": set(), "p.c": {"p.a", "p.b"}}) is None
    assert upward_edges({"planner.config": {"planner.engines.risk.run"}}) == {
        ("planner.config", "planner.engines.risk.run")}


def test_checker_resolves_import_forms(tmp_path):
    pkg = tmp_path / "planner"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from planner.sub.x import f\n")
    (pkg / "sub" / "x.py").write_text("def f():\n    from . import y\n    return y\n")
    (pkg / "sub" / "y.py").write_text("from ..top import g\nimport planner.sub.x\n")
    (pkg / "sub" / "z.py").write_text("from planner.sub import f\n")
    (pkg / "top.py").write_text("def g():\n    from planner import sub\n")
    g = import_graph(pkg)
    assert g["planner.sub"] == {"planner.sub.x"}
    assert g["planner.sub.x"] == {"planner.sub.y"}  # function-local relative import
    assert g["planner.sub.y"] == {"planner.top", "planner.sub.x"}
    assert g["planner.sub.z"] == {"planner.sub"}  # a name from the package __init__
    assert g["planner.top"] == {"planner.sub"}
    assert find_cycle(g) == ["planner.sub.x", "planner.sub.y", "planner.sub.x"]


# -- start-up: the modules every command imports keep the numeric stack out of module level --

#: imported by ``planner --help`` / ``planner validate`` before any command runs
STARTUP_MODULES = ("planner", "planner.__main__", "planner.cli", "planner.api", "planner.config",
                   "planner.distributions", "planner.catalog", "planner.errors",
                   "planner._runtime", "planner._version", "planner.output", "planner.results")
#: third-party packages a module on the start-up path may import only inside a function
#: (or under ``if TYPE_CHECKING``)
STARTUP_HEAVY = ("numpy", "pandas", "scipy", "altair", "vl_convert", "dask", "distributed",
                 "simpy", "highspy")


def module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level package names imported when the module runs: statements at module level and
    inside module-level ``if``/``try`` blocks, except ``if TYPE_CHECKING:`` bodies (function
    and class bodies are not entered: they run later or never)."""
    out: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                out.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if not node.level and node.module:
                    out.add(node.module.split(".")[0])
            elif isinstance(node, ast.If):
                test = node.test
                name = test.id if isinstance(test, ast.Name) else (
                    test.attr if isinstance(test, ast.Attribute) else None)
                if name != "TYPE_CHECKING":
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody,
                              *(h.body for h in node.handlers)):
                    visit(block)

    visit(tree.body)
    return out


def test_startup_modules_import_no_numeric_stack_at_module_level():
    files = module_files()
    assert set(STARTUP_MODULES) <= set(files)
    found = {}
    for name in STARTUP_MODULES:
        tree = ast.parse(files[name].read_text(encoding="utf-8"))
        heavy = sorted(module_level_imports(tree) & set(STARTUP_HEAVY))
        if heavy:
            found[name] = heavy
    assert not found, f"module-level imports of heavy packages on the start-up path: {found}"


def test_module_level_import_checker():
    tree = ast.parse(
        "import numpy as np\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    import pandas\nelse:\n    import json\ntry:\n    import scipy.special\n"
        "except ImportError:\n    pass\ndef f():\n    import altair\nclass C:\n"
        "    import dask\nfrom . import sibling\n")
    assert module_level_imports(tree) == {"numpy", "typing", "json", "scipy"}
