"""ONNX ``If`` and ``Loop`` (tf.cond, and the while loop tf2onnx emits for Keras 3 GRU/SimpleRNN cells).

Subgraphs are converted by onnx2torch itself into nested ``GraphModule``s. Names a subgraph reads
from the enclosing scope become initializers when they fold to constants, else extra inputs.

* ``If`` with a condition that folds to a constant keeps only the taken branch; otherwise both
  branches run under ``torch.cond`` so export and ``torch.compile`` keep the data-dependent choice.
* ``Loop`` is unrolled over a trip count found at conversion time by running only the part of the
  body that decides the exit condition (for an RNN: the time index against the static sequence
  length). A loop whose exit depends on run-time data is refused with a clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import fx, nn

from migrate.conversion.converters.registry import converter
from migrate.conversion.converters.subgraph import (
    as_tuple,
    attr_graph,
    fold,
    subgraph_model,
    to_module,
    trip_count,
)
from migrate.core.errors import ConversionError


class OnnxIfConstant(nn.Module, OnnxToTorchModule):
    """An ``If`` whose condition was known at conversion time: just the taken branch."""

    def __init__(self, branch: fx.GraphModule, n_outputs: int) -> None:
        super().__init__()
        self.branch, self.n_outputs = branch, n_outputs

    def forward(self, *captures: torch.Tensor) -> Any:
        outputs = as_tuple(self.branch(*captures))
        return outputs[0] if self.n_outputs == 1 else outputs


class OnnxIf(nn.Module, OnnxToTorchModule):
    """A data-dependent ``If`` as ``torch.cond``: both branches take the union of captured operands."""

    def __init__(self, then_branch: fx.GraphModule, then_args: list[int], else_branch: fx.GraphModule,
                 else_args: list[int], n_outputs: int) -> None:
        super().__init__()
        self.then_branch, self.else_branch = then_branch, else_branch
        self.then_args, self.else_args, self.n_outputs = then_args, else_args, n_outputs

    def _then(self, *operands: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.clone() for t in as_tuple(self.then_branch(*(operands[i] for i in self.then_args))))

    def _else(self, *operands: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.clone() for t in as_tuple(self.else_branch(*(operands[i] for i in self.else_args))))

    def forward(self, pred: torch.Tensor, *operands: torch.Tensor) -> Any:
        outputs = torch.cond(pred.reshape(()).to(torch.bool), self._then, self._else, operands)
        return outputs[0] if self.n_outputs == 1 else tuple(outputs)


@converter("If", versions=range(11, 24))
def convert_if(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """``If``: the taken branch when the condition folds, else ``torch.cond`` over both branches."""
    then_graph, else_graph = attr_graph(node, "then_branch"), attr_graph(node, "else_branch")
    n_outputs = len(node.output_values)
    pred = fold(node.input_values[0], graph)
    if pred is not None:
        taken = then_graph if bool(np.asarray(pred).reshape(-1)[0]) else else_graph
        model, captures = subgraph_model(taken, graph, [], [o.name for o in taken.output])
        module = OnnxIfConstant(to_module(model), n_outputs)
        return OperationConverterResult(torch_module=module,
                                        onnx_mapping=OnnxMapping(inputs=tuple(captures), outputs=node.output_values))
    then_model, then_caps = subgraph_model(then_graph, graph, [], [o.name for o in then_graph.output])
    else_model, else_caps = subgraph_model(else_graph, graph, [], [o.name for o in else_graph.output])
    operands = list(dict.fromkeys(then_caps + else_caps))
    module = OnnxIf(to_module(then_model), [operands.index(c) for c in then_caps],
                    to_module(else_model), [operands.index(c) for c in else_caps], n_outputs)
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(
        inputs=(node.input_values[0], *operands), outputs=node.output_values))


class OnnxLoop(nn.Module, OnnxToTorchModule):
    """An unrolled ``Loop``: ``forward(*varying_init, *invariant, *captures)`` -> (*finals, *scan_outputs).

    ``kinds[j]`` says where carried value j comes from: ``"vary"`` (updated by the body each step),
    ``"pass"`` (unchanged, a run-time input) or ``"const"`` (unchanged and folded into the body).
    """

    def __init__(self, body: fx.GraphModule, trips: int, kinds: list[str], constants: list[torch.Tensor],
                 n_scan: int, n_outputs: int) -> None:
        super().__init__()
        self.body, self.trips, self.kinds, self.n_scan, self.n_outputs = body, trips, kinds, n_scan, n_outputs
        for i, value in enumerate(constants):
            self.register_buffer(f"const_{i}", value)

    def forward(self, *args: torch.Tensor) -> Any:
        n_vary, n_pass = self.kinds.count("vary"), self.kinds.count("pass")
        vary, rest = list(args[:n_vary]), args[n_vary:]
        passed = rest[:n_pass]
        scans: list[list[torch.Tensor]] = [[] for _ in range(self.n_scan)]
        keep_going = torch.ones((), dtype=torch.bool)
        for i in range(self.trips):
            step = torch.full((), i, dtype=torch.int64)
            outputs = as_tuple(self.body(step, keep_going, *vary, *rest))
            vary = list(outputs[:n_vary])
            for k, value in enumerate(outputs[n_vary:]):
                scans[k].append(value)
        it_vary, it_pass, it_const = iter(vary), iter(passed), self.buffers(recurse=False)
        finals = [next(it_vary) if k == "vary" else next(it_pass) if k == "pass" else next(it_const)
                  for k in self.kinds]
        results = (*finals, *(torch.stack(s) for s in scans))[: self.n_outputs]
        return results[0] if self.n_outputs == 1 else results


@converter("Loop", versions=range(11, 24))
def convert_loop(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """A Keras recurrent ``Loop`` as one native recurrent module (``recurrent_loop``); any other ``Loop``
    with a conversion-time trip count unrolled around the converted body."""
    from migrate.conversion.converters.recurrent_loop import convert as convert_recurrent_loop

    native = convert_recurrent_loop(node, graph)
    if native is not None:
        return native
    body = attr_graph(node, "body")
    names = list(node.input_values) + [""] * (2 - len(node.input_values))
    trips = trip_count(node, graph, body)
    n_carried = len(body.input) - 2
    n_scan = len(body.output) - 1 - n_carried
    if trips == 0 and n_scan:
        raise ConversionError(f"Loop node {node.name!r} runs zero times, so its scan outputs are empty; not supported")
    kinds, constants, bound = [], [], {}
    for j in range(n_carried):
        formal, initial = body.input[2 + j].name, names[2 + j]
        if body.output[1 + j].name != formal:
            kinds.append("vary")
            continue
        value = fold(initial, graph)
        if value is None:
            kinds.append("pass")
        else:
            kinds.append("const")
            bound[formal] = value
            constants.append(torch.from_numpy(np.array(value)))
    vary = [j for j, k in enumerate(kinds) if k == "vary"]
    passed = [j for j, k in enumerate(kinds) if k == "pass"]
    formal = [body.input[0], body.input[1]] + [body.input[2 + j] for j in vary + passed]
    outputs = [body.output[1 + j].name for j in vary] + [o.name for o in body.output[1 + n_carried:]]
    model, captures = subgraph_model(body, graph, formal, outputs, bound)
    module = OnnxLoop(to_module(model), trips, kinds, constants, n_scan, len(node.output_values))
    inputs = tuple(names[2 + j] for j in vary + passed) + tuple(captures)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))
