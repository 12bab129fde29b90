"""RandomNormal, RandomNormalLike, RandomUniform, RandomUniformLike: fresh draws on every call.

tf2onnx exports a draw a layer makes on purpose at inference (a VAE's ``Sampling``: ``keras.random.normal``,
rewritten from its stateless form by ``migrate.tf.graph_fixes.rewrite_designed_random``) as one of these;
a dynamic shape arrives as ``RandomNormalLike(ConstantOfShape(shape))``. Each becomes ``torch.randn`` /
``torch.rand`` of that shape, scaled and shifted by the node's ``mean``/``scale`` or ``low``/``high``, in the
node's ``dtype`` (the input's for the ``*Like`` forms without one). The ONNX ``seed`` is not reproduced: the
draws come from torch's global generator (``torch.manual_seed`` makes them repeatable), and no converted
draw can equal TensorFlow's draw for draw, which is why parity compares random outputs by distribution
(docs/parity.md). The module names contain ``Random``, so the constant-folding pass never folds them.
"""

from __future__ import annotations

import torch
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from migrate.conversion.converters.registry import converter

#: ONNX element types a random op may produce.
_DTYPES = {TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
           TensorProto.BFLOAT16: torch.bfloat16}


class OnnxRandomDraw(nn.Module, OnnxToTorchModule):
    """``shift + spread * draw`` with ``draw`` standard normal (``normal``) or uniform on [0, 1); the shape is the
    node's fixed ``shape``, or that of the input (``*Like``); the dtype fixed, or the input's when None."""

    def __init__(self, normal: bool, shift: float, spread: float, dtype: torch.dtype | None,
                 shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.normal, self.shift, self.spread, self.dtype, self.shape = normal, shift, spread, dtype, shape

    def forward(self, like: torch.Tensor | None = None) -> torch.Tensor:
        size = self.shape if like is None else like.shape
        dtype = self.dtype or (like.dtype if like is not None else torch.float32)
        device = like.device if like is not None else None
        draw = (torch.randn if self.normal else torch.rand)(size, dtype=dtype, device=device)
        if self.spread != 1.0:
            draw = draw * self.spread
        if self.shift != 0.0:
            draw = draw + self.shift
        return draw


def _dtype(node: OnnxNode, required: bool) -> torch.dtype | None:
    code = node.attributes.get("dtype")
    if code is None:
        return torch.float32 if required else None
    if int(code) not in _DTYPES:
        raise NotImplementedError(f"{node.operation_type} with dtype {TensorProto.DataType.Name(int(code))} "
                                  "(float16, bfloat16, float32 and float64 are converted)")
    return _DTYPES[int(code)]


def _module(node: OnnxNode, normal: bool, like: bool) -> OnnxRandomDraw:
    a = node.attributes
    if normal:
        shift, spread = float(a.get("mean", 0.0)), float(a.get("scale", 1.0))
    else:
        low, high = float(a.get("low", 0.0)), float(a.get("high", 1.0))
        shift, spread = low, high - low
    shape = None if like else tuple(int(d) for d in a["shape"])
    return OnnxRandomDraw(normal, shift, spread, _dtype(node, required=not like), shape)


def _result(node: OnnxNode, module: OnnxRandomDraw, like: bool) -> OperationConverterResult:
    inputs = (node.input_values[0],) if like else ()
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))


@converter("RandomNormal", versions=(1, 22))
def convert_random_normal(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(node, _module(node, normal=True, like=False), like=False)


@converter("RandomNormalLike", versions=(1, 22))
def convert_random_normal_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(node, _module(node, normal=True, like=True), like=True)


@converter("RandomUniform", versions=(1, 22))
def convert_random_uniform(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(node, _module(node, normal=False, like=False), like=False)


@converter("RandomUniformLike", versions=(1, 22))
def convert_random_uniform_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _result(node, _module(node, normal=False, like=True), like=True)
