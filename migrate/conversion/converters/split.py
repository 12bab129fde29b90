"""Split (versions 13 and 18) with the split sizes fixed at conversion time.

Version 18 adds ``num_outputs`` (uneven splits: every chunk ``ceil(n / num_outputs)`` long but
the last), which onnx2torch does not register. Constant split sizes become a python list, so
the module stays ``torch.export``-able (onnx2torch calls ``split.tolist()`` at run time).
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from migrate.conversion.converters.registry import const_input, converter


class Split(nn.Module, OnnxToTorchModule):
    """``torch.split`` by fixed sizes, or into ``num_outputs`` chunks of ``ceil(n / num_outputs)``."""

    def __init__(self, axis: int, sizes: list[int] | None, num_outputs: int) -> None:
        super().__init__()
        self.axis, self.sizes, self.num_outputs = axis, sizes, num_outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.sizes is not None:
            return tuple(torch.split(x, self.sizes, dim=self.axis))
        return tuple(torch.split(x, -(-x.shape[self.axis] // self.num_outputs), dim=self.axis))


@converter("Split", versions=(13, 18), override=True)
def convert_split(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    split = const_input(node, graph, 1, "split sizes")
    sizes = None if split is None else [int(s) for s in split.reshape(-1)]
    module = Split(int(node.attributes.get("axis", 0)), sizes,
                   int(node.attributes.get("num_outputs", len(node.output_values))))
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                             outputs=node.output_values))
