"""CumSum with ONNX defaults and a constant axis.

onnx2torch's converter defaults ``reverse`` to 1 (ONNX says 0), so a CumSum written without the
attribute — tf2onnx's own rewrites emit those, e.g. for Keras' causal attention mask — runs
backwards. It also reads the axis with ``.item()`` and zeroes in place, which ``torch.export``
cannot trace. Here the axis is a python int fixed at conversion time.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from migrate.conversion.converters.registry import const_input, converter


class CumSum(nn.Module, OnnxToTorchModule):
    """Cumulative sum along a fixed axis, optionally exclusive and/or reversed (keeps the dtype)."""

    def __init__(self, axis: int, exclusive: bool, reverse: bool) -> None:
        super().__init__()
        self.axis, self.exclusive, self.reverse = axis, exclusive, reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.dim()
        if self.reverse:
            x = torch.flip(x, dims=(axis,))
        if self.exclusive:
            head = torch.zeros_like(x.narrow(axis, 0, 1))
            x = torch.cat([head, x.narrow(axis, 0, x.shape[axis] - 1)], dim=axis)
        out = torch.cumsum(x, dim=axis, dtype=x.dtype)
        return torch.flip(out, dims=(axis,)) if self.reverse else out


@converter("CumSum", versions=(11, 14), override=True)
def convert_cumsum(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    axis = int(const_input(node, graph, 1, "an axis").reshape(-1)[0])
    module = CumSum(axis, bool(node.attributes.get("exclusive", 0)), bool(node.attributes.get("reverse", 0)))
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                             outputs=node.output_values))
