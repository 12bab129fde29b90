"""Import contracts of ``migrate/`` and ``checks/``, checked from source with :mod:`ast` (nothing is imported).

``collect(sources)`` turns a map ``module name -> (source text, is_package)`` into the import edges of every
module; the ``*_violations`` / ``cycles`` functions check one contract each over those edges and return
readable violations (empty when the contract holds). ``tests/test_architecture.py`` runs them over the real
tree and over small synthetic trees with one planted violation each.

What counts as an import of a module:

* ``import a.b`` / ``from a.b import c`` at any depth (module level, inside functions, classes, ``try``, ``if``);
  ``from a import b`` also imports ``a.b`` when that is a module of the tree; relative imports are resolved;
* ``importlib.import_module("a.b")`` / ``import_module(".b", __package__)`` / ``__import__("a")`` with a literal;
* a string literal that is exactly the name of a first-party module (``"checks.lint.cli"``): how a plugin table
  names the modules it will import.

Each edge records where it runs: ``module`` (on import), ``function`` (lazily, when a function runs) or
``typing`` (under ``if TYPE_CHECKING:``, never at run time). Bans count every edge; cycles count ``module``
and ``function`` edges (a lazy import that closes a circle still makes the modules depend on each other) but not
``typing`` ones, and not string literals.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FIRST_PARTY = ("migrate", "checks")
TF_PACKAGES = frozenset({"tensorflow", "keras", "tf_keras", "keras_hub", "tf2onnx"})
LINT_BANNED = frozenset({"torch", "tensorflow", "keras", "numpy"})


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (absolute dotted name)
    line: int
    where: str  # "module" | "function" | "typing"
    how: str  # "import" | "call" | "string"

    def describe(self) -> str:
        return f"{self.source}:{self.line} -> {self.target} ({self.how}, {self.where} level)"


def read_tree(root: Path, packages: Iterable[str] = FIRST_PARTY) -> dict[str, tuple[str, bool]]:
    """``module name -> (source, is_package)`` for every ``.py`` file of ``packages`` under ``root``."""
    sources: dict[str, tuple[str, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            sources[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def _resolve(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_call_target(call: ast.Call, module: str, is_package: bool) -> str | None:
    """The module a literal ``import_module(...)`` / ``__import__(...)`` call names, else None."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    text = first.value
    if name == "import_module" and text.startswith("."):
        level = len(text) - len(text.lstrip("."))
        return _resolve(module, is_package, text[level:] or None, level)
    return text


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: frozenset[str]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.edges: list[Edge] = []
        self._where = ["module"]

    def _add(self, target: str, node: ast.AST, how: str) -> None:
        if target:
            self.edges.append(Edge(self.module, target, getattr(node, "lineno", 0), self._where[-1], how))

    def _scoped(self, where: str, nodes: Iterable[ast.AST]) -> None:
        self._where.append(where if self._where[-1] != "typing" else "typing")
        for child in nodes:
            self.visit(child)
        self._where.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # decorators and defaults run when the def runs; the body runs when the function is called
        outer = [*getattr(node, "decorator_list", []), node.args]
        for child in outer:
            self.visit(child)
        body = node.body if isinstance(node.body, list) else [node.body]
        self._scoped("function", body)

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_type_checking(node.test):
            self._scoped("typing", node.body)
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node, "import")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.module, self.is_package, node.module, node.level)
        submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.known]
        if len(submodules) < len(node.names) or not submodules:
            self._add(base, node, "import")  # reads names the package's __init__ defines
        for name in submodules:  # only the submodules: the package itself is their ancestor, imported anyway
            self._add(name, node, "import")

    def visit_Call(self, node: ast.Call) -> None:
        target = _import_call_target(node, self.module, self.is_package)
        if target is not None:
            self._add(target, node, "call")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and node.value in self.known and node.value != self.module:
            self._add(node.value, node, "string")


def collect(sources: Mapping[str, tuple[str, bool]]) -> dict[str, list[Edge]]:
    """Every module's import edges (see the module docstring for what counts)."""
    known = frozenset(sources)
    edges: dict[str, list[Edge]] = {}
    for module, (text, is_package) in sources.items():
        collector = _Collector(module, is_package, known)
        collector.visit(ast.parse(text, filename=module))
        # an import call's literal is also a string constant: keep the call edge only
        calls = {(e.target, e.line) for e in collector.edges if e.how == "call"}
        edges[module] = [e for e in collector.edges if not (e.how == "string" and (e.target, e.line) in calls)]
    return edges


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _top(name: str) -> str:
    return name.split(".")[0]


def banned_imports(edges: Mapping[str, list[Edge]], banned: Iterable[str], *, inside: str = "",
                   outside: str = "") -> list[str]:
    """Direct imports of a ``banned`` top-level package by modules in ``inside`` (all when empty) that are not
    in ``outside``."""
    banned = frozenset(banned)
    return [edge.describe() for module, module_edges in sorted(edges.items())
            if (not inside or _in(module, inside)) and not (outside and _in(module, outside))
            for edge in module_edges if _top(edge.target) in banned]


