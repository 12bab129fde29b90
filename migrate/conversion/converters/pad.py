"""Pad (versions 2, 11, 13, 18) with pads fixed at conversion time.

Version 18 adds an ``axes`` input that onnx2torch does not know. Static python-int pads (tf2onnx
always emits them as constants) also keep the module ``torch.export``-able, unlike onnx2torch's
``pads.tolist()`` at run time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from migrate.conversion.converters.registry import const_input, converter

_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class Pad(nn.Module, OnnxToTorchModule):
    """``F.pad`` with torch-ordered python-int pads (trailing dims first)."""

    def __init__(self, pads: list[int], mode: str, value: float) -> None:
        super().__init__()
        self.pads, self.mode, self.value = pads, mode, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.pads, value=self.value)
        return F.pad(x, self.pads, mode=self.mode)


def _rank(node: OnnxNode, graph: OnnxGraph, onnx_pads: list[int], axes: list[int] | None) -> int:
    if axes is None:
        return len(onnx_pads) // 2
    info = graph.value_info.get(node.input_values[0])
    if info is None or not info.type.tensor_type.HasField("shape"):
        raise NotImplementedError("Pad with axes on an input of unknown rank (run onnx shape inference first)")
    return len(info.type.tensor_type.shape.dim)


def torch_pads(onnx_pads: list[int], rank: int, axes: list[int] | None, trim: bool) -> list[int]:
    """ONNX ``[b_axes..., e_axes...]`` -> F.pad order; ``trim`` drops zero pairs of leading dims."""
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    half = len(axes)
    per_axis = {a: (onnx_pads[i], onnx_pads[i + half]) for i, a in enumerate(axes)}
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += list(per_axis.get(axis, (0, 0)))
    while trim and len(out) > 2 and out[-2:] == [0, 0]:
        out = out[:-2]
    return [int(p) for p in out]


@converter("Pad", versions=(11, 13, 18), override=True)
def convert_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    mode = node.attributes.get("mode", "constant")
    if mode not in _MODES:
        raise NotImplementedError(f"Pad mode {mode!r}")
    pads = const_input(node, graph, 1, "pads")
    value = const_input(node, graph, 2, "constant_value")
    axes = const_input(node, graph, 3, "axes")
    axes_list = None if axes is None else [int(a) for a in axes.reshape(-1)]
    onnx_pads = [int(p) for p in pads.reshape(-1)]
    rank = _rank(node, graph, onnx_pads, axes_list)
    module = Pad(torch_pads(onnx_pads, rank, axes_list, trim=mode != "constant"), _MODES[mode],
                 0.0 if value is None or value.numel() == 0 else value.reshape(-1)[0].item())
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                             outputs=node.output_values))
