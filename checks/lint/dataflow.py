"""Value flow: where a value was made, through names, calls, functions and files.

The rules ask two questions about an expression: what made it (``origin``: the constructor
call of a model or loss, possibly in another file of the project) and what it is
(``trace``: follow it back until a rule's step recognises something, e.g. a softmax).
This layer answers both, following:

- assignments in source order, tuple unpacking, ``self.x`` anywhere in the class,
  ``add_module``/``setattr`` registrations, module-level constants and class aliases;
- parameters: what every call site passes (in this file, and for module-level functions
  also in the files that import this one), else the parameter's default value;
- builder functions (``def build_model(): return Net()``), ``functools.partial`` of a
  class, and chains like ``Net().to(device).eval()``;
- what a function returns, element by element; ``for x, y in loader`` over a
  ``DataLoader`` of a ``Dataset`` class with one ``__getitem__`` return.

Names another file defines are found through ``project``. When candidates disagree or the
flow is not visible (``*args``, callbacks, containers, several definitions of one name),
the answer is None and the rules stay silent.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import libcst as cst

from .syntax import OBJECT_CHAIN, Hit, Unpacked, arg, dotted, method_name, receiver

Ctx = Any  # a FileContext (``context``): a Source with .flow, .project and .find; not imported, so no circle
StepFactory = Callable[[Any], Callable[[object], Hit | cst.CSTNode | None]]

_LOADERS = ("torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader", "DataLoader")
_PARTIAL = ("functools.partial", "partial")
MAX_DEPTH = 25


class Flow:
    """Facts about one file's functions, built lazily and kept for all rules."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self._functions: dict[str, list[cst.FunctionDef]] | None = None
        self._calls: dict[str, list[cst.Call]] | None = None
        self._arguments: dict[int, list[tuple[Ctx, cst.BaseExpression]] | None] = {}
        self._sites: dict[int, tuple[list[cst.Call], set[int]]] = {}
        self._traces: dict[tuple[int, StepFactory], Hit | None] = {}
        self._origins: dict[int, tuple[Ctx, cst.Call] | None] = {}
        self._steps: dict[StepFactory, Callable[[object], Hit | cst.CSTNode | None]] = {}

    # --- functions and their callers -------------------------------------------------------
    def functions(self, name: str) -> list[cst.FunctionDef]:
        if self._functions is None:
            self._functions = {}
            for func in self.ctx.nodes(cst.FunctionDef):
                self._functions.setdefault(func.name.value, []).append(func)
        return self._functions.get(name, [])

    def calls_named(self, name: str) -> list[cst.Call]:
        """Calls whose callee's last part is ``name`` (``f(...)``, ``self.f(...)``, ``obj.f(...)``)."""
        if self._calls is None:
            self._calls = {}
            for call in self.ctx.nodes(cst.Call):
                callee = dotted(call.func)
                if callee is not None:
                    self._calls.setdefault(callee.rsplit(".", 1)[-1], []).append(call)
        return self._calls.get(name, [])

    def call_sites(self, func: cst.FunctionDef) -> list[cst.Call]:
        """Calls of ``func`` in the file: ``name(...)`` for a function, ``self.name(...)`` in
        its class for a method. Empty when the name is defined more than once."""
        if id(func) not in self._sites:
            sites = self._find_call_sites(func)
            self._sites[id(func)] = (sites, {id(c) for c in sites})
        return self._sites[id(func)][0]

    def calls(self, call: cst.Call, func: cst.FunctionDef) -> bool:
        """Whether ``call`` is one of ``func``'s call sites."""
        self.call_sites(func)
        return id(call) in self._sites[id(func)][1]

    def _find_call_sites(self, func: cst.FunctionDef) -> list[cst.Call]:
        name = func.name.value
        cls = self.method_class(func)
        if cls is not None and name == "__init__":  # Net(...) calls Net.__init__
            return [c for c in self.calls_named(cls.name.value) if self._builds(self.ctx, c, cls)]
        if len(self.functions(name)) != 1:
            return []
        out = []
        for call in self.calls_named(name):
            callee = dotted(call.func)
            if cls is None and callee == name or cls is not None and callee == f"self.{name}" \
                    and self.ctx.enclosing_class(call) is cls:
                out.append(call)
        return out

    def remote_call_sites(self, func: cst.FunctionDef) -> list[tuple[Ctx, cst.Call]]:
        """Calls of a module-level function (or class, for ``__init__``) from the entry points
        that import this file (``from engine import train`` ... ``train(...)``, ``import engine as e``
        ... ``e.train(...)``); see ``Project.callers``."""
        project = self.ctx.project
        cls = self.method_class(func)
        if cls is not None and func.name.value == "__init__" and self.ctx.scope(cls) is self.ctx.module:
            wanted, target = cls.name.value, cls  # Net(...) in another file
        elif self.ctx.scope(func) is self.ctx.module and len(self.functions(func.name.value)) == 1:
            wanted, target = func.name.value, func
        else:
            return []
        if project is None:
            return []
        out = []
        for other in project.callers(self.ctx.filename, wanted):
            names = {wanted} | {alias for alias, full in other.imports.items() if full.rsplit(".", 1)[-1] == wanted}
            for name in names:
                for call in other.flow.calls_named(name):
                    if self._builds(other, call, target):
                        out.append((other, call))
        return out

    @staticmethod
    def _builds(where: Ctx, call: cst.Call, target: cst.CSTNode) -> bool:
        found = where.find(where.callee(call))
        return found is not None and found[1] is target

    def target(self, call: cst.Call) -> tuple[Ctx, cst.FunctionDef] | None:
        """The function a call runs, and its file: a function of the project by name, or a
        method of the enclosing class through ``self.name(...)``."""
        name = dotted(call.func)
        if name is None:
            return None
        if name.startswith("self.") and name.count(".") == 1:
            cls = self.ctx.enclosing_class(call)
            method = self.method(cls, name[5:]) if cls is not None else None
            return (self.ctx, method) if method is not None else None
        found = self.ctx.find(self.ctx.callee(call))
        return found if found is not None and isinstance(found[1], cst.FunctionDef) else None  # type: ignore[return-value]

    def method_class(self, func: cst.FunctionDef) -> cst.ClassDef | None:
        parent = self.ctx.scope(func)
        return parent if isinstance(parent, cst.ClassDef) else None

    def function_of(self, param: cst.Param) -> cst.FunctionDef | None:
        scope = self.ctx.scope(param)
        return scope if isinstance(scope, cst.FunctionDef) else None

    def arguments(self, param: cst.Param) -> list[tuple[Ctx, cst.BaseExpression]] | None:
        """What every call site passes for ``param`` (in this file and, for module-level
        functions, in the files importing it), with the file it is written in; the default
        where a call leaves it out, or where nothing calls the function. None when unclear."""
        key = id(param)
        if key not in self._arguments:
            self._arguments[key] = None  # guards recursion
            self._arguments[key] = self._find_arguments(param)
        return self._arguments[key]

    def _find_arguments(self, param: cst.Param) -> list[tuple[Ctx, cst.BaseExpression]] | None:
        func = self.function_of(param)
        if func is None:
            return None
        params = func.params
        positional = [*params.posonly_params, *params.params]
        if self.method_class(func) is not None:
            if not positional or any(isinstance(d.decorator, cst.Name) and d.decorator.value == "staticmethod"
                                     for d in func.decorators):
                return None
            positional = positional[1:]
            if param not in positional and param not in params.kwonly_params:
                return None  # self
        index = next((i for i, p in enumerate(positional) if p is param), None)
        if index is None and param not in params.kwonly_params:
            return None
        name = param.name.value
        sites = [(self.ctx, c) for c in self.call_sites(func)] + self.remote_call_sites(func)
        if not sites:
            return [(self.ctx, param.default)] if param.default is not None else None
        found: list[tuple[Ctx, cst.BaseExpression]] = []
        for where, call in sites:
            given = _argument(call, index, name)
            if given is False:
                return None
            if given is None:
                if param.default is None:
                    return None
                found.append((self.ctx, param.default))
            else:
                found.append((where, given))  # type: ignore[arg-type]
        return found

    # --- returns ---------------------------------------------------------------------------
    def returns(self, func: cst.FunctionDef) -> list[cst.BaseExpression]:
        return [r.value for r in self.ctx.inside(func, cst.Return) if r.value is not None]

    @staticmethod
    def element(value: cst.BaseExpression, index: int | str | None) -> cst.BaseExpression | None:
        """Element ``index`` of a returned tuple/list (int) or dict (str key); the value itself for None."""
        if index is None:
            return value
        if isinstance(index, int) and isinstance(value, (cst.Tuple, cst.List)):
            elements = value.elements
            if any(isinstance(e, cst.StarredElement) for e in elements) or not -len(elements) <= index < len(elements):
                return None
            return elements[index].value
        if isinstance(index, str) and isinstance(value, cst.Dict):
            for e in value.elements:
                if isinstance(e, cst.DictElement) and isinstance(e.key, cst.SimpleString) \
                        and e.key.evaluated_value == index:
                    return e.value
        return None

    def method(self, cls: cst.ClassDef, name: str) -> cst.FunctionDef | None:
        return next((f for f in self.ctx.inside(cls, cst.FunctionDef) if f.name.value == name), None)

    # --- data loaders ----------------------------------------------------------------------
    def batch_element(self, loop: cst.For, path: tuple[int, ...]) -> cst.BaseExpression | None:
        """What ``for x, y in loader`` binds at ``path`` when ``loader`` is a DataLoader over
        a Dataset class of this file: that element of its ``__getitem__``'s single return."""
        source: cst.BaseExpression = loop.iter
        if isinstance(source, cst.Call) and self.ctx.callee(source) == "enumerate":
            if not path or path[0] != 1:
                return None
            source, path = source.args[0].value if source.args else None, path[1:]  # type: ignore[assignment]
        if len(path) != 1:
            return None
        loader = self.constructor(source)
        if loader is None or (self.ctx.callee(loader) or "") not in _LOADERS:
            return None
        dataset = self.constructor(arg(loader, 0, "dataset"))
        cls = self.ctx.classes.get(self.ctx.callee(dataset) or "") if dataset is not None else None
        getitem = self.method(cls, "__getitem__") if cls is not None else None
        if getitem is None:
            return None
        returns = self.returns(getitem)
        if len(returns) != 1:
            return None
        return self.element(returns[0], path[0])

    # --- tracing values --------------------------------------------------------------------
    def step(self, factory: StepFactory) -> Callable[[object], Hit | cst.CSTNode | None]:
        if factory not in self._steps:
            self._steps[factory] = factory(self.ctx)
        return self._steps[factory]

    def trace(self, expr: object, factory: StepFactory, depth: int = 0) -> Hit | None:
        """Follow a value back to where it was made.

        ``factory(ctx)`` gives the step for one file: it looks at one expression and returns a
        Hit (found), another node to follow (e.g. the receiver of ``.float()``), or None
        (unknown: stop). Names it returns None for are followed through their bindings,
        parameters through their arguments (possibly in other files); all candidates must
        agree. A Hit's ``home`` is the file its origin is in.
        """
        if depth > MAX_DEPTH or expr is None:
            return None
        ctx = self.ctx
        result = self.step(factory)(expr)
        if isinstance(result, Hit):
            return result if result.home is not None else dataclasses.replace(result, home=ctx)
        if result is not None:
            return self.trace(result, factory, depth + 1)
        if isinstance(expr, cst.Param):
            key = (id(expr), factory)
            if key not in self._traces:
                self._traces[key] = None  # guards recursion
                given = self.arguments(expr) or [(ctx, None)]
                self._traces[key] = agree([where.flow.trace(a, factory, depth + 1) for where, a in given])
            return self._traces[key]
        if not isinstance(expr, (cst.Name, cst.Attribute)):
            return None
        name = dotted(expr)
        if name is None:
            return None
        candidates = ctx.bindings(name, expr)
        if not candidates:
            return None
        hits = []
        for b in candidates:
            if b.value is None:
                return None
            value = _unpacked(b.value, b.index) or Unpacked(b.value, b.index) if b.index is not None else b.value
            hit = self.trace(value, factory, depth + 1)
            if hit is None:
                return None
            hits.append(hit)
        return agree(hits)

    # --- what built an object --------------------------------------------------------------
    def origin(self, expr: cst.CSTNode | None, depth: int = 0) -> tuple[Ctx, cst.Call] | None:
        """The constructor call that built the object ``expr`` refers to, and its file: through
        names, ``self.x`` (also ``add_module``/``setattr``), attributes of project classes,
        parameters, builder functions, ``partial`` and chains like ``Net().to(device).eval()``.

        Memoised per node (builder functions that return other builders' results would otherwise
        be walked again for every use: exponential on timm); the memo's None entry guards recursion."""
        if expr is None or depth > 12:
            return None
        if id(expr) not in self._origins:
            self._origins[id(expr)] = None
            self._origins[id(expr)] = self._origin(expr, depth)
        return self._origins[id(expr)]

    def _origin(self, expr: cst.CSTNode, depth: int) -> tuple[Ctx, cst.Call] | None:
        ctx = self.ctx
        if isinstance(expr, cst.Call):
            if method_name(expr) in OBJECT_CHAIN:
                return self.origin(receiver(expr), depth + 1)
            return self._built_by(expr, depth)
        if isinstance(expr, cst.Param):
            given = self.arguments(expr)
            return _same_kind([where.flow.origin(a, depth + 1) for where, a in given] if given else [])
        if isinstance(expr, (cst.Name, cst.Attribute)):
            name = dotted(expr)
            found = ctx.bindings(name, expr) if name else []
            if found:
                values = [_unpacked(b.value, b.index) for b in found]
                if any(v is None for v in values):
                    return None
                return _same_kind([self.origin(v, depth + 1) for v in values])
            if isinstance(expr, cst.Attribute):
                owner = self.origin(expr.value, depth + 1)
                home = owner[0].find_class(owner[0].callee(owner[1])) if owner is not None else None
                if home is not None:
                    there, cls = home
                    values = there.class_bindings(cls, expr.attr.value)
                    if any(b.value is None or b.index is not None for b in values):
                        return None
                    return _same_kind([there.flow.origin(b.value, depth + 1) for b in values])
        return None

    def _built_by(self, call: cst.Call, depth: int) -> tuple[Ctx, cst.Call] | None:
        """``call`` itself, unless it calls a builder function of the project (then what that
        returns) or a ``partial`` object (then the call that made the partial)."""
        ctx = self.ctx
        if isinstance(call.func, (cst.Name, cst.Attribute)) and dotted(call.func) != "self":
            target = ctx.find(ctx.callee(call))
            if target is not None and isinstance(target[1], cst.FunctionDef):
                there, func = target
                if there.flow.method_class(func) is None:
                    returns = there.flow.returns(func)
                    return _same_kind([there.flow.origin(r, depth + 1) for r in returns]) if returns else None
            made = self.origin(call.func, depth + 1) if not isinstance(call.func, cst.Call) else None
            if made is not None and (made[0].callee(made[1]) or "") in _PARTIAL:
                return made
        return ctx, call

    def constructor(self, expr: cst.CSTNode | None) -> cst.Call | None:
        """``origin`` when the constructor is written in this file, else None."""
        found = self.origin(expr)
        return found[1] if found is not None and found[0] is self.ctx else None

    def kind(self, expr: cst.CSTNode | None) -> str | None:
        """The qualified name of what built ``expr`` (``torch.nn.CrossEntropyLoss``), in the
        names of the file the constructor is written in; a ``partial`` gives what it wraps."""
        found = self.origin(expr)
        if found is None:
            return None
        there, call = found
        qual = there.callee(call)
        if qual in _PARTIAL:
            return there.qualname(arg(call, 0, "func"))
        return qual


