"""ONNX -> torch.fx through onnx2torch plus tf2torch's converters, with errors that name the node."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import onnx

from migrate.conversion.onnx2torch_compat import onnx2torch
from migrate.core.errors import ConversionError


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Own producers for graph outputs, then shape inference, so converters and passes see static dims
    wherever ONNX can prove them."""
    model = _own_output_producers(model)
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is an optimisation; conversion works without it
        return model


def _rename_inputs(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        for attr in node.attribute:  # subgraphs read outer names too
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                _rename_inputs(sub, renames)


def _own_output_producers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give each graph output that another output's node also produces (a Loop's final states, an
    LSTM's Y_h and Y_c) an Identity of its own: onnx2torch returns such a node's whole output tuple
    once, instead of each output in its place."""
    producers = {out: node for node in model.graph.node for out in node.output}
    shared = [o.name for o in model.graph.output if o.name in producers and len(producers[o.name].output) > 1]
    if not shared:
        return model
    model = copy.deepcopy(model)
    renames = {name: f"{name}__tf2torch_inner" for name in shared}
    _rename_inputs(model.graph, renames)
    for node in model.graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
    model.graph.node.extend(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}__tf2torch_identity")
                            for name, inner in renames.items())
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """op_type -> names of nodes (subgraphs included) that no registered converter handles."""
    onnx2torch()
    from migrate.conversion.converters.registry import is_supported

    version = _opset(model)
    missing: dict[str, list[str]] = defaultdict(list)

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if not is_supported(node.op_type, version, node.domain):
                missing[node.op_type].append(node.name)
            for attr in node.attribute:  # Loop/If/Scan bodies
                for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                    visit(sub)

    visit(model.graph)
    return dict(missing)


def onnx_to_torch(model: onnx.ModelProto) -> Any:
    """Convert to a ``torch.fx.GraphModule``; raise ConversionError naming unsupported ops and nodes."""
    o2t = onnx2torch()
    missing = unsupported_ops(model)
    if missing:
        parts = [f"{op} ({len(names)} node{'s' if len(names) > 1 else ''}, first: {', '.join(names[:3])})"
                 for op, names in sorted(missing.items(), key=lambda kv: -len(kv[1]))]
        raise ConversionError(f"unsupported ONNX op(s) at opset {_opset(model)}: " + "; ".join(parts)
                              + ". See docs/ops.md for how to add a converter")
    from migrate.conversion.converters.registry import installed
    from migrate.conversion.converters.subgraph import converting
    from migrate.conversion.passes.driver import MIN_TRACE_BATCH, optimize

    with installed(), converting(model, optimize, MIN_TRACE_BATCH):
        return o2t.convert(model)