def transitive_banned_imports(edges: Mapping[str, list[Edge]], package: str, banned: Iterable[str]) -> list[str]:
    """Imports of a ``banned`` package by ``package`` or any first-party module it reaches, with the path.

    A module that is imported is followed through all its run-time imports (module and function level); a
    package reached only as the ancestor of an imported module is followed through its module-level imports
    (importing ``a.b.c`` runs ``a/__init__``'s body, not its functions)."""
    banned = frozenset(banned)
    paths: dict[str, list[str]] = {}
    full: set[str] = set()
    queue: list[tuple[str, bool]] = []

    def reach(module: str, path: list[str], whole: bool) -> None:
        if module not in edges or module in full or (module in paths and not whole):
            return
        paths.setdefault(module, path)
        if whole:
            full.add(module)
        queue.append((module, whole))

    for module in sorted(edges):
        if _in(module, package):
            reach(module, [module], True)
    found: set[str] = set()
    while queue:
        module, whole = queue.pop(0)
        for edge in edges[module]:
            if edge.where == "typing" or edge.how == "string" or (not whole and edge.where != "module"):
                continue
            if _top(edge.target) in banned:
                found.add(" -> ".join(paths[module]) + f" -> {edge.target} (line {edge.line})")
            parts = edge.target.split(".")
            for i in range(1, len(parts)):
                reach(".".join(parts[:i]), [*paths[module], ".".join(parts[:i])], False)
            reach(edge.target, [*paths[module], edge.target], True)
    return sorted(found)


def package_imports(edges: Mapping[str, list[Edge]], source: str, target: str) -> list[str]:
    """Imports of anything in ``target`` by a module in ``source``."""
    return [edge.describe() for module, module_edges in sorted(edges.items()) if _in(module, source)
            for edge in module_edges if _in(edge.target, target)]


def cycles(edges: Mapping[str, list[Edge]], kinds: Iterable[str] = ("module", "function")) -> list[list[str]]:
    """Import cycles among the modules of ``edges`` (one per strongly connected component, as a closed path).

    An edge to ``a.b.c`` is an edge to that module only (its packages' ``__init__`` run first, but a package
    importing its own submodule is the normal layout, not a cycle)."""
    kinds = frozenset(kinds)
    graph: dict[str, set[str]] = {m: set() for m in edges}
    for module, module_edges in edges.items():
        for edge in module_edges:
            if edge.where in kinds and edge.how != "string" and edge.target in graph and edge.target != module:
                graph[module].add(edge.target)
    found = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            found.append(_cycle_path(graph, component))
    return sorted(found)


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    result.append(component)
    return result


def _cycle_path(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """One closed path through ``component``: the shortest cycle through its smallest module."""
    start = min(component)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


# ---- the contracts of docs/architecture.md, each a function of the edges returning its violations ----

#: the one module of ``migrate`` that may name ``checks`` modules: the CLI's plugin table (strings, imported only
#: when that subcommand is chosen). It is the composition root of the ``tf2torch`` command, above every API.
CLI_PLUGIN_TABLE = "migrate.cli"


def lint_imports_no_runtimes(edges: Mapping[str, list[Edge]]) -> list[str]:
    """``checks.lint`` reaches neither torch, TensorFlow, Keras nor numpy, through first-party modules too."""
    return transitive_banned_imports(edges, "checks.lint", LINT_BANNED)


def tf_only_in_migrate_tf(edges: Mapping[str, list[Edge]]) -> list[str]:
    """Nothing outside ``migrate.tf`` imports TensorFlow, Keras, tf_keras, keras_hub or tf2onnx."""
    return banned_imports(edges, TF_PACKAGES, outside="migrate.tf")


def migrate_imports_no_checks(edges: Mapping[str, list[Edge]]) -> list[str]:
    """``migrate`` never imports ``checks``; only ``migrate.cli``'s plugin table names ``checks.*.cli`` modules."""
    return [edge.describe() for module, module_edges in sorted(edges.items()) if _in(module, "migrate")
            for edge in module_edges if _in(edge.target, "checks")
            and not (module == CLI_PLUGIN_TABLE and edge.how == "string" and edge.target.endswith(".cli"))]


def conversion_and_porting_independent(edges: Mapping[str, list[Edge]]) -> list[str]:
    """``migrate.conversion`` and ``migrate.porting`` do not import each other (shared code is in ``migrate.core``)."""
    return [*package_imports(edges, "migrate.conversion", "migrate.porting"),
            *package_imports(edges, "migrate.porting", "migrate.conversion")]


def no_import_cycles(edges: Mapping[str, list[Edge]]) -> list[str]:
    """No import cycle among the modules, module-level and function-level imports both counted."""
    return [" -> ".join(cycle) for cycle in cycles(edges)]


CONTRACTS = {
    "lint_imports_no_runtimes": lint_imports_no_runtimes,
    "tf_only_in_migrate_tf": tf_only_in_migrate_tf,
    "migrate_imports_no_checks": migrate_imports_no_checks,
    "conversion_and_porting_independent": conversion_and_porting_independent,
    "no_import_cycles": no_import_cycles,
}
