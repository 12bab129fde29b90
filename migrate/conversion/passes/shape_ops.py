"""Per-op rules for the walker, keyed by onnx2torch module class name.

Two kinds of rules, often in one function:

* propagation - shape arithmetic on a ``Sym`` (Shape, Gather, Slice, Concat, Cast, Add/Sub/Mul/Div...)
  yields another ``Sym``; the original nodes stay for any tensor consumer and die if unused;
* rewriting - an op that onnx2torch implements by reading a tensor's *values* (Reshape's shape,
  Slice's starts, Resize's sizes, Tile's repeats...) becomes a plain torch call whose arguments are
  Python ints or run-time SymInt nodes, so ``torch.export`` sees no data-dependent guard.

Every rule returns None when its inputs are not what it can prove, leaving the node untouched.
ONNX semantics are reproduced exactly where onnx2torch approximates them (Range keeps the input
dtype; Expand is bidirectional broadcasting).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from migrate.conversion.passes.values import Item, Rule, Sym, Walker

#: Slice bounds at least this large mean 'to the end' (no tensor dim gets near it).
_HUGE = 10**9


def _trunc_div(a: Any, b: Any) -> Any:
    """ONNX integer Div truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# ---- propagation ---------------------------------------------------------------------------

def shape(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    x = node.args[0]
    start, end = getattr(module, "_start", 0), getattr(module, "_end", None)
    src = w.value.get(x)
    if isinstance(src, Sym):
        dims: list[Item] = [] if src.scalar else [len(src.items)]
    else:
        dims = [w.size(x, i) for i in range(w.rank(x))]
    return Sym(dims[start:end], False, torch.int64)


def gather(w: Walker, node: fx.Node, module: Any) -> Sym | fx.Node | None:
    data, indices = node.args[0], node.args[1]
    axis = getattr(module, "_axis", 0)
    idx = w.ints(indices)
    if idx is None:
        return None
    src = w.value.get(data)
    scalar_index = w.real[indices].dim() == 0
    if isinstance(src, Sym) and not src.scalar and axis in (0, -1):
        n = len(src.items)
        return Sym([src.items[i + n if i < 0 else i] for i in idx], scalar_index, src.dtype)
    if not isinstance(src, Sym) and scalar_index:
        return w.emit(torch.select, data, axis, idx[0])
    return None


def slice_(w: Walker, node: fx.Node, module: Any) -> Sym | fx.Node | None:
    data = node.args[0]
    starts, ends = w.sym(node.args[1]), w.sym(node.args[2])
    rank = w.rank(data)
    axes = w.ints(node.args[3]) if len(node.args) > 3 and node.args[3] is not None else None
    steps = w.ints(node.args[4]) if len(node.args) > 4 and node.args[4] is not None else None
    if starts is None or ends is None or (len(node.args) > 3 and node.args[3] is not None and axes is None) \
            or (len(node.args) > 4 and node.args[4] is not None and steps is None):
        return None
    axes = [a + rank if a < 0 else a for a in (axes if axes is not None else range(len(starts.items)))]
    steps = steps if steps is not None else [1] * len(axes)
    src = w.value.get(data)
    if isinstance(src, Sym):
        if src.scalar or axes != [0] or not starts.literal or not ends.literal:
            return None
        return Sym(src.items[slice(int(starts.items[0]), int(ends.items[0]), steps[0])], False, src.dtype)
    flips: list[int] = []
    slices: dict[int, slice] = {}
    for start, end, axis, step in zip(starts.items, ends.items, axes, steps):
        if step < 0:  # slice the flipped tensor forwards, as onnx2torch does
            flips.append(axis)
            start, end, step = w.neg_minus_one(start), w.neg_minus_one(end), -step
        slices[axis] = slice(_clip(start, False), _clip(end, True), None if step == 1 else step)
    x = w.emit(torch.flip, data, flips) if flips else data
    index = tuple(slices.get(a, slice(None)) for a in range(max(slices) + 1))
    return w.emit(operator.getitem, x, index)


def _clip(v: Item, end: bool) -> Item:
    """ONNX writes 'to the end' as a huge bound (INT64/INT32 max, 1e9); Python slicing wants None.

    Keeping the literal would make torch.export guard the dynamic dim against it.
    """
    if isinstance(v, int) and v >= _HUGE:
        return None
    if isinstance(v, int) and v <= -_HUGE:
        return 0 if end else None
    return v


def concat(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    parts = [w.sym(a) for a in node.args]
    if getattr(module, "axis", 0) not in (0, -1) or any(p is None or p.scalar for p in parts):
        return None
    if not any(isinstance(w.value.get(a), Sym) for a in node.args):
        return None
    dtype = parts[0].dtype
    return Sym([i for p in parts for i in p.items], False, dtype)


def unsqueeze(w: Walker, node: fx.Node, module: Any) -> Sym | fx.Node | None:
    data = node.args[0]
    axes = getattr(module, "_axes", None)
    if axes is None:
        axes = w.ints(node.args[1]) if len(node.args) > 1 else None
        if axes is None:
            return None
    src = w.value.get(data)
    if isinstance(src, Sym):
        return Sym(list(src.items), False, src.dtype) if src.scalar and list(axes) in ([0], [-1]) else None
    if hasattr(module, "_axes"):
        return None
    out_rank = w.rank(data) + len(axes)
    x = data
    for axis in sorted(a + out_rank if a < 0 else a for a in axes):
        x = w.emit(torch.unsqueeze, x, axis)
    return x


def squeeze(w: Walker, node: fx.Node, module: Any) -> Sym | fx.Node | None:
    data = node.args[0]
    static = hasattr(module, "axes")
    axes = module.axes if static else (w.ints(node.args[1]) if len(node.args) > 1 and node.args[1] is not None
                                        else [])
    if axes is None:
        return None
    src = w.value.get(data)
    if isinstance(src, Sym):
        ok = not src.scalar and len(src.items) == 1 and list(axes or []) in ([], [0], [-1])
        return Sym(list(src.items), True, src.dtype) if ok else None
    if static or not axes:
        return None
    rank = w.rank(data)
    return w.emit(torch.squeeze, data, tuple(sorted(a + rank if a < 0 else a for a in axes)))


def reshape(w: Walker, node: fx.Node, module: Any) -> Sym | fx.Node | None:
    data, target = node.args[0], node.args[1]
    dims = w.sym(target)
    if dims is None or dims.scalar:
        return None
    src = w.value.get(data)
    if isinstance(src, Sym):
        if not dims.literal or len(dims.items) > 1:
            return None
        return Sym(list(src.items), not dims.items, src.dtype)
    items = [w.size(data, i) if isinstance(d, int) and d == 0 else d for i, d in enumerate(dims.items)]
    return w.emit(torch.reshape, data, items)


def cast(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    src = w.value.get(node.args[0])
    dtype = module.torch_dtype
    if not isinstance(src, Sym) or dtype in (torch.bool,) or dtype.is_complex:
        return None
    if dtype.is_floating_point or not src.dtype.is_floating_point:
        return Sym(list(src.items), src.scalar, dtype)
    return Sym([w.unary(torch.sym_int, i) if isinstance(i, fx.Node) else int(i) for i in src.items],
               src.scalar, dtype)


def _elementwise(w: Walker, node: fx.Node, fn_for: Any) -> Sym | None:
    operands = [w.sym(a) for a in node.args]
    if any(o is None for o in operands) or not any(isinstance(w.value.get(a), Sym) for a in node.args):
        return None
    lengths = {len(o.items) for o in operands if not o.scalar and len(o.items) != 1}
    if len(lengths) > 1:
        return None
    n = lengths.pop() if lengths else 1
    dtype = operands[0].dtype
    for o in operands[1:]:
        dtype = torch.promote_types(dtype, o.dtype)
    fn = fn_for(dtype)
    if fn is None:
        return None
    items: list[Item] = []
    for k in range(n):
        acc = operands[0].items[k if len(operands[0].items) > 1 else 0]
        for o in operands[1:]:
            acc = w.arith(fn, acc, o.items[k if len(o.items) > 1 else 0])
        items.append(acc)
    return Sym(items, all(o.scalar for o in operands), dtype)


def binary(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    if getattr(module, "broadcast", None) == 1:
        return None
    op = getattr(module.math_op_function, "__name__", "")

    def fn_for(dtype: torch.dtype) -> Any:
        if op == "add":
            return operator.add
        if op == "sub":
            return operator.sub
        if op == "mul":
            return operator.mul
        if "div" in op:  # onnx2torch's _onnx_div: true division for floats, truncation for ints
            return operator.truediv if dtype.is_floating_point else _sym_trunc_div
        return None

    return _elementwise(w, node, fn_for)


def _sym_trunc_div(a: Any, b: Any) -> Any:
    """Truncating division for numbers; for run-time dims (never negative) it is floor division."""
    if isinstance(a, int) and isinstance(b, int):
        return _trunc_div(a, b)
    return a // b


def compare(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    """Comparisons on shape items: computed for numbers, and decided for a run-time size against a negative number.

    Sizes are never negative, so ``size == -1`` is False whatever the size: tf2onnx writes TF's
    ``Slice(size=-1 means 'to the end')`` as ``end = begin + size + INT_MAX * (size == -1)``, which would
    otherwise leave the slice's end a tensor read at run time (GuardOnDataDependentSymNode under export).
    """
    operands = [w.sym(a) for a in node.args]
    if any(o is None for o in operands) or not any(isinstance(w.value.get(a), Sym) for a in node.args):
        return None
    a, b = operands
    if len(a.items) != len(b.items) and 1 not in (len(a.items), len(b.items)):
        return None
    n = max(len(a.items), len(b.items))
    items: list[Item] = []
    for k in range(n):
        pair = [a.items[k if len(a.items) > 1 else 0], b.items[k if len(b.items) > 1 else 0]]
        if any(isinstance(i, fx.Node) for i in pair):
            other = pair[1] if isinstance(pair[0], fx.Node) else pair[0]
            if not all(w.is_size(i) for i in pair if isinstance(i, fx.Node)) or isinstance(other, fx.Node) \
                    or other >= 0:
                return None
            pair = [0 if isinstance(i, fx.Node) else i for i in pair]  # any size compares as 0 does with it
        items.append(bool(module.compare_function(torch.tensor(pair[0]), torch.tensor(pair[1]))))
    return Sym(items, a.scalar and b.scalar, torch.bool)


def min_max(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    op = getattr(module, "_operator", None)
    fn = torch.sym_max if op is torch.amax else torch.sym_min if op is torch.amin else None
    return _elementwise(w, node, lambda dtype: fn)


def rounding(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    src = w.value.get(node.args[0])
    fn = {torch.floor: math.floor, torch.ceil: math.ceil}.get(module.round_function)
    if not isinstance(src, Sym) or fn is None:
        return None
    return Sym([w.unary(fn, i) if isinstance(i, fx.Node) else float(fn(i)) for i in src.items],
               src.scalar, src.dtype)


def reduce(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    src = w.value.get(node.args[0])
    # onnx2torch's modules carry operation_type; tf2torch's opset-18 Reduce (converters/reduce.py) carries op.
    op = getattr(module, "operation_type", None) or getattr(module, "op", None) or (
        "ReduceSum" if type(module).__name__.startswith("OnnxReduceSum") else "")
    fn = {"ReduceProd": operator.mul, "ReduceSum": operator.add,
          "ReduceMax": torch.sym_max, "ReduceMin": torch.sym_min}.get(op)
    axes = getattr(module, "axes", getattr(module, "_axes", None))
    keepdims = bool(getattr(module, "keepdims", getattr(module, "_keepdims", 1)))
    if not isinstance(src, Sym) or src.scalar or fn is None or list(axes or [0]) not in ([0], [-1]) \
            or len(node.args) > 1:
        return None
    acc = src.items[0]
    for item in src.items[1:]:
        acc = w.arith(fn, acc, item)
    return Sym([acc], not keepdims, src.dtype)


def identity(w: Walker, node: fx.Node, module: Any) -> Sym | None:
    src = w.value.get(node.args[0])
    return Sym(list(src.items), src.scalar, src.dtype) if isinstance(src, Sym) else None


# ---- rewriting consumers -------------------------------------------------------------------

def _tensor(w: Walker, arg: Any) -> bool:
    """A tensor argument (run-time or constant), not a shape vector."""
    return isinstance(arg, fx.Node) and not isinstance(w.value.get(arg), Sym)


def expand(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    data, target = node.args[0], node.args[1]
    dims = w.sym(target)
    if not _tensor(w, data) or dims is None or dims.scalar:
        return None
    x_shape = list(w.real[data].shape)
    rank = max(len(x_shape), len(dims.items))
    padded: list[Item] = [1] * (rank - len(dims.items)) + list(dims.items)
    x_padded = [None] * (rank - len(x_shape)) + x_shape
    sizes: list[Item] = []
    for want, have in zip(padded, x_padded):
        # ONNX broadcasts both ways: a 1 in the target keeps the input's dim, as does any target
        # dim where the input's own dim is not 1.
        keep = have is not None and (want == 1 or have != 1)
        sizes.append(-1 if keep else want)
    return w.emit("expand", data, sizes, method=True)


def tile(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    data, repeats = node.args[0], w.sym(node.args[1])
    if not _tensor(w, data) or repeats is None or repeats.scalar:
        return None
    return w.emit("repeat", data, list(repeats.items), method=True)


def constant_of_shape(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    dims = w.sym(node.args[0])
    if dims is None or dims.scalar:
        return None
    value = module.value
    return w.emit(torch.full, list(dims.items), value.item(), dtype=value.dtype)


def range_(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    bounds = [w.sym(a) for a in node.args[:3]]
    if any(b is None or len(b.items) != 1 for b in bounds):
        return None
    dtype = bounds[0].dtype
    items = [b.items[0] for b in bounds]
    if all(_integral(w, i) for i in items):
        # A float Range over whole numbers (Keras' positions: range(0.0, float(length), 1.0)) counts in ints:
        # float bounds would give torch.export the length ceil(float(s) / 1.0), which it cannot prove is s.
        items = [i if isinstance(i, fx.Node) else int(i) for i in items]
    return w.emit(torch.arange, *items, dtype=dtype)


def _integral(w: Walker, item: Item) -> bool:
    """A whole number: a Python int or integral float literal, or a run-time value that is a Python int."""
    if isinstance(item, fx.Node):
        value = w.real.get(item)
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(item, bool) and (isinstance(item, int) or float(item).is_integer())


def resize(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    data = node.args[0]
    if not _tensor(w, data) or not getattr(module, "ignore_roi", True):
        return None
    scales = w.sym(node.args[2]) if len(node.args) > 2 and node.args[2] is not None else None
    sizes = w.sym(node.args[3]) if len(node.args) > 3 and node.args[3] is not None else None
    spatial = w.rank(data) - 2
    from onnx2torch.node_converters.resize import _onnx_mode_to_torch_mode

    mode = _onnx_mode_to_torch_mode(module.onnx_mode, spatial)
    kwargs: dict[str, Any] = {"mode": mode, "align_corners": module.align_corners}
    if sizes is not None and sizes.items:
        kwargs["size"] = list(sizes.items[2:])
    elif scales is not None and scales.items and scales.literal:
        if [float(s) for s in scales.items[:2]] != [1.0, 1.0]:
            return None
        kwargs["scale_factor"] = [float(s) for s in scales.items[2:]]
    else:
        return None
    return w.emit(F.interpolate, data, **kwargs)


def pad(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    data, pads = node.args[0], w.sym(node.args[1])
    value = node.args[2] if len(node.args) > 2 else 0.0
    fill = w.const(value) if isinstance(value, fx.Node) else value
    if not _tensor(w, data) or pads is None or fill is None:
        return None
    fill = float(fill.item()) if isinstance(fill, torch.Tensor) else float(fill or 0.0)
    half = len(pads.items) // 2
    torch_pads: list[Item] = []
    for begin, end in zip(reversed(pads.items[:half]), reversed(pads.items[half:])):
        torch_pads += [begin, end]
    if module.mode in ("replicate", "reflect"):
        if any(not isinstance(p, int) or p != 0 for p in torch_pads[-4:]):
            return None
        torch_pads = torch_pads[:-4]
    while len(torch_pads) > 2 and all(isinstance(p, int) and p == 0 for p in torch_pads[-2:]):
        torch_pads = torch_pads[:-2]
    if module.mode == "constant":
        return w.emit(F.pad, data, torch_pads, mode="constant", value=fill)
    return w.emit(F.pad, data, torch_pads, mode=module.mode)


def split(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    data = node.args[0]
    if not _tensor(w, data) or len(node.args) < 2 or node.args[1] is None:
        return None
    sizes = w.sym(node.args[1])
    if sizes is None:
        return None
    return w.emit(torch.split, data, list(sizes.items), module.axis)


def topk(w: Walker, node: fx.Node, module: Any) -> fx.Node | None:
    data, k = node.args[0], w.sym(node.args[1])
    if not _tensor(w, data) or k is None or len(k.items) != 1:
        return None
    return w.emit(torch.topk, data, k.items[0], module.dim, module.largest, module.sorted)


def reduce_sum_dynamic(w: Walker, node: fx.Node, module: Any) -> Sym | fx.Node | None:
    if len(node.args) < 2 or node.args[1] is None:
        return None
    data, axes = node.args[0], w.ints(node.args[1])
    if axes is None or not _tensor(w, data):
        return None
    if not axes:
        if module._noop_with_empty_axes:
            return data
        axes = list(range(w.rank(data)))
    return w.emit(torch.sum, data, sorted(axes), keepdim=bool(module._keepdims))


RULES: dict[str, Rule] = {
    "OnnxShape": shape,
    "OnnxGather": gather,
    "OnnxSlice": slice_,
    "OnnxConcat": concat,
    "OnnxUnsqueezeStaticAxes": unsqueeze,
    "OnnxUnsqueezeDynamicAxes": unsqueeze,
    "OnnxSqueezeStaticAxes": squeeze,
    "OnnxSqueezeDynamicAxes": squeeze,
    "OnnxReshape": reshape,
    "OnnxCast": cast,
    "OnnxBinaryMathOperation": binary,
    "OnnxMinMax": min_max,
    "OnnxCompare": compare,
    "OnnxRound": rounding,
    "OnnxReduceStaticAxes": reduce,
    "OnnxReduceSumStaticAxes": reduce,
    "OnnxReduceSumDynamicAxes": reduce_sum_dynamic,
    "Reduce": reduce,
    "OnnxCopyIdentity": identity,
    "OnnxExpand": expand,
    "OnnxTile": tile,
    "OnnxConstantOfShape": constant_of_shape,
    "OnnxRange": range_,
    "OnnxResize": resize,
    "OnnxPadDynamic": pad,
    "OnnxSplit13": split,
    "OnnxTopK": topk,
}
