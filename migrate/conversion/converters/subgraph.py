"""ONNX subgraph helpers shared by the control-flow and recurrent converters.

Folding values to constants at conversion time, the names a subgraph reads from its enclosing scope, a
subgraph as a standalone ONNX model, and that model converted by onnx2torch (our converters included, so
nesting works). Graph passes for subgraphs are handed in by the conversion stage (``converting``), so
converters never import the pass driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import onnx
import torch
from onnx import GraphProto, NodeProto, ValueInfoProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule
from torch import fx, nn

from migrate.core.errors import ConversionError

#: A loop without a trip count must stop by itself within this many iterations to be unrolled.
MAX_UNROLL = 100_000
#: (a symbolic dim, every other symbolic dim) values that ``length_probes`` assumes.
LENGTH_PROBES = ((3, 11), (5, 2))
#: How deep constant folding follows producers before giving up (keeps folding cheap).
FOLD_DEPTH = 64


#: Graph passes for a converted subgraph: ``optimize(module, example_inputs) -> module``.
Optimize = Callable[[fx.GraphModule, tuple[torch.Tensor, ...]], fx.GraphModule]


class _Conversion:
    """What ``migrate.conversion.to_torch.onnx_to_torch`` hands the converters of one model: its opsets
    (onnx2torch does not pass them, and folding and subgraphs must use the parent's op versions), the graph
    passes for subgraphs and the batch size their example inputs use."""

    def __init__(self, model: onnx.ModelProto, optimize: Optimize, trace_batch: int) -> None:
        self.opsets = tuple(model.opset_import)
        self.optimize = optimize
        self.trace_batch = trace_batch


_CURRENT: ContextVar[_Conversion | None] = ContextVar("tf2torch_conversion", default=None)


@contextmanager
def converting(model: onnx.ModelProto, optimize: Optimize, trace_batch: int) -> Iterator[None]:
    """Make ``model``'s opsets and the conversion stage's subgraph passes the ones converters use."""
    token = _CURRENT.set(_Conversion(model, optimize, trace_batch))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def _conversion() -> _Conversion:
    current = _CURRENT.get()
    if current is None:
        raise ConversionError("control-flow converters run only inside migrate.conversion.to_torch.onnx_to_torch")
    return current


def _opsets() -> list[onnx.OperatorSetIdProto]:
    return list(_conversion().opsets)


def subgraphs(node: NodeProto) -> Iterable[GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def free_names(nodes: Sequence[NodeProto], defined: Iterable[str]) -> list[str]:
    """Names ``nodes`` (and their nested subgraphs) read but do not define, in first-use order."""
    known = set(defined)
    free: dict[str, None] = {}
    for node in nodes:
        used = list(node.input)
        for sub in subgraphs(node):
            used += free_names(sub.node, [v.name for v in sub.input] + [t.name for t in sub.initializer])
        free.update((name, None) for name in used if name and name not in known)
        known.update(node.output)
    return list(free)


def needed(nodes: Sequence[NodeProto], outputs: Iterable[str]) -> list[NodeProto]:
    """The nodes that ``outputs`` depend on, in their original (topological) order."""
    need = set(outputs)
    kept = []
    for node in reversed(nodes):
        if need.intersection(node.output):
            kept.append(node)
            need.update(node.input)
            for sub in subgraphs(node):
                need.update(free_names(sub.node, [v.name for v in sub.input] + [t.name for t in sub.initializer]))
    return kept[::-1]


def fold(name: str, graph: OnnxGraph, depth: int = FOLD_DEPTH, sizes: dict[str, int] | None = None
         ) -> np.ndarray | None:
    """The value of ``name`` if it is known at conversion time (initializers, Constant, static Shape, and
    ops over those), else None. ``sizes`` gives symbolic dims (ONNX ``dim_param``) a value to assume."""
    if not name:
        return None
    if name in graph.initializers:
        return graph.initializers[name].to_numpy()
    try:
        node, _ = graph.value_as_node_output(name)
    except KeyError:
        return None
    proto = node.proto
    if proto.op_type == "Shape":
        return _static_shape(proto, graph, sizes)
    if proto.op_type == "Gather":  # static dims picked out of a shape whose batch is dynamic
        picked = _static_dims(proto, graph, depth, sizes)
        if picked is not None:
            return picked
    if depth <= 0 or any(True for _ in subgraphs(proto)) or proto.domain not in ("", "ai.onnx"):
        return None
    values = {}
    for inp in proto.input:
        if inp:
            value = fold(inp, graph, depth - 1, sizes)
            if value is None:
                return None
            values[inp] = value
    try:
        model = helper.make_model(helper.make_graph(
            [proto], "fold", [], [helper.make_empty_tensor_value_info(o) for o in proto.output if o],
            [numpy_helper.from_array(np.asarray(v), n) for n, v in values.items()]), opset_imports=_opsets())
        results = ReferenceEvaluator(model).run(None, {})
    except Exception:  # an op the reference runtime cannot evaluate: treat as not constant
        return None
    return np.asarray(results[[o for o in proto.output if o].index(name)])


def _partial_shape(node: NodeProto, graph: OnnxGraph, sizes: dict[str, int] | None = None) -> np.ndarray | None:
    """A Shape node's output with -1 for the dims that are not static (nor named in ``sizes``)."""
    info = graph.value_info.get(node.input[0])
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    sizes = sizes or {}
    shape = np.array([d.dim_value if d.HasField("dim_value") else sizes.get(d.dim_param, -1)
                      for d in info.type.tensor_type.shape.dim], dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    return shape[attrs.get("start", 0): attrs.get("end", None)]


def _static_shape(node: NodeProto, graph: OnnxGraph, sizes: dict[str, int] | None = None) -> np.ndarray | None:
    shape = _partial_shape(node, graph, sizes)
    return None if shape is None or (shape < 0).any() else shape


def _static_dims(node: NodeProto, graph: OnnxGraph, depth: int, sizes: dict[str, int] | None = None
                 ) -> np.ndarray | None:
    """``Gather(Shape(x), indices)`` when every gathered dim is static."""
    try:
        producer, _ = graph.value_as_node_output(node.input[0])
    except KeyError:
        return None
    indices = fold(node.input[1], graph, depth - 1, sizes)
    if producer.operation_type != "Shape" or indices is None:
        return None
    shape = _partial_shape(producer.proto, graph, sizes)
    if shape is None:
        return None
    picked = np.take(shape, indices.astype(np.int64), axis=0)
    return None if (picked < 0).any() else picked


def symbolic_dims(graph: OnnxGraph) -> set[str]:
    """Every ``dim_param`` in the graph's inferred shapes."""
    return {d.dim_param for v in graph.value_info.values() if v.type.HasField("tensor_type")
            for d in v.type.tensor_type.shape.dim if d.dim_param}


def length_probes(graph: OnnxGraph, dim: onnx.TensorShapeProto.Dimension) -> list[tuple[dict[str, int], int]]:
    """``(sizes, value)`` pairs to evaluate a fold at so that it is checked to equal ``dim``: the static
    size, or two assumed values of a symbolic dim (the graph's other symbolic dims, such as the batch,
    assumed at unrelated values, so a result that depends on them is caught). Empty for an unnamed dim."""
    if not dim.HasField("dim_value") and not dim.dim_param:
        return []
    symbols = symbolic_dims(graph)
    if dim.HasField("dim_value"):
        return [(dict.fromkeys(symbols, other), dim.dim_value) for _, other in LENGTH_PROBES]
    return [(dict.fromkeys(symbols, other) | {dim.dim_param: steps}, steps) for steps, other in LENGTH_PROBES]


def _value_info(name: str, graph: OnnxGraph) -> ValueInfoProto:
    info = graph.value_info.get(name)
    if info is not None:
        copy = ValueInfoProto()
        copy.CopyFrom(info)
        return copy
    return helper.make_empty_tensor_value_info(name)


def subgraph_model(sub: GraphProto, graph: OnnxGraph, formal: Sequence[ValueInfoProto], outputs: Sequence[str],
                   bound: dict[str, np.ndarray] | None = None, sizes: dict[str, int] | None = None
                   ) -> tuple[onnx.ModelProto, list[str]]:
    """A standalone model computing ``outputs`` of ``sub`` from ``formal`` inputs plus captured outer names.

    Returns the model and the outer names it captures at run time (its trailing inputs). Outer names
    that fold to constants (assuming ``sizes`` for symbolic dims), and ``bound`` formal names, become initializers. Every output goes through
    a fresh Identity so that pass-through outputs and multi-output producers convert cleanly.
    """
    bound = bound or {}
    out_names = [f"tf2torch_out_{i}" for i in range(len(outputs))]
    nodes = needed(sub.node, outputs) + [helper.make_node("Identity", [src], [dst])
                                          for src, dst in zip(outputs, out_names)]
    local = [v.name for v in formal] + [t.name for t in sub.initializer] + list(bound)
    initializers = list(sub.initializer) + [numpy_helper.from_array(np.asarray(v), n) for n, v in bound.items()]
    captures = []
    for name in free_names(nodes, local):
        value = fold(name, graph, sizes=sizes)
        if value is None:
            captures.append(name)
        else:
            initializers.append(numpy_helper.from_array(np.asarray(value), name))
    types = {v.name: v for v in list(sub.output) + list(sub.value_info) + list(sub.input)}
    out_infos = []
    for src, dst in zip(outputs, out_names):
        info = ValueInfoProto()
        if src in types:
            info.CopyFrom(types[src])
        info.name = dst
        out_infos.append(info)
    inputs = list(formal) + [_value_info(name, graph) for name in captures]
    model = helper.make_model(helper.make_graph(nodes, "subgraph", inputs, out_infos, initializers),
                              opset_imports=_opsets())
    return model, captures


class IndexGather(nn.Module, OnnxToTorchModule):
    """ONNX ``Gather`` via ``index_select``: onnx2torch indexes with the index tensor, which for the 0-d
    time index of an RNN loop body becomes a data-dependent ``.item()`` under export and compile."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        axis = self.axis % data.dim()
        flat = indices.reshape(-1).long()
        flat = torch.where(flat < 0, flat + data.shape[axis], flat)
        picked = torch.index_select(data, axis, flat)
        return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


def _example_inputs(model: onnx.ModelProto, trace_batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs shaped like the subgraph's declared ones; unknown dims (the batch) get the trace batch."""
    generator = torch.Generator().manual_seed(0)
    examples = []
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else trace_batch for d in tensor_type.shape.dim]
        if np.issubdtype(dtype, np.floating):
            examples.append(torch.randn(shape, generator=generator).to(torch.from_numpy(np.zeros(0, dtype)).dtype))
        elif dtype == np.bool_:
            examples.append(torch.ones(shape, dtype=torch.bool))
        else:
            examples.append(torch.zeros(shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype))
    return tuple(examples)


def to_module(model: onnx.ModelProto) -> fx.GraphModule:
    """Convert a subgraph model with onnx2torch (our converters included, so nesting works).

    The project's graph passes only walk the top-level graph, so a subgraph gets them here, on
    example inputs built from its declared types; if those cannot drive it (a shape the types do not
    pin down) it stays as converted: still correct eagerly, only export/compile may then stop at it.
    """
    from onnx2torch.converter import convert
    from onnx2torch.node_converters.gather import OnnxGather

    conversion = _conversion()
    module = convert(model)
    for name, sub in list(module.named_children()):
        if type(sub) is OnnxGather:
            setattr(module, name, IndexGather(sub._axis))
    try:
        examples = _example_inputs(model, conversion.trace_batch)
        with torch.no_grad():
            module(*examples)
    except Exception:  # types too loose to build inputs: keep the eager-correct module
        return module
    return conversion.optimize(module, examples)


def as_tuple(value: Any) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def attr_graph(node: OnnxNode, name: str) -> GraphProto:
    return next(a.g for a in node.proto.attribute if a.name == name)


def trip_count(node: OnnxNode, graph: OnnxGraph, body: GraphProto, sizes: dict[str, int] | None = None) -> int:
    """Iterations the loop runs, found by evaluating only the exit-condition slice of the body
    (with ``sizes`` for the symbolic dims it depends on)."""
    names = list(node.input_values)
    max_trips = fold(names[0], graph, sizes=sizes) if names[0] else None
    if names[0] and max_trips is None:
        raise ConversionError(f"Loop node {node.name!r}: its trip count is computed at run time; only loops with a "
                              "count known at conversion time convert (e.g. RNNs over a fixed sequence length, "
                              "give the model's Input a static time dimension)")
    cond = fold(names[1], graph, sizes=sizes) if len(names) > 1 and names[1] else np.array(True)
    formal = [v.name for v in body.input]
    n_carried = len(formal) - 2
    cond_out = body.output[0].name
    control: list[int] = []
    while True:  # the carried values the condition depends on, transitively
        wanted = [cond_out] + [body.output[1 + j].name for j in control]
        used = set(wanted) | set(free_names(needed(body.node, wanted), []))
        more = [j for j in range(n_carried) if formal[2 + j] in used and j not in control]
        if not more:
            break
        control += more
    state = [fold(names[2 + j], graph, sizes=sizes) for j in control]
    if cond is None or any(v is None for v in state):
        raise ConversionError(f"Loop node {node.name!r}: its exit condition depends on values computed at run time "
                              "(a data-dependent while loop), which cannot be unrolled; only loops whose iteration "
                              "count is known at conversion time convert")
    inputs = [body.input[0], body.input[1]] + [body.input[2 + j] for j in control]
    model, captures = subgraph_model(body, graph, inputs, wanted, sizes=sizes)
    if captures:
        raise ConversionError(f"Loop node {node.name!r}: its exit condition reads run-time values "
                              f"({', '.join(captures[:3])}); only loops with a static iteration count convert")
    evaluator = ReferenceEvaluator(model)
    limit = int(np.asarray(max_trips).reshape(-1)[0]) if max_trips is not None else MAX_UNROLL
    trips, alive = 0, bool(np.asarray(cond).reshape(-1)[0])
    while alive and trips < limit:
        feeds = {formal[0]: np.array(trips, dtype=np.int64), formal[1]: np.array(alive)}
        feeds.update({formal[2 + j]: v for j, v in zip(control, state)})
        outputs = evaluator.run(None, feeds)
        alive, state = bool(np.asarray(outputs[0]).reshape(-1)[0]), outputs[1:]
        trips += 1
    if alive and max_trips is None:
        raise ConversionError(f"Loop node {node.name!r} did not stop within {MAX_UNROLL} iterations at conversion time")
    return trips
