"""Walk a GraphModule once with real example inputs, tracking what each value *is* symbolically.

onnx2torch keeps ONNX's habit of computing shapes as int64 tensors (``Shape -> Gather -> Concat ->
Reshape``) and reads them back with ``.tolist()``/``torch.any`` at run time; under ``torch.export``
that is a data-dependent guard on the dynamic batch. The walker assigns each node an abstract value:

* ``Const`` - computable from initializers alone (folded later into a buffer);
* ``Sym``   - a 0-d/1-d integer (or float) tensor known element by element, each element a Python
  number or an fx Node that yields a Python int at run time (``x.size(0)`` -> a SymInt in export);
* ``None``  - an ordinary tensor.

Rules in ``shape_ops`` propagate ``Sym`` through shape arithmetic and rewrite consumers
(Reshape, Expand, Slice...) into plain torch calls taking those Python/SymInt values.
The real example values are computed alongside, so every rule can look at ranks and dtypes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

Item = int | float | bool | fx.Node

#: Const tensors up to this many elements may be read as Python numbers by shape rules.
_MAX_SHAPE_LEN = 64
#: Never fold a constant that grows past both this many elements and twice its inputs' size.
_MAX_FOLD_GROWTH = 1 << 16
_IMPURE_MARKERS = ("Random", "Bernoulli", "Multinomial", "Dropout")


@dataclass
class Const:
    """A value computable from constants alone (a tensor, or a tuple of them)."""

    value: Any


@dataclass
class Sym:
    """A 0-d (``scalar``) or 1-d numeric tensor known element by element."""

    items: list[Item]
    scalar: bool
    dtype: torch.dtype

    @property
    def literal(self) -> bool:
        return not any(isinstance(i, fx.Node) for i in self.items)


Value = Const | Sym | None
#: A rule returns a Sym (the node's new abstract value), a replacement Node, or None (leave it).
Rule = Callable[["Walker", fx.Node, Any], Sym | fx.Node | None]


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_numel(v) for v in value)
    return 1


class Walker:
    """One forward pass over ``gm`` that computes real values and abstract values, applying rules."""

    def __init__(self, gm: fx.GraphModule, rules: dict[str, Rule]) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.rules = rules
        self.real: dict[fx.Node, Any] = {}
        self.value: dict[fx.Node, Value] = {}
        self._cursor: fx.Node | None = None
        self._sizes: dict[tuple[fx.Node, int], fx.Node] = {}
        self._size_nodes: set[fx.Node] = set()
        self._replaced: dict[fx.Node, fx.Node] = {}
        self.rewritten: list[str] = []

    # ---- the walk -------------------------------------------------------------------------
    def run(self, example_inputs: tuple[torch.Tensor, ...]) -> Any:
        """Walk every node; return the real outputs of the original graph for the example."""
        inputs = iter(example_inputs)
        output: Any = None
        nodes = list(self.graph.nodes)
        position_of = {n: i for i, n in enumerate(nodes)}
        dying: dict[int, list[fx.Node]] = {}
        for i, n in enumerate(nodes):
            dying.setdefault(max((position_of[u] for u in n.users), default=i), []).append(n)
        with torch.no_grad():
            for position, node in enumerate(nodes):
                self._cursor = node
                if node.op == "placeholder":
                    self.real[node] = next(inputs)
                    self.value[node] = None
                elif node.op == "get_attr":
                    self.real[node] = self._fetch(node.target)
                    self.value[node] = Const(self.real[node])
                elif node.op == "output":
                    output = fx.node.map_arg(node.args[0], self.real.__getitem__)
                else:
                    self._visit(node)
                for done in dying.get(position, ()):
                    self._forget(done)
        return output

    def _forget(self, node: fx.Node) -> None:
        """Keep only shape and dtype of a large activation nothing later reads (bounds peak memory)."""
        for key in (node, self._replaced.get(node)):
            real = self.real.get(key)
            if isinstance(real, torch.Tensor) and real.numel() > _MAX_SHAPE_LEN and not real.is_meta \
                    and not isinstance(self.value.get(key), Const):
                self.real[key] = torch.empty(real.shape, dtype=real.dtype, device="meta")

    def _visit(self, node: fx.Node) -> None:
        args = fx.node.map_arg(node.args, self.real.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, self.real.__getitem__)
        self.real[node] = self._execute(node, args, kwargs)
        self.value[node] = None
        if self._foldable(node):
            self.value[node] = Const(self.real[node])
            return
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        rule = self.rules.get(type(module).__name__) if module is not None else None
        if rule is None:
            return
        result = rule(self, node, module)
        if isinstance(result, Sym):
            self.value[node] = result
        elif isinstance(result, fx.Node):
            self.real[result] = self.real[node]
            self.value[result] = None
            node.replace_all_uses_with(result)
            self._replaced[node] = result
            self.rewritten.append(type(module).__name__)

    def _execute(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        if node.op == "call_module":
            return self.gm.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def _fetch(self, target: str) -> Any:
        obj: Any = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def _foldable(self, node: fx.Node) -> bool:
        """All inputs constant, the op deterministic, and folding does not blow up the model size."""
        inputs = node.all_input_nodes
        if any(not isinstance(self.value.get(n), Const) for n in inputs):
            return False
        if node.op == "call_module":
            name = type(self.gm.get_submodule(node.target)).__name__
            if any(marker in name for marker in _IMPURE_MARKERS):
                return False
        elif node.op == "call_function" and getattr(node.target, "__name__", "").startswith(("rand", "bernoulli")):
            return False
        out = _numel(self.real[node])
        return out <= _MAX_FOLD_GROWTH or out <= 2 * sum(_numel(self.real[n]) for n in inputs)

    # ---- helpers for rules ----------------------------------------------------------------
    def const(self, arg: Any) -> Any:
        """The constant value of an argument (tensor or Python value), or None if not constant."""
        if isinstance(arg, fx.Node):
            value = self.value.get(arg)
            return value.value if isinstance(value, Const) else None
        return arg

    def sym(self, arg: Any) -> Sym | None:
        """``arg`` as a Sym: a Sym value, a small constant 0-d/1-d numeric tensor, or a Python number."""
        if isinstance(arg, (bool, int, float)):
            return Sym([arg], True, torch.float32 if isinstance(arg, float) else torch.int64)
        if not isinstance(arg, fx.Node):
            return None
        value = self.value.get(arg)
        if isinstance(value, Sym):
            return value
        if isinstance(value, Const) and isinstance(value.value, torch.Tensor):
            t = value.value
            if t.dim() <= 1 and t.numel() <= _MAX_SHAPE_LEN and not t.is_complex() and t.dtype != torch.bool:
                return Sym(t.reshape(-1).tolist(), t.dim() == 0, t.dtype)
        return None

    def ints(self, arg: Any) -> list[int] | None:
        """A constant list of Python ints (from a 0-d/1-d int tensor), or None."""
        s = self.sym(arg)
        if s is None or not s.literal or s.dtype.is_floating_point:
            return None
        return [int(i) for i in s.items]

    def rank(self, arg: fx.Node) -> int:
        return self.real[arg].dim()

    def emit(self, target: Callable, *args: Any, method: bool = False, **kwargs: Any) -> fx.Node:
        """Insert ``target(*args)`` (a call_method if ``method``) before the node being visited."""
        with self.graph.inserting_before(self._cursor):
            if method:
                node = self.graph.call_method(target, args, kwargs)
            else:
                node = self.graph.call_function(target, args, kwargs)
        real_args = fx.node.map_arg(args, self.real.__getitem__)
        real_kwargs = fx.node.map_arg(kwargs, self.real.__getitem__)
        with torch.no_grad():
            if method:
                self.real[node] = getattr(real_args[0], target)(*real_args[1:], **real_kwargs)
            else:
                self.real[node] = target(*real_args, **real_kwargs)
        self.value[node] = None
        return node

    def size(self, tensor: fx.Node, dim: int) -> fx.Node:
        """``tensor.size(dim)``: a Python int in eager mode, a SymInt under export (static dims fold)."""
        key = (tensor, dim)
        if key not in self._sizes:
            self._sizes[key] = self.emit("size", tensor, dim, method=True)
            self._size_nodes.add(self._sizes[key])
        return self._sizes[key]

    def is_size(self, item: Item) -> bool:
        """Whether ``item`` is a ``tensor.size(dim)`` node (a run-time int that is never negative)."""
        return isinstance(item, fx.Node) and item in self._size_nodes

    def arith(self, fn: Callable[[Any, Any], Any], a: Item, b: Item) -> Item:
        """``fn(a, b)`` on items: computed now for numbers, emitted as a node for run-time ints."""
        if isinstance(a, fx.Node) or isinstance(b, fx.Node):
            return self.emit(fn, a, b)
        return fn(a, b)

    def unary(self, fn: Callable[[Any], Any], a: Item) -> Item:
        return self.emit(fn, a) if isinstance(a, fx.Node) else fn(a)

    def neg_minus_one(self, a: Item) -> Item:
        """``-a - 1``: the index of element ``a`` counted from the other end (for reversed slices)."""
        return self.arith(operator.sub, self.unary(operator.neg, a), 1)
