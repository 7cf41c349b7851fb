"""The import graph of src/pipesim, read from the source (no import runs): no cycles, and torch
only where the design puts it.

Every ``import``/``from ... import`` counts, function-level ones included (a local import that
patches a cycle is still a cycle); those under ``if TYPE_CHECKING:`` do not (they never run).
An edge goes to the module named: ``from pipesim.x import y`` -> ``pipesim.x``, or
``pipesim.x.y`` when that is a submodule. Initialising parent packages is not an edge.

Rules (the allowlists are package prefixes; after the layout move they become
runtime/launch/models/profile):
- only modules in TORCH_PACKAGES import torch or numpy;
- a module outside them may import a module inside them only within a function (lazily), and
  only when it is a TORCH_CLIENT (the CLI's commands, and ``pipesim.run``/``pipesim.partition``
  in the package's ``__init__``, written ``pipesim:run``);
- no cycles.
PENDING lists what the tree still breaks, each with who removes it; an entry that no longer
happens must be removed too, so the list stays the truth.

Every public module (no ``_`` in its path's names) also declares ``__all__``, of names it binds.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

TORCH_PACKAGES = ("pipesim.runtime", "pipesim.models", "pipesim.processes", "pipesim.profiling")
TORCH_CLIENTS = ("pipesim.commands", "pipesim:run", "pipesim:partition", "pipesim:__getattr__")

HEAVY = ("torch", "numpy")

# (rule, importer, imported) -> who removes it
PENDING: dict[tuple[str, str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "pipesim").rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class Import(NamedTuple):
    importer: str
    scope: str  # the enclosing top-level function, or ""
    imported: str
    lazy: bool  # inside a function: runs only when it is called


def _resolve(importer: str, node: ast.ImportFrom) -> list[str]:
    base = node.module or ""
    if node.level:
        package = importer if (SRC / Path(*importer.split("."))).is_dir() else (
            importer.rpartition(".")[0])
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    if len(found) < len(node.names):
        found.append(base)
    return found


def _imports(module: str) -> list[Import]:
    out: list[Import] = []

    def visit(node: ast.AST, scope: str, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, scope, lazy)
                continue
            inner, inner_lazy = scope, lazy
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner_lazy = True
                if not scope and not isinstance(child, ast.Lambda):
                    inner = child.name
            if isinstance(child, ast.Import):
                out.extend(Import(module, scope, a.name, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                out.extend(Import(module, scope, name, lazy) for name in _resolve(module, child))
            visit(child, inner, inner_lazy)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")), "", False)
    return out


IMPORTS = [i for m in MODULES for i in _imports(m)]


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


Found = set[tuple[str, str, str]]


def _torch_violations(imports: Sequence[Import] = IMPORTS) -> Found:
    found = set()
    for importer, scope, imported, lazy in imports:
        if _within(importer, TORCH_PACKAGES):
            continue
        if imported.split(".")[0] in HEAVY:
            found.add(("torch outside the torch packages", importer, imported.split(".")[0]))
        elif _within(imported, TORCH_PACKAGES):
            client = _within(importer, TORCH_CLIENTS) or f"{importer}:{scope}" in TORCH_CLIENTS
            if not (lazy and client):
                found.add(("core imports the torch side", importer, imported))
    return found


def _cycles(imports: Sequence[Import] = IMPORTS) -> Found:
    """Each strongly connected component of two or more modules: ("cycle", first, the rest)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for importer, _, imported, _ in imports:
        if imported in MODULES and imported != importer:
            graph[importer].add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            connect(m)
    return {("cycle", c[0], c[-1]) if len(c) == 2 else ("cycle", c[0], ", ".join(c[1:]))
            for c in components}


def test_the_graph_was_read() -> None:
    assert {"pipesim.ir", "pipesim.runtime.engine", "pipesim.views.html"} <= set(MODULES)
    assert Import("pipesim.timeline", "", "pipesim.ir", False) in IMPORTS
    assert Import("pipesim", "partition", "pipesim.profiling.partitioning", True) in IMPORTS


@pytest.mark.parametrize("check", [_torch_violations, _cycles], ids=["torch", "cycles"])
def test_imports_follow_the_design(check: Callable[[], Found]) -> None:
    found = check()
    pending = {k for k in PENDING if (k[0] == "cycle") == (check is _cycles)}
    assert sorted(found - pending) == [], "new violations of the import rules (module doc)"
    assert sorted(pending - found) == [], "fixed: remove these from PENDING"


def test_the_rules_catch_what_they_are_for() -> None:
    """The checks themselves, on made-up imports."""
    made_up = [Import("pipesim.ir", "", "pipesim.timeline", False),
               Import("pipesim.timeline", "", "pipesim.ir", False),
               Import("pipesim.views.png", "png_bytes", "numpy", True),
               Import("pipesim.simulate", "", "pipesim.runtime.engine", False),
               Import("pipesim.commands.run", "", "pipesim.runtime.train", False),
               Import("pipesim.commands.run", "run", "pipesim.runtime.train", True),
               Import("pipesim.runtime.engine", "", "torch", False),
               Import("pipesim", "partition", "pipesim.profiling.partitioning", True),
               Import("pipesim", "validate", "pipesim.processes.launch", True),
               Import("pipesim", "", "pipesim.profiling.partitioning", False)]
    assert _cycles(made_up) == {("cycle", "pipesim.ir", "pipesim.timeline")}
    assert _torch_violations(made_up) == {
        ("torch outside the torch packages", "pipesim.views.png", "numpy"),
        ("core imports the torch side", "pipesim.simulate", "pipesim.runtime.engine"),
        ("core imports the torch side", "pipesim.commands.run", "pipesim.runtime.train"),
        ("core imports the torch side", "pipesim", "pipesim.processes.launch"),
        ("core imports the torch side", "pipesim", "pipesim.profiling.partitioning")}


# Public modules without __all__ yet: the lead's runtime rewrite and bench/ (leaving the package)
NO_ALL_YET: set[str] = set()


def _bound_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "_LAZY"):  # resolved by the module's __getattr__
            names |= set(ast.literal_eval(node.value))
    return names


def _declared(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        target = (node.targets[0] if isinstance(node, ast.Assign) else
                  node.target if isinstance(node, ast.AnnAssign) else None)
        if isinstance(target, ast.Name) and target.id == "__all__":
            assert isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(v) for v in value]
    return None


def test_every_public_module_declares_what_it_offers() -> None:
    public = {m for m in MODULES
              if not any(part.startswith("_") for part in m.split(".")) or m == "pipesim"}
    missing, unbound = [], []
    for m in sorted(public - NO_ALL_YET):
        tree = ast.parse(MODULES[m].read_text(encoding="utf-8"))
        declared = _declared(tree)
        if declared is None:
            missing.append(m)
            continue
        unbound += [f"{m}.{n}" for n in declared if n not in _bound_names(tree)]
    assert missing == [] and unbound == []
    done = [m for m in sorted(NO_ALL_YET & set(MODULES))
            if _declared(ast.parse(MODULES[m].read_text(encoding="utf-8"))) is not None]
    assert done == [], "these declare __all__ now: remove them from NO_ALL_YET"
