"""What a rule sees of one file: the parsed source, its value flow, and the project around it.

``FileContext`` is a ``source.Source`` (tree index, bindings, positions) with the value-flow
layer (``dataflow.Flow``) and the project (``project.Project``) attached, so a rule can ask
"what built this model", "what does this value hold" and "where is class ``Net`` defined"
across the files of the linted tree.
"""
from __future__ import annotations

import libcst as cst

from .dataflow import Flow, StepFactory, agree
from .project import Project
from .source import Source
from .syntax import Hit

__all__ = ["FileContext"]


class FileContext(Source):
    """One parsed file plus lazily built facts about it, shared by all rules."""

    def __init__(self, module: cst.Module, source: str, filename: str,
                 project: Project[FileContext] | None = None) -> None:
        super().__init__(module, source, filename)
        self.project = project
        self.flow = Flow(self)
        self._import_heads = {full.split(".")[0] for full in self.imports.values()}

    def release(self) -> None:
        """Drop the tree and every fact about it (``Project.close``); the context is unusable after."""
        self.flow.__dict__.clear()
        self.__dict__.clear()

    # --- names across the project ----------------------------------------------------------
    def find(self, qual: str | None, depth: int = 0) -> tuple[FileContext, cst.CSTNode] | None:
        """The class or module-level function a qualified name means, and its file: defined in
        this file, or in a file of the project this one imports (re-exports followed)."""
        if not qual or depth > 8:
            return None
        head, _, rest = qual.partition(".")
        if not rest and head:
            if head in self.classes:
                return self, self.classes[head]
            funcs = self.flow.functions(head)
            if len(funcs) == 1 and self.scope(funcs[0]) is self.module:
                return self, funcs[0]
            full = self.imports.get(head)
            return self.find(full, depth + 1) if full and full != head else None
        if self.project is None or not (qual.startswith(".") or head in self._import_heads):
            return None
        found = self.project.module(self.filename, qual)
        if found is None or len(found[1]) != 1:
            return None
        there, (name,) = found
        return there.find(name, depth + 1)

    def find_class(self, qual: str | None) -> tuple[FileContext, cst.ClassDef] | None:
        found = self.find(qual)
        return found if found is not None and isinstance(found[1], cst.ClassDef) else None  # type: ignore[return-value]

    def canonical(self, qual: str | None) -> str | None:
        """A name for what ``qual`` means that is the same in every file of the project."""
        found = self.find(qual)
        if found is None:
            return qual
        there, node = found
        return f"{there.filename}:{node.name.value}"  # type: ignore[attr-defined]

    # --- value flow (see dataflow) ---------------------------------------------------------
    def trace(self, expr: object, factory: StepFactory) -> Hit | None:
        return self.flow.trace(expr, factory)

    def origin(self, expr: cst.CSTNode | None) -> tuple[FileContext, cst.Call] | None:
        return self.flow.origin(expr)

    def constructor(self, expr: cst.CSTNode | None) -> cst.Call | None:
        return self.flow.constructor(expr)

    def kind(self, expr: cst.CSTNode | None) -> str | None:
        return self.flow.kind(expr)

    agree = staticmethod(agree)
