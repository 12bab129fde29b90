"""Conv and ConvTranspose with every ONNX padding form, as native ``nn.ConvNd``/``nn.ConvTransposeNd``.

onnx2torch rejects ``auto_pad="SAME_UPPER"/"SAME_LOWER"`` (what tf2onnx emits for TF 'same' padding
when the spatial size is unknown) and asymmetric ConvTranspose pads. Symmetric pads go into the
conv itself; the asymmetric remainder becomes a constant pad before a Conv, or a crop after a
ConvTranspose (whose ONNX pads remove output rather than add input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, get_const_value
from torch import nn

from migrate.conversion.converters.padding import is_symmetric, pad_module, resolve_pads, spatial_shape
from migrate.conversion.converters.registry import converter

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _const(name: str, graph: OnnxGraph) -> torch.Tensor | None:
    try:
        return torch.as_tensor(get_const_value(name, graph))
    except KeyError:
        return None


class FunctionalConv(nn.Module, OnnxToTorchModule):
    """A Conv whose weights are computed in the graph (not constants): ``F.convNd(x, w, b)``."""

    def __init__(self, rank: int, strides: Sequence[int], dilations: Sequence[int], groups: int) -> None:
        super().__init__()
        self.rank, self.strides, self.dilations, self.groups = rank, list(strides), list(dilations), groups

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return _CONV_FN[self.rank](x, weight, bias, self.strides, 0, self.dilations, self.groups)


class Crop(nn.Module, OnnxToTorchModule):
    """Remove ``begins[i]``/``ends[i]`` elements from the start/end of trailing spatial dim i."""

    def __init__(self, begins: Sequence[int], ends: Sequence[int]) -> None:
        super().__init__()
        self.begins, self.ends = [int(b) for b in begins], [int(e) for e in ends]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = [slice(None)] * (x.dim() - len(self.begins))
        index += [slice(b, -e if e else None) for b, e in zip(self.begins, self.ends)]
        return x[tuple(index)]


def _attrs(node: OnnxNode, rank: int) -> tuple[list[int], list[int], int]:
    return (list(node.attributes.get("strides", [1] * rank)), list(node.attributes.get("dilations", [1] * rank)),
            int(node.attributes.get("group", 1)))


@converter("Conv", versions=(1, 11), override=True)
def convert_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    weight = _const(node.input_values[1], graph)
    bias = _const(node.input_values[2], graph) if len(node.input_values) > 2 and node.input_values[2] else None
    kernel = list(node.attributes.get("kernel_shape", []))
    if not kernel:
        if weight is None:
            raise NotImplementedError("Conv with computed weights needs the kernel_shape attribute")
        kernel = list(weight.shape[2:])
    rank = len(kernel)
    strides, dilations, groups = _attrs(node, rank)
    pads = resolve_pads(node, graph, kernel, strides, dilations)
    inline = pads is not None and is_symmetric(pads)
    pre = None if inline else pad_module(node, pads, kernel, strides, dilations)

    if weight is None or (len(node.input_values) > 2 and node.input_values[2] and bias is None):
        conv: nn.Module = FunctionalConv(rank, strides, dilations, groups)
        inputs = tuple(node.input_values)
        if inline and any(pads):
            pre = pad_module(node, pads, kernel, strides, dilations)
    else:
        conv = _CONV[rank](weight.shape[1] * groups, weight.shape[0], kernel, stride=strides,
                           padding=pads[:rank] if inline else 0, dilation=dilations, groups=groups,
                           bias=bias is not None)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        inputs = (node.input_values[0],)
    module = conv if pre is None else _PadThen(pre, conv)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))


class _PadThen(nn.Module, OnnxToTorchModule):
    """Pad the first input, then apply ``op`` to it and the remaining inputs (weights, bias)."""

    def __init__(self, pad: nn.Module, op: nn.Module) -> None:
        super().__init__()
        self.pad, self.op = pad, op

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.op(self.pad(x), *rest)


def _transpose_pads(node: OnnxNode, graph: OnnxGraph, kernel: list[int], strides: list[int],
                    dilations: list[int], output_padding: list[int]) -> list[int]:
    """ONNX ConvTranspose pads (amounts cropped from the full output), resolving output_shape/auto_pad."""
    rank = len(kernel)
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    output_shape = list(node.attributes.get("output_shape", []))[-rank:]
    if not output_shape and auto_pad in ("NOTSET", "VALID"):
        return list(node.attributes.get("pads", [0] * 2 * rank)) if auto_pad == "NOTSET" else [0] * 2 * rank
    sizes = spatial_shape(node, graph, rank)
    begins, ends = [], []
    for axis in range(rank):
        k, s, d, op = kernel[axis], strides[axis], dilations[axis], output_padding[axis]
        if output_shape:
            if sizes[axis] is None:
                raise NotImplementedError("ConvTranspose output_shape with an unknown input size")
            total = s * (sizes[axis] - 1) + op + (k - 1) * d + 1 - output_shape[axis]
        else:  # SAME: output = input * stride, so the total does not depend on the input size
            total = op + (k - 1) * d + 1 - s
        if total < 0:
            raise NotImplementedError(f"ConvTranspose whose output is larger than the full convolution "
                                      f"(padding {total} on spatial axis {axis})")
        small, large = total // 2, total - total // 2
        upper = auto_pad == "SAME_UPPER"
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


@converter("ConvTranspose", versions=(1, 11), override=True)
def convert_conv_transpose(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    weight = _const(node.input_values[1], graph)
    if weight is None:
        raise NotImplementedError("ConvTranspose with computed (non-constant) weights")
    bias = _const(node.input_values[2], graph) if len(node.input_values) > 2 and node.input_values[2] else None
    kernel = list(node.attributes.get("kernel_shape", weight.shape[2:]))
    rank = len(kernel)
    strides, dilations, groups = _attrs(node, rank)
    output_padding = list(node.attributes.get("output_padding", [0] * rank))
    pads = _transpose_pads(node, graph, kernel, strides, dilations, output_padding)
    inline = [min(pads[i], pads[i + rank]) for i in range(rank)]
    conv = _CONV_TRANSPOSE[rank](weight.shape[0], weight.shape[1] * groups, kernel, stride=strides,
                                 padding=inline, output_padding=output_padding, groups=groups,
                                 dilation=dilations, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    module: nn.Module = conv
    if not is_symmetric(pads):
        crop = Crop([pads[i] - inline[i] for i in range(rank)], [pads[i + rank] - inline[i] for i in range(rank)])
        module = nn.Sequential(conv, crop)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                             outputs=node.output_values))
