"""ONNX spatial padding (explicit, asymmetric, ``auto_pad``) resolved to torch padding.

Conv and pooling converters share this: TensorFlow's 'same' padding becomes asymmetric explicit
``pads`` when tf2onnx knows the spatial size, and ``auto_pad="SAME_UPPER"`` when it does not.
Pads are resolved to python ints at conversion time whenever the spatial size is known, so the
modules stay ``torch.export``/``torch.compile`` friendly; otherwise :class:`SamePad` computes
them from the input's shape (symbolic under export, never from tensor values). The 'same'
arithmetic itself is ``migrate/core/padding.py``, shared with the port's emitters and model.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule
from torch import nn

from migrate.core.padding import pad_same, same_pads, static_same_pads


def spatial_shape(node: OnnxNode, graph: OnnxGraph, spatial_rank: int) -> list[int | None]:
    """Static spatial dims of the node's first input (None where unknown)."""
    info = graph.value_info.get(node.input_values[0])
    dims = list(info.type.tensor_type.shape.dim) if info is not None else []
    if len(dims) != spatial_rank + 2:
        return [None] * spatial_rank
    return [d.dim_value if d.HasField("dim_value") else None for d in dims[2:]]


def spatial_rank_of(node: OnnxNode, graph: OnnxGraph) -> int:
    """Spatial rank from kernel_shape, else from the input's rank (needs shape inference)."""
    if "kernel_shape" in node.attributes:
        return len(node.attributes["kernel_shape"])
    info = graph.value_info.get(node.input_values[0])
    rank = len(info.type.tensor_type.shape.dim) if info is not None else 0
    if rank < 3:
        raise NotImplementedError("cannot tell the spatial rank: the input has no known rank "
                                  "(run onnx shape inference first)")
    return rank - 2


def resolve_pads(node: OnnxNode, graph: OnnxGraph, kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int]) -> list[int] | None:
    """ONNX-ordered pads ``[b1, b2, ..., e1, e2, ...]``; None when they depend on an unknown size."""
    rank = len(kernel)
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return list(node.attributes.get("pads", [0] * 2 * rank))
    if auto_pad == "VALID":
        return [0] * 2 * rank
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"unknown auto_pad value {auto_pad!r}")
    pads = static_same_pads(tuple(spatial_shape(node, graph, rank)), tuple(kernel), tuple(strides), tuple(dilations))
    if pads is None:
        return None
    pads = [(b, e) if auto_pad == "SAME_UPPER" else (e, b) for b, e in pads]
    return [b for b, _ in pads] + [e for _, e in pads]


def torch_pad_order(onnx_pads: Sequence[int]) -> tuple[int, ...]:
    """ONNX ``[b1, b2, .., e1, e2, ..]`` -> F.pad's ``(b_last, e_last, ..., b1, e1)``."""
    rank = len(onnx_pads) // 2
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += [int(onnx_pads[axis]), int(onnx_pads[axis + rank])]
    return tuple(out)


def is_symmetric(onnx_pads: Sequence[int]) -> bool:
    rank = len(onnx_pads) // 2
    return list(onnx_pads[:rank]) == list(onnx_pads[rank:])


def constant_pad(onnx_pads: Sequence[int], value: float = 0.0) -> nn.Module:
    """A native ``nn.ConstantPadNd`` for static ONNX pads."""
    cls = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}[len(onnx_pads) // 2]
    return cls(torch_pad_order(onnx_pads), value)


class SamePad(nn.Module, OnnxToTorchModule):
    """TF 'same' padding computed from the input's spatial shape (for unknown spatial sizes)."""

    def __init__(self, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int], upper: bool,
                 value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.strides, self.dilations = list(kernel), list(strides), list(dilations)
        self.upper, self.value = upper, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upper:
            return pad_same(x, self.kernel, self.strides, self.dilations, self.value)
        pads: list = []
        rank = len(self.kernel)
        for axis in reversed(range(rank)):
            pads += reversed(same_pads(x.shape[x.dim() - rank + axis], self.kernel[axis], self.strides[axis],
                                       self.dilations[axis]))
        return F.pad(x, pads, value=self.value)


def pad_module(node: OnnxNode, pads: list[int] | None, kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], value: float = 0.0) -> nn.Module:
    """The module that applies ``pads`` (or SAME padding at run time when ``pads`` is None)."""
    if pads is None:
        upper = node.attributes.get("auto_pad") == "SAME_UPPER"
        return SamePad(kernel, strides, dilations, upper=upper, value=value)
    return constant_pad(pads, value)
