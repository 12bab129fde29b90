"""Register converters into onnx2torch's registry, for a range of op versions at once.

onnx2torch looks converters up by (domain, op_type, since_version) and knows one exact version
per registration; where the semantics did not change across versions we register them all.
Our registrations replace onnx2torch's own for the same key (that is how we fix its gaps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from onnx import defs
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import get_const_value


def converter(op_type: str, versions: Iterable[int], domain: str = defs.ONNX_DOMAIN) -> Callable:
    """Decorator: register ``fn(node, graph) -> OperationConverterResult`` for every version given."""

    def deco(fn: Callable) -> Callable:
        for version in versions:
            _CONVERTER_REGISTRY[OperationDescription(domain=domain, operation_type=op_type, version=version)] = fn
        return fn

    return deco


def is_supported(op_type: str, version: int, domain: str = "") -> bool:
    """Whether onnx2torch (with our converters) can convert ``op_type`` at opset ``version``."""
    domain = domain or defs.ONNX_DOMAIN
    try:
        since = defs.get_schema(op_type, max_inclusive_version=version, domain=domain).since_version
    except (RuntimeError, defs.SchemaError):
        since = version
    return OperationDescription(domain=domain, operation_type=op_type, version=since) in _CONVERTER_REGISTRY


def const_input(node: OnnxNode, graph: OnnxGraph, index: int, what: str) -> torch.Tensor | None:
    """Input ``index`` as a tensor known at conversion time (None when absent).

    tf2torch's converters bake such inputs (axes, sizes, pads) into the module as python values
    so the result exports and compiles; one computed at run time is refused, naming ``what``.
    """
    if len(node.input_values) <= index or not node.input_values[index]:
        return None
    try:
        return torch.as_tensor(get_const_value(node.input_values[index], graph))
    except KeyError as exc:
        raise NotImplementedError(f"{node.operation_type} with {what} computed at run time "
                                  "(it must be a constant)") from exc
