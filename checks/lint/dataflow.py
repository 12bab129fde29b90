"""What crosses function boundaries inside one file: call edges, arguments, returns, batches.

The rules used to see a pitfall only when the model, the loss and the tensor met in one
function. Code is written as ``train(model, loader, ...)``, ``validate(model, ...)`` and a
``__main__`` block, so this layer answers the questions that need more than one function:

- which calls in the file call a function (plain names for functions, ``self.name`` for
  methods of the same class), and so what a parameter holds: the arguments given at every
  call site, which the rules follow only when they all agree;
- what a function returns (each ``return``, tuple elements, dict entries);
- what a ``for`` loop over a ``DataLoader`` yields: the ``__getitem__`` of a ``Dataset``
  class defined in the file, element by element;
- which functions train (``backward()`` and an optimizer step) and which put a
  parameter in eval or train mode.

Everything stays syntactic and inside the file. A function defined twice, a call through
``*args``, a parameter left to a default or a function with no caller in the file gives no
answer, and the rules stay silent.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import libcst as cst

if TYPE_CHECKING:
    from .context import FileContext

_LOADERS = ("torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader", "DataLoader")


class Flow:
    """Facts about one file's functions, built lazily and kept for all rules."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self._functions: dict[str, list[cst.FunctionDef]] | None = None
        self._calls: dict[str, list[cst.Call]] | None = None
        self._arguments: dict[int, list[cst.BaseExpression] | None] = {}
        self._sites: dict[int, tuple[list[cst.Call], set[int]]] = {}

    # --- functions and their callers -------------------------------------------------------
    def functions(self, name: str) -> list[cst.FunctionDef]:
        if self._functions is None:
            self._functions = {}
            for func in self.ctx.nodes(cst.FunctionDef):
                self._functions.setdefault(func.name.value, []).append(func)
        return self._functions.get(name, [])

    def calls_named(self, name: str) -> list[cst.Call]:
        """Calls whose callee's last part is ``name`` (``f(...)``, ``self.f(...)``, ``obj.f(...)``)."""
        from .context import dotted

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
        from .context import dotted

        name = func.name.value
        if len(self.functions(name)) != 1:
            return []
        cls = self.method_class(func)
        out = []
        for call in self.calls_named(name):
            callee = dotted(call.func)
            if cls is None and callee == name or cls is not None and callee == f"self.{name}" and self.ctx.enclosing_class(call) is cls:
                out.append(call)
        return out

    def method_class(self, func: cst.FunctionDef) -> cst.ClassDef | None:
        parent = self.ctx.scope(func)
        return parent if isinstance(parent, cst.ClassDef) else None

    def function_of(self, param: cst.Param) -> cst.FunctionDef | None:
        scope = self.ctx.scope(param)
        return scope if isinstance(scope, cst.FunctionDef) else None

    def arguments(self, param: cst.Param) -> list[cst.BaseExpression] | None:
        """The expressions every call site in the file passes for ``param`` (its default
        where a call leaves it out); None when there is no call site or one is unclear."""
        key = id(param)
        if key not in self._arguments:
            self._arguments[key] = None  # guards recursion
            self._arguments[key] = self._find_arguments(param)
        return self._arguments[key]

    def _find_arguments(self, param: cst.Param) -> list[cst.BaseExpression] | None:
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
        sites = self.call_sites(func)
        if not sites:
            return None
        found: list[cst.BaseExpression] = []
        for call in sites:
            given = _argument(call, index, name)
            if given is False:
                return None
            if given is None:
                if param.default is None:
                    return None
                given = param.default
            found.append(given)  # type: ignore[arg-type]
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
        loader = self.ctx.constructor(source)
        if loader is None or (self.ctx.callee(loader) or "") not in _LOADERS:
            return None
        from .context import arg

        dataset = self.ctx.constructor(arg(loader, 0, "dataset"))
        cls = self.ctx.classes.get(self.ctx.callee(dataset) or "") if dataset is not None else None
        getitem = self.method(cls, "__getitem__") if cls is not None else None
        if getitem is None:
            return None
        returns = self.returns(getitem)
        if len(returns) != 1:
            return None
        return self.element(returns[0], path[0])


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
