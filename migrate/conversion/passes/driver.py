"""Make an onnx2torch GraphModule exportable with a dynamic batch and compilable with no graph break.

onnx2torch reproduces ONNX literally: shapes travel as int64 tensors and its Reshape, Slice, Expand,
Tile, Resize, Range, ConstantOfShape, Squeeze... read them back with ``.tolist()`` or
``torch.any(shape == 0)``. Under ``torch.export`` with a dynamic batch that is a data-dependent
guard (GuardOnDataDependentSymNode), and under ``torch.compile`` a graph break. ``optimize``
rewrites the graph so shapes are Python ints and SymInts instead (see ``migrate/passes``), folds
everything computable from initializers, and drops no-ops; ``migrate.conversion.export`` then exports it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx

from migrate.conversion.passes.cleanup import drop_dead, materialize_constants, materialize_shapes, remove_noops
from migrate.conversion.passes.shape_ops import RULES
from migrate.conversion.passes.values import Walker
from migrate.core.compare import Tolerance, compare
from migrate.core.errors import ConversionError

#: Export traces with at least this batch so torch.export does not specialise it to 0 or 1.
MIN_TRACE_BATCH = 2


def optimize(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], verify: bool = True) -> fx.GraphModule:
    """Rewrite ``gm`` in place (and return it) so its shapes are ints/SymInts, not tensors.

    ``example_inputs`` drive one eager forward pass that tells the rules each value's rank and
    dtype; no example dimension is baked into the graph (every shape read is ``x.size(i)``), so
    the batch stays dynamic. With ``verify`` the rewritten graph is run on the same inputs and
    must reproduce the original outputs.
    """
    gm.eval()
    walker = Walker(gm, RULES)
    with torch.random.fork_rng():  # random draws (converters/random.py): the check below sees the same ones
        torch.manual_seed(0)
        expected = walker.run(tuple(example_inputs))
    materialize_constants(walker)
    materialize_shapes(walker)
    remove_noops(walker)
    drop_dead(gm)
    gm.graph.lint()
    gm.meta["tf2torch_rewrites"] = dict(Counter(walker.rewritten))
    if verify:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            _check_same(expected, gm(*example_inputs))
    return gm


def order_inputs(gm: fx.GraphModule, order: Sequence[int], names: Sequence[str]) -> list[str]:
    """Make ``gm.forward`` take its inputs in ``order`` (indices into the current placeholders), named ``names``.

    The ONNX graph lists inputs in its own (often alphabetical) order; ``model.pt2`` must take them in the
    TF signature's order, and its forward's parameter names are what ``inspect.signature`` shows users.
    Returns the parameter names given (fx renames one that clashes with a Python builtin or keyword).
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if sorted(order) != list(range(len(placeholders))) or len(names) != len(placeholders):
        raise ConversionError(f"input order {list(order)} does not fit the graph's {len(placeholders)} inputs; "
                              "this is a tf2torch bug, please report it")
    for node in placeholders:  # free every name first: a new name may be another input's old one
        node._rename(f"_tf2torch_input_{node.name}")
    rest = next(n for n in gm.graph.nodes if n.op != "placeholder")
    for index, name in zip(order, names):
        node = placeholders[index]
        rest.prepend(node)
        node._rename(name)
        node.target = node.name
    gm.graph.lint()
    gm.recompile()
    return [placeholders[i].name for i in order]


def _check_same(expected: Any, actual: Any) -> None:
    flat_expected, _ = torch.utils._pytree.tree_flatten(expected)
    flat_actual, _ = torch.utils._pytree.tree_flatten(actual)
    if len(flat_expected) != len(flat_actual):
        raise ConversionError(f"graph passes changed the number of outputs ({len(flat_expected)} -> "
                              f"{len(flat_actual)}); this is a tf2torch bug, please report it")
    for i, (e, a) in enumerate(zip(flat_expected, flat_actual)):
        # Dtypes may differ where the rules follow ONNX and onnx2torch does not (Range keeps int32).
        e = e.to(a.dtype) if isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor) else e
        same = e.shape == a.shape and (
            compare(a.detach().double().cpu().numpy(), e.detach().double().cpu().numpy(), Tolerance(1e-6, 1e-5)).passed
            if e.is_floating_point() else torch.equal(e, a))
        if not same:
            raise ConversionError(f"graph passes changed output {i} ({tuple(e.shape)} -> {tuple(a.shape)}); "
                                  "this is a tf2torch bug, please report it")
