"""The linted tree as one project: which file an import means, and who imports whom.

``tf2torch lint src/`` lints the files of ``src/`` together. An import is followed when it
names a file of that tree:

- relative imports (``from .model import Net``, ``from .. import utils``);
- package imports from the package root (``from mypkg.model import Net``, ``import mypkg.model as m``);
- sibling modules of a script (``from model import Net`` next to ``train.py``), and modules
  at the top of a path given on the command line;
- ``import network as net`` (then ``net.Net()``), re-exports in a package ``__init__.py``.

Everything else (installed packages, ``sys.path`` edits, ``importlib``, star imports) stays
unknown. The import graph comes from a cheap text scan, so a warm run parses nothing: it
decides which files a file's findings may depend on (``dependencies``), which the cache key
and the rules' text prefilter include. The parsed files themselves are loaded lazily, once per
process, only when a rule asks about a name another file defines.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C")
KEEP = 256  # parsed files kept per process: bounds memory on large trees

_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(\.*)[ \t]*([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)|import[ \t]+([^\n#;]+))",
    re.MULTILINE)
_NAME = re.compile(r"[A-Za-z_][\w.]*")


def scan_imports(text: str) -> list[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    """(level, module parts, imported names) of each import statement, read from the text.

    Also matches imports inside strings or functions: a dependency too many only makes the
    cache more careful."""
    out = []
    for match in _IMPORT.finditer(text):
        dots, module, names, plain = match.groups()
        if plain is not None:
            for item in plain.split(","):
                words = item.split()
                if words and _NAME.fullmatch(words[0]):
                    out.append((0, tuple(words[0].split(".")), ()))
            continue
        parts = tuple(p for p in module.split(".") if p)
        imported = tuple(w.split()[0] for w in names.strip("()").replace("\\", " ").split(",") if w.split())
        out.append((len(dots), parts, tuple(n for n in imported if n.isidentifier())))
    return out


@dataclass
class Tree:
    """The files of one run and the import edges between them (paths are normalised strings).

    Plain data, so it travels to worker processes."""

    files: frozenset[str]
    roots: tuple[str, ...] = ()
    edges: dict[str, tuple[str, ...]] = field(default_factory=dict)
    importers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    names: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)  # (importer, file): names, "*" = module
    _closure_cache: dict[str, frozenset[str]] | None = field(default=None, repr=False, compare=False)
    _roots_cache: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, texts: dict[str, str | None], roots: Iterable[str] = ()) -> Tree:
        tree = cls(frozenset(texts), tuple(os.path.normpath(r) for r in roots if os.path.isdir(r)))
        importers: dict[str, list[str]] = {}
        for path, text in texts.items():
            targets: list[str] = []
            imported: dict[str, set[str]] = {}
            for level, parts, names in scan_imports(text or ""):
                found = tree.module_file(path, level, parts)
                if found is not None:
                    targets.append(found)
                    imported.setdefault(found, set()).update(names or ("*",))
                for name in names:
                    sub = tree.module_file(path, level, (*parts, name))
                    if sub is not None:
                        targets.append(sub)
                        imported.setdefault(sub, set()).add("*")
            for target, names_ in imported.items():
                tree.names[(path, target)] = frozenset(names_)
            unique = tuple(dict.fromkeys(t for t in targets if t != path))
            tree.edges[path] = unique
            for target in unique:
                importers.setdefault(target, []).append(path)
        tree.importers = {k: tuple(v) for k, v in importers.items()}
        return tree

    def module_file(self, importer: str, level: int, parts: tuple[str, ...]) -> str | None:
        """The file of the tree that ``import``/``from`` names from ``importer``, else None."""
        if level:
            base = os.path.dirname(importer)
            for _ in range(level - 1):
                base = os.path.dirname(base)
            return self._in(base, parts)
        if not parts:
            return None
        for root in self._search_roots(importer):
            found = self._in(root, parts)
            if found is not None:
                return found
        return None

    def _search_roots(self, importer: str) -> list[str]:
        """The importer's folder (scripts import their siblings), the folder above its
        package, and the paths given on the command line."""
        folder = os.path.dirname(importer)
        if folder in self._roots_cache:
            return self._roots_cache[folder]
        top = folder
        while os.path.join(top, "__init__.py") in self.files:
            parent = os.path.dirname(top)
            if parent == top:
                break
            top = parent
        self._roots_cache[folder] = list(dict.fromkeys([folder, top, *self.roots]))
        return self._roots_cache[folder]

    def _in(self, base: str, parts: tuple[str, ...]) -> str | None:
        stem = os.path.join(base, *parts)
        for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
            if candidate in self.files:
                return candidate
        return None

    def dependencies(self, path: str) -> frozenset[str]:
        """Files whose content the findings of ``path`` may depend on: what it imports, directly
        or not, and the files that import it (they call its functions) with what they import."""
        closures = self._closures()
        found = set(closures.get(path, ()))
        for importer in self.importers.get(path, ()):
            found |= closures[importer]
        found.discard(path)
        return frozenset(found)

    def _closures(self) -> dict[str, frozenset[str]]:
        """Each file's transitive imports (itself included), from one pass over the strongly
        connected components (Tarjan's algorithm, iterative): linear in files plus edges,
        apart from the size of the sets themselves."""
        if self._closure_cache is not None:
            return self._closure_cache
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        closure: dict[str, frozenset[str]] = {}
        for start in sorted(self.files):
            if start in index:
                continue
            work = [(start, iter(self.edges.get(start, ())))]
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
                        work.append((child, iter(self.edges.get(child, ()))))
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
                    reach = set(component)
                    for member in component:
                        for target in self.edges.get(member, ()):
                            if target not in reach and target in closure:
                                reach |= closure[target]
                    frozen = frozenset(reach)
                    for member in component:
                        closure[member] = frozen
        self._closure_cache = closure
        return closure


class Project(Generic[C]):
    """One process's view of the tree: loads other files' contexts on demand, once each."""

    def __init__(self, tree: Tree, load: Callable[[str], C | None], keep: int = KEEP,
                 release: Callable[[C], None] | None = None) -> None:
        self.tree = tree
        self._load = load
        self._release = release  # see ``close``
        self._keep = keep
        self._loaded: OrderedDict[str, C | None] = OrderedDict()
        self._modules: dict[tuple[str, str], tuple[str, tuple[str, ...]] | None] = {}
        self.evicted = 0  # parsed files let go so far (see ``add``)

    def context(self, path: str) -> C | None:
        """The parsed file at ``path`` (None when it is not in the tree or cannot be parsed)."""
        if path in self._loaded:
            self._loaded.move_to_end(path)
            return self._loaded[path]
        self._loaded[path] = None  # guards recursion
        found = self._load(path) if path in self.tree.files else None
        self.add(path, found)
        return found

    def loaded(self, path: str) -> C | None:
        """The parsed file at ``path`` if this process has it already (nothing is parsed)."""
        if path in self._loaded:
            self._loaded.move_to_end(path)
        return self._loaded.get(path)

    def add(self, path: str, ctx: C | None) -> None:
        """Keep a parsed file (also the one being linted); the least recently used go first."""
        self._loaded[path] = ctx
        self._loaded.move_to_end(path)
        while len(self._loaded) > self._keep:
            self._loaded.popitem(last=False)
            self.evicted += 1

    def close(self) -> None:
        """Let every parsed file go, through ``release``: a parsed file's facts refer to each other
        and to other files, so without it their memory waits for a full garbage collection, which
        walks all of them (1.4 s after a serial run over timm, against 0.2 s this way)."""
        loaded = [ctx for ctx in self._loaded.values() if ctx is not None]
        self._loaded.clear()
        if self._release is not None:
            for ctx in loaded:
                self._release(ctx)

    def module(self, importer: str, dotted_name: str) -> tuple[C, tuple[str, ...]] | None:
        """The loaded file a qualified name points into and the attribute path left inside
        it: ``.model.Net`` from ``pkg/train.py`` is ``(pkg/model.py, ("Net",))``."""
        key = (os.path.dirname(importer), dotted_name)  # resolution depends only on the importer's folder
        if key not in self._modules:
            self._modules[key] = self._module_file(importer, dotted_name)
        found = self._modules[key]
        if found is None:
            return None
        ctx = self.context(found[0])
        return (ctx, found[1]) if ctx is not None else None

    def _module_file(self, importer: str, dotted_name: str) -> tuple[str, tuple[str, ...]] | None:
        level = len(dotted_name) - len(dotted_name.lstrip("."))
        parts = tuple(p for p in dotted_name[level:].split(".") if p)
        if not level and (not parts or self.tree.module_file(importer, 0, parts[:1]) is None):
            return None  # not a module of the tree (torch, numpy, ...)
        for k in range(len(parts), -1, -1):
            if k == 0 and not level:
                break
            found = self.tree.module_file(importer, level, parts[:k])
            if found is not None:
                return found, parts[k:]
        return None

    def _calls(self, path: str, name: str) -> bool:
        """Whether the file's text calls something named ``name`` (read before parsing it)."""
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            return False
        return re.search(rf"\b{re.escape(name)}\s*\(", text) is not None

    def callers(self, path: str, name: str) -> list[C]:
        """The files that may call ``name`` of ``path``, loaded: entry points (files no other file
        of the tree imports: scripts, ``main.py``, tests) that import ``name`` from it, or the
        whole module, and whose text calls it. Library modules importing each other are not
        searched, so a large package costs no more than its scripts."""
        out = []
        for other in self.tree.importers.get(path, ()):
            if self.tree.importers.get(other) or not (
                    self.tree.names.get((other, path), frozenset("*")) & {name, "*"} and self._calls(other, name)):
                continue
            ctx = self.context(other)
            if ctx is not None:
                out.append(ctx)
        return out
