"""One parsed file: the tree index, its names and bindings, and where nodes are.

One pass over the tree records parents, a pre/post numbering (so "A contains B" and
"A comes before B" are integer comparisons) and the nodes of each type. Name bindings
are collected per scope so the value-flow layer (``dataflow``) can follow a value back
through assignments in source order. Positions come from libcst's public
``PositionProvider``, one top-level statement at a time. Everything is syntactic: the
linted code is never imported or run.
"""
from __future__ import annotations

import ast
import bisect
import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from .finding import Edit, Finding, Fix
from .lines import split_lines
from .syntax import CONVENTIONS, SCOPES, Binding, N, ScopeNode, dotted

if TYPE_CHECKING:
    from .project import Project

_NEWLINE = re.compile(r"\r\n?|\n")


# Fields that hold only whitespace and punctuation: never walked.
_SKIP_FIELDS = frozenset({
    "lpar", "rpar", "lbracket", "rbracket", "lbrace", "rbrace", "leading_lines", "lines_after_decorators",
    "trailing_whitespace", "header", "footer", "comma", "semicolon", "equal", "colon", "indent",
    "default_indent", "default_newline", "encoding", "has_trailing_newline", "asynchronous", "dot", "star",
    "posonly_ind", "operator",
})
# Evaluation order where the dataclass field order differs: bindings come before their uses.
_ORDER = {
    cst.FunctionDef: ("decorators", "name", "params", "returns", "body"),
    cst.ClassDef: ("decorators", "name", "bases", "keywords", "body"),
    cst.ExceptHandler: ("type", "name", "body"),
    cst.Parameters: ("posonly_params", "params", "star_arg", "kwonly_params", "star_kwarg"),
    cst.IfExp: ("body", "test", "orelse"),
    cst.ListComp: ("for_in", "elt"),
    cst.SetComp: ("for_in", "elt"),
    cst.GeneratorExp: ("for_in", "elt"),
    cst.DictComp: ("for_in", "key", "value"),
}
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(kind: type) -> tuple[str, ...]:
    names = _FIELDS.get(kind)
    if names is None:
        names = _ORDER.get(kind) or tuple(
            f.name for f in dataclasses.fields(kind)
            if f.name not in _SKIP_FIELDS and not f.name.startswith("whitespace"))
        _FIELDS[kind] = names
    return names


class _Index:
    """Parents, pre/post numbers and nodes by type, from one walk over the tree.

    A plain walk over dataclass fields: libcst's visitor rebuilds every node it visits,
    which costs several times the parse itself. Whitespace and punctuation are skipped.
    """

    def __init__(self, module: cst.Module) -> None:
        self.parent: dict[int, cst.CSTNode] = {}
        self.pre: dict[int, int] = {}
        self.post: dict[int, int] = {}
        self.by_type: dict[type, list[cst.CSTNode]] = defaultdict(list)
        self.scope: dict[int, cst.CSTNode] = {}
        counter = 0
        stack: list[tuple[cst.CSTNode, cst.CSTNode | None, cst.CSTNode | None]] = [(module, None, None)]
        node_type = cst.CSTNode
        leaving = _LEAVING
        while stack:
            node, parent, scope = stack.pop()
            key = id(node)
            if parent is leaving:
                self.post[key] = counter
                counter += 1
                continue
            self.pre[key] = counter
            counter += 1
            if parent is not None:
                self.parent[key] = parent
                self.scope[key] = scope  # type: ignore[assignment]
            kind = type(node)
            self.by_type[kind].append(node)
            stack.append((node, leaving, None))
            inner = node if kind in _SCOPE_TYPES else scope
            children = []
            for name in _fields(kind):
                value = getattr(node, name)
                if isinstance(value, node_type):
                    children.append(value)
                elif isinstance(value, (tuple, list)):
                    children.extend(v for v in value if isinstance(v, node_type))
            for child in reversed(children):
                stack.append((child, node, inner))


_LEAVING = cst.Pass()  # marks the second visit of a node on the walk's stack
_SCOPE_TYPES = frozenset(SCOPES)