def agree(hits: list[Hit | None]) -> Hit | None:
    """The last hit when every candidate found one and all have the same tag."""
    if not hits or any(h is None for h in hits) or len({h.tag for h in hits}) != 1:  # type: ignore[union-attr]
        return None
    return hits[-1]


def _same_kind(found: list[tuple[Ctx, cst.Call] | None]) -> tuple[Ctx, cst.Call] | None:
    """The last origin when all were found and call the same constructor."""
    if not found or any(f is None for f in found):
        return None
    if len({f[0].canonical(f[0].callee(f[1])) for f in found}) != 1:  # type: ignore[index]
        return None
    return found[-1]


def _unpacked(value: cst.CSTNode | None, index: int | tuple[int, ...] | None) -> cst.CSTNode | None:
    """The element ``a, b = x, y`` binds (a literal tuple on the right), the value itself without
    unpacking, else None."""
    if index is None:
        return value
    if isinstance(index, int) and isinstance(value, (cst.Tuple, cst.List)):
        return Flow.element(value, index)
    return None


def _argument(call: cst.Call, index: int | None, keyword: str) -> cst.BaseExpression | None | bool:
    """The argument for a parameter: by keyword, else by position; None when not given;
    False when ``*args``/``**kwargs`` make it unknowable."""
    for a in call.args:
        if a.keyword is not None and a.keyword.value == keyword:
            return a.value
    position = 0
    for a in call.args:
        if a.star:
            return False
        if a.keyword is not None:
            continue
        if position == index:
            return a.value
        position += 1
    return None
