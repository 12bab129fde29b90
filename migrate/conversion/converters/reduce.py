"""Reduce* at opset 18, where ``axes`` moved from an attribute to an input.

onnx2torch knows the attribute form only (versions 1..13). The axes input is a constant in
what tf2onnx emits, so it is read at conversion time. onnx2torch's static-axes module is not
reused: with ``keepdims=0`` it mis-numbers negative axes for Max/Min/Prod.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from migrate.conversion.converters.registry import const_input, converter

REDUCE_OPS_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                 "ReduceMin", "ReduceProd", "ReduceSumSquare")


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):  # from the last, so earlier dims keep their numbers
        x = torch.prod(x, dim=dim, keepdim=keepdim)
    return x


_REDUCERS = {
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
}


class Reduce(nn.Module, OnnxToTorchModule):
    """An ONNX reduction over fixed axes (all axes when None)."""

    def __init__(self, op: str, axes: list[int] | None, keepdims: bool) -> None:
        super().__init__()
        self.op, self.axes, self.keepdims = op, axes, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = list(range(x.dim())) if self.axes is None else sorted({a % x.dim() for a in self.axes})
        return _REDUCERS[self.op](x, dims, self.keepdims)


def convert_reduce_axes_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    axes_tensor = const_input(node, graph, 1, "axes")
    axes = None if axes_tensor is None else [int(a) for a in axes_tensor.reshape(-1)]
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        module: nn.Module = nn.Identity()
    else:
        module = Reduce(node.operation_type, axes or None, bool(node.attributes.get("keepdims", 1)))
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                             outputs=node.output_values))


for _op in REDUCE_OPS_18:
    converter(_op, versions=(18,))(convert_reduce_axes_input)