class Source:
    """One parsed file plus lazily built facts about it, shared by all rules."""

    def __init__(self, module: cst.Module, source: str, filename: str) -> None:
        self.module = module
        self.source = source
        self.filename = filename
        index = _Index(module)
        self._parent = index.parent
        self._pre = index.pre
        self._post = index.post
        self._by_type = index.by_type
        self._scope = index.scope
        self._positions: dict[cst.CSTNode, CodeRange] = {}
        self._statement_lines: dict[int, int] | None = None
        self._located: set[int] = set()
        self.project: Project | None = None  # set by the Project that loads this file
        self._loads: dict[tuple[int, str], list[cst.Name]] | None = None
        self._memo: dict[str, object] = {}
        self.imports = self._collect_imports()
        self.classes: dict[str, cst.ClassDef] = {c.name.value: c for c in self.nodes(cst.ClassDef)}
        self._bindings = self._collect_bindings()
        self._bound_names = {name for _, name in self._bindings}
        self._scopes_binding: dict[str, int] = defaultdict(int)
        for _, name in self._bindings:
            self._scopes_binding[name] += 1

    # --- structure -------------------------------------------------------------------------
    def nodes(self, kind: type[N]) -> list[N]:
        """All nodes of one type, in source order."""
        return self._by_type.get(kind, [])  # type: ignore[return-value]

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        return self._parent.get(id(node))

    def ancestors(self, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
        current = self._parent.get(id(node))
        while current is not None:
            yield current
            current = self._parent.get(id(current))

    def pre(self, node: cst.CSTNode) -> int:
        return self._pre[id(node)]

    def post(self, node: cst.CSTNode) -> int:
        return self._post[id(node)]

    def contains(self, outer: cst.CSTNode, inner: cst.CSTNode) -> bool:
        return self._pre[id(outer)] <= self._pre[id(inner)] < self._post[id(outer)]

    def scope(self, node: cst.CSTNode) -> ScopeNode:
        """The nearest enclosing function, class or module (not the node itself)."""
        return self._scope.get(id(node), self.module)  # type: ignore[return-value]

    def enclosing_class(self, node: cst.CSTNode) -> cst.ClassDef | None:
        for a in self.ancestors(node):
            if isinstance(a, cst.ClassDef):
                return a
        return None

    def inside(self, node: cst.CSTNode, kind: type[N], same_scope: bool = True) -> list[N]:
        """Nodes of ``kind`` within ``node``; by default not those in nested functions/classes."""
        start, end = self._pre[id(node)], self._post[id(node)]
        home = node if isinstance(node, SCOPES) else self.scope(node)
        candidates = self.nodes(kind)
        pres = self._pre
        lo = bisect.bisect_right(candidates, start, key=lambda n: pres[id(n)])
        hi = bisect.bisect_left(candidates, end, key=lambda n: pres[id(n)])
        return [n for n in candidates[lo:hi] if not same_scope or self.scope(n) is home]

    def statement(self, node: cst.CSTNode) -> cst.CSTNode:
        """The small statement (or compound statement header) that holds ``node``."""
        current = node
        for a in self.ancestors(node):
            if isinstance(a, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
                return current if isinstance(a, cst.SimpleStatementLine) else a
            current = a
        return current

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    # --- names -----------------------------------------------------------------------------
    def _collect_imports(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for imp in self.nodes(cst.Import):
            for alias in imp.names:
                full = dotted(alias.name)
                if full is None:
                    continue
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    found[alias.asname.name.value] = full
                else:
                    head = full.split(".")[0]
                    found[head] = head
        for imp in self.nodes(cst.ImportFrom):
            if isinstance(imp.names, cst.ImportStar):
                continue
            base = dotted(imp.module) if imp.module is not None else ""
            if base is None:
                continue
            if imp.relative:  # kept with its dots, for the project to resolve: ".model.Net"
                base = "." * len(imp.relative) + base
            elif not base:
                continue
            for alias in imp.names:
                name = dotted(alias.name)
                if name is None:
                    continue
                local = name
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    local = alias.asname.name.value
                found[local] = f"{base}.{name}" if not base.endswith(".") else base + name
        return found

    def imports_any(self, *roots: str) -> bool:
        """Whether the file imports a module under any of these top-level packages."""
        return any(full.split(".")[0] in roots for full in self.imports.values())

    def qualname(self, expr: cst.CSTNode | None, depth: int = 0) -> str | None:
        """The dotted name with import aliases resolved: ``F.softmax`` -> ``torch.nn.functional.softmax``;
        a module-level alias bound once (``_BN = nn.BatchNorm2d``) means what it names."""
        name = dotted(expr)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        base = self.imports.get(head)
        if base is None and head in CONVENTIONS and not self._bound_locally(head):
            base = CONVENTIONS[head]
        if base is None and depth < 4:
            alias = self._bindings.get((id(self.module), head), ())
            if len(alias) == 1 and self._scopes_binding[head] == 1 and isinstance(alias[0].value, (cst.Name, cst.Attribute)) and alias[0].index is None \
                    and dotted(alias[0].value) != head:
                base = self.qualname(alias[0].value, depth + 1)
        if base is None:
            return name
        return f"{base}.{rest}" if rest else base

    def callee(self, call: cst.Call) -> str | None:
        return self.qualname(call.func)

    def alternatives(self, expr: cst.CSTNode | None) -> list[str]:
        """What a module-level name bound more than once to plain names may mean, e.g. both
        branches of ``try: _BN = SyncBatchNorm`` / ``except ImportError: _BN = nn.BatchNorm2d``;
        empty unless every binding is such a name."""
        name = dotted(expr)
        if name is None or "." in name or name in self.imports:
            return []
        found = self._bindings.get((id(self.module), name), ())
        if len(found) < 2 or self._scopes_binding[name] != 1 or any(
                not isinstance(b.value, (cst.Name, cst.Attribute)) or b.index is not None for b in found):
            return []
        return [self.qualname(b.value, 1) or "" for b in found]

    def _bound_locally(self, name: str) -> bool:
        return name in self._bound_names

    # --- bindings --------------------------------------------------------------------------
    def _collect_bindings(self) -> dict[tuple[int, str], list[Binding]]:
        table: dict[tuple[int, str], list[Binding]] = defaultdict(list)

        def add(target: cst.CSTNode, value: cst.CSTNode | None, time: int, index: int | None = None,
                scope: cst.CSTNode | None = None) -> None:
            if isinstance(target, (cst.Tuple, cst.List)):
                for i, element in enumerate(target.elements):
                    inner = element.value
                    if isinstance(element, cst.StarredElement) or isinstance(inner, (cst.Tuple, cst.List)):
                        add(inner, None, time, None, scope)  # nested unpacking: not modelled
                    else:
                        add(inner, value, time, i if value is not None else None, scope)
                return
            name = dotted(target)
            if name is None:
                return
            home = scope if scope is not None else self.scope(target)
            if name.startswith("self."):
                home = self.enclosing_class(target) or home
            table[(id(home), name)].append(Binding(name, value, time, index))

        for node in self.nodes(cst.Assign):
            for t in node.targets:
                add(t.target, node.value, self.post(node))
        for node in self.nodes(cst.AnnAssign):
            if node.value is not None:
                add(node.target, node.value, self.post(node))
        for node in self.nodes(cst.AugAssign):
            add(node.target, node, self.post(node))
        for node in self.nodes(cst.NamedExpr):
            add(node.target, node.value, self.post(node))
        def add_loop_target(target: cst.CSTNode, loop: cst.For, path: tuple[int, ...]) -> None:
            if isinstance(target, (cst.Tuple, cst.List)):
                for i, element in enumerate(target.elements):
                    if isinstance(element, cst.StarredElement):
                        add(element.value, None, self.post(loop.target))
                    else:
                        add_loop_target(element.value, loop, (*path, i))
            elif isinstance(target, cst.Name):
                table[(id(self.scope(target)), target.value)].append(
                    Binding(target.value, loop, self.post(loop.target), path))
            else:
                add(target, None, self.post(loop.target))

        for node in self.nodes(cst.For):
            add_loop_target(node.target, node, ())
        for node in self.nodes(cst.CompFor):
            add(node.target, None, self.post(node.target))
        for node in self.nodes(cst.WithItem):
            if node.asname is not None:
                add(node.asname.name, node.item, self.post(node.asname))
        for node in self.nodes(cst.ExceptHandler):
            if node.name is not None:
                add(node.name.name, None, self.post(node.name))
        for node in self.nodes(cst.Del):
            add(node.target, None, self.post(node))
        for node in self.nodes(cst.Param):
            add(node.name, node, self.post(node), scope=self.scope(node))
        for node in self.nodes(cst.Call):  # self.add_module("head", m) / setattr(self, "head", m)
            registered = _registration(node)
            if registered is not None:
                cls = self.enclosing_class(node)
                if cls is not None:
                    table[(id(cls), f"self.{registered[0]}")].append(
                        Binding(f"self.{registered[0]}", registered[1], self.post(node)))
        for node in self.nodes(cst.FunctionDef) + self.nodes(cst.ClassDef):  # type: ignore[operator]
            add(node.name, None, self.post(node), scope=self.scope(node))
        for bindings in table.values():
            bindings.sort(key=lambda b: b.time)
        return table

    def bindings(self, name: str, at: cst.CSTNode) -> list[Binding]:
        """The bindings that may give ``name`` its value where ``at`` is.

        In a function: the last binding before ``at`` in source order (none if the name is
        only bound later, e.g. by a later loop iteration); names the function never binds
        come from enclosing functions or the module, all of whose bindings count. ``self.x``
        means every binding of it in the class.
        """
        if name.startswith("self."):
            cls = self.enclosing_class(at)
            return list(self._bindings.get((id(cls), name), [])) if cls is not None else []
        when = self._pre[id(at)]
        scope = self.scope(at)
        while True:
            found = self._bindings.get((id(scope), name))
            if found:
                if isinstance(scope, cst.Module) and scope is not self.scope(at):
                    return list(found)
                i = bisect.bisect_left(found, when, key=lambda b: b.time)
                return found[i - 1:i] if i else []
            if isinstance(scope, cst.Module):
                return []
            scope = self.scope(scope)
            while isinstance(scope, cst.ClassDef):
                scope = self.scope(scope)

    def binds(self, scope: cst.CSTNode, name: str) -> bool:
        """Whether ``scope`` itself binds ``name`` (a local or parameter, not a global)."""
        return (id(scope), name) in self._bindings

    def class_bindings(self, cls: cst.ClassDef, attr: str) -> list[Binding]:
        return list(self._bindings.get((id(cls), f"self.{attr}"), []))

    def loads(self, name: str, scope: cst.CSTNode) -> list[cst.Name]:
        """Uses of a plain name anywhere inside ``scope`` that are not assignment targets."""
        if self._loads is None:
            targets = set()
            for kind in (cst.AssignTarget, cst.AnnAssign, cst.AugAssign, cst.For, cst.CompFor):
                for node in self.nodes(kind):  # type: ignore[arg-type]
                    target = getattr(node, "target", None)
                    if isinstance(target, cst.Name):
                        targets.add(id(target))
            self._loads = defaultdict(list)
            for n in self.nodes(cst.Name):
                if id(n) not in targets:
                    self._loads[(id(self.scope(n)), n.value)].append(n)
        found = []
        for home in [scope, *self.inside(scope, cst.FunctionDef, same_scope=False),
                     *self.inside(scope, cst.ClassDef, same_scope=False)]:
            found.extend(self._loads.get((id(home), name), ()))
        return sorted(found, key=self.pre)

    def memo(self, key: str, compute: Callable[[], object]) -> object:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # --- reporting -------------------------------------------------------------------------
    def position(self, node: cst.CSTNode) -> CodeRange:
        """Where ``node`` is, as libcst's ``PositionProvider`` says.

        The provider runs on the top-level statement that holds the node, wrapped alone in a
        module (the same node objects, so no copy), and its lines are shifted by where that
        statement starts. Each statement is resolved at most once, so the cost is linear in
        the file, and small for a file with few findings.
        """
        found = self._positions.get(node)
        if found is not None:
            return found
        top = node
        for a in self.ancestors(node):
            if a is self.module:
                break
            top = a
        starts = self._statement_start()
        if id(top) not in starts or id(top) in self._located:
            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._positions.update(wrapper.resolve(PositionProvider))
            return self._positions[node]
        self._located.add(id(top))
        alone = self.module.with_changes(header=(), body=(top,), footer=())
        shift = starts[id(top)] - 1
        for key, where in MetadataWrapper(alone, unsafe_skip_copy=True).resolve(PositionProvider).items():
            if key is not alone:
                self._positions[key] = CodeRange((where.start.line + shift, where.start.column),
                                                 (where.end.line + shift, where.end.column))
        return self._positions[node]

    def _statement_start(self) -> dict[int, int]:
        """The first line of each top-level statement (its leading comments and blank lines included).

        Read from CPython's own parser (``ast`` line numbers, fast) where its statements line
        up with libcst's, else counted by generating each statement's code."""
        if self._statement_lines is None:
            self._statement_lines = self._starts_from_ast() or self._starts_from_code()
        return self._statement_lines

    def _starts_from_ast(self) -> dict[int, int] | None:
        try:
            tree = ast.parse(self.source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        found, i = {}, 0
        for top in self.module.body:
            if i >= len(tree.body):
                return None
            first = tree.body[i]
            if isinstance(top, cst.SimpleStatementLine):
                i += len(top.body)
            else:
                i += 1
            decorators = getattr(first, "decorator_list", None)
            line = first.lineno
            if decorators and getattr(top, "decorators", None):
                line = decorators[0].lineno - len(top.decorators[0].leading_lines)  # type: ignore[union-attr]
            found[id(top)] = line - len(top.leading_lines)
        return found if i == len(tree.body) else None

    def _starts_from_code(self) -> dict[int, int]:
        line = 1 + sum(len(_NEWLINE.findall(self.module.code_for_node(h))) for h in self.module.header)
        found = {}
        for top in self.module.body:
            found[id(top)] = line
            line += len(_NEWLINE.findall(self.module.code_for_node(top)))
        return found

    def report(self, code: str, node: cst.CSTNode, message: str, fix: Fix | None = None) -> Finding:
        r = self.position(node)
        return Finding(code, message, self.filename, r.start.line, r.start.column + 1,
                       r.end.line, r.end.column + 1, fix)

    def line(self, node: cst.CSTNode) -> int:
        return self.position(node).start.line

    def replace(self, node: cst.CSTNode, content: str) -> Edit:
        r = self.position(node)
        return Edit(content, r.start.line, r.start.column + 1, r.end.line, r.end.column + 1)

    def insert_before(self, stmt: cst.CSTNode, text: str) -> Edit | None:
        """Insert ``text`` as a new statement line above ``stmt``, with the same indentation.

        None when ``stmt`` does not start its own line (``a; b`` or ``for x in y: b``).
        """
        r = self.position(stmt)
        line = split_lines(self.source)[r.start.line - 1]
        indent = line[: r.start.column]
        if indent.strip():
            return None
        newline = "\r\n" if line.endswith("\r\n") else "\n"
        return Edit(f"{text}{newline}{indent}", r.start.line, r.start.column + 1,
                    r.start.line, r.start.column + 1)


def _registration(call: cst.Call) -> tuple[str, cst.BaseExpression] | None:
    """(attribute, value) for ``self.add_module("name", value)`` and ``setattr(self, "name", value)``
    with a literal name; None for anything else (a name built at run time is not followed)."""
    args = [a.value for a in call.args if a.keyword is None and not a.star]
    if isinstance(call.func, cst.Attribute) and call.func.attr.value in ("add_module", "register_module") \
            and dotted(call.func.value) == "self" and len(args) == 2:
        name, value = args
    elif isinstance(call.func, cst.Name) and call.func.value == "setattr" and len(args) == 3 \
            and dotted(args[0]) == "self":
        name, value = args[1:]
    else:
        return None
    if not isinstance(name, cst.SimpleString) or not isinstance(name.evaluated_value, str) \
            or not name.evaluated_value.isidentifier():
        return None
    return name.evaluated_value, value

