"""AveragePool, MaxPool with every ONNX padding form; GlobalMaxPool and GlobalAveragePool.

TF 'same' pooling becomes asymmetric ONNX pads (or ``auto_pad=SAME_UPPER``) with
``count_include_pad=0``: the average is over the window's real elements only. Torch's own pooling
takes symmetric padding of at most half the kernel, so that case stays a native ``nn.AvgPoolNd``/
``nn.MaxPoolNd``; otherwise the input is padded explicitly (``-inf`` for max) and, for averages that
exclude padding, divided by the pooled count of real elements.

The global pools read the rank from the tensor: onnx2torch's GlobalAveragePool takes it from
value_info and, where shape inference left only the element type, averages over every dim
(batch and channels included) - tf2onnx emits GlobalAveragePool for LayerNormalization moments.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from migrate.conversion.converters.padding import is_symmetric, pad_module, resolve_pads
from migrate.conversion.converters.registry import converter

_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


class PaddedAvgPool(nn.Module, OnnxToTorchModule):
    """Average pooling after explicit padding; ``exclude_pad`` divides by the count of real elements."""

    def __init__(self, pad: nn.Module, pool: nn.Module, exclude_pad: bool) -> None:
        super().__init__()
        self.pad, self.pool, self.exclude_pad = pad, pool, exclude_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.pad(x))
        if self.exclude_pad:
            ones = torch.ones_like(x[:1, :1])
            out = out / self.pool(self.pad(ones))
        return out


class GlobalMaxPool(nn.Module, OnnxToTorchModule):
    """Max over every spatial dim, keeping them as size 1 (ONNX GlobalMaxPool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


class GlobalAveragePool(nn.Module, OnnxToTorchModule):
    """Mean over every spatial dim, keeping them as size 1 (ONNX GlobalAveragePool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mean(x, dim=tuple(range(2, x.dim())), keepdim=True)


def _native_padding(pads: list[int] | None, kernel: list[int]) -> list[int] | None:
    """Per-dim padding torch pooling accepts (symmetric, at most half the kernel), else None."""
    if pads is None or not is_symmetric(pads):
        return None
    half = pads[:len(kernel)]
    return half if all(p <= k // 2 for p, k in zip(half, kernel)) else None


def _window(node: OnnxNode) -> tuple[list[int], list[int], list[int], bool]:
    kernel = list(node.attributes["kernel_shape"])
    rank = len(kernel)
    strides = list(node.attributes.get("strides", [1] * rank))
    dilations = list(node.attributes.get("dilations", [1] * rank))
    return kernel, strides, dilations, bool(node.attributes.get("ceil_mode", 0))


@converter("AveragePool", versions=(7, 10, 11), override=True)
def convert_average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    kernel, strides, dilations, ceil_mode = _window(node)
    if any(d != 1 for d in dilations):
        raise NotImplementedError("AveragePool with dilations")
    count_include_pad = bool(node.attributes.get("count_include_pad", 0))
    pads = resolve_pads(node, graph, kernel, strides, dilations)
    native = _native_padding(pads, kernel)
    if native is not None:
        module: nn.Module = _AVG[len(kernel)](kernel, strides, native, ceil_mode=ceil_mode,
                                              count_include_pad=count_include_pad)
    elif ceil_mode:
        raise NotImplementedError("AveragePool with ceil_mode and asymmetric or SAME padding")
    else:
        module = PaddedAvgPool(pad_module(node, pads, kernel, strides, dilations),
                               _AVG[len(kernel)](kernel, strides, 0), exclude_pad=not count_include_pad)
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


@converter("MaxPool", versions=(8, 10, 11, 12), override=True)
def convert_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if len(node.output_values) > 1 and node.output_values[1]:
        raise NotImplementedError("MaxPool with the Indices output")
    if node.attributes.get("storage_order", 0) != 0:
        raise NotImplementedError("MaxPool with column-major storage_order")
    kernel, strides, dilations, ceil_mode = _window(node)
    pads = resolve_pads(node, graph, kernel, strides, dilations)
    native = _native_padding(pads, kernel)
    pool = _MAX[len(kernel)](kernel, strides, native or 0, dilation=dilations, ceil_mode=ceil_mode)
    module: nn.Module = pool
    if native is None and (pads is None or any(pads)):
        module = nn.Sequential(pad_module(node, pads, kernel, strides, dilations, value=float("-inf")), pool)
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


@converter("GlobalMaxPool", versions=(1,))
def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GlobalMaxPool(), onnx_mapping=onnx_mapping_from_node(node))


@converter("GlobalAveragePool", versions=(1,), override=True)
def convert_global_average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GlobalAveragePool(), onnx_mapping=onnx_mapping_from_node(node))
