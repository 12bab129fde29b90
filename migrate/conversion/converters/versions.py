"""Newer op versions whose change does not touch what onnx2torch's converter implements.

onnx2torch registers each converter for exact ``since_version`` values, so an op that gained
only a data type (bfloat16) or an optional feature in a later opset is "unsupported" there even
though the same converter is right. Each entry reuses onnx2torch's own converter for the listed
versions; a guard rejects, with a clear message, the new features the old converter ignores.
"""

from __future__ import annotations

from collections.abc import Callable

from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from migrate.conversion.converters.registry import converter, onnx2torch_converter

Guard = Callable[[OnnxNode], "str | None"]


def _no_guard(node: OnnxNode) -> str | None:
    return None


def _resize_guard(node: OnnxNode) -> str | None:
    attrs = node.attributes
    if attrs.get("antialias", 0):
        return "Resize with antialias=1"
    if attrs.get("axes"):
        return "Resize with the axes attribute"
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        return f"Resize with keep_aspect_ratio_policy={attrs['keep_aspect_ratio_policy']!r}"
    return None


def _scatter_nd_guard(node: OnnxNode) -> str | None:
    reduction = node.attributes.get("reduction", "none")
    return None if reduction == "none" else f"ScatterND with reduction={reduction!r}"


#: op -> (onnx2torch version whose converter is reused, versions to register it for, guard).
SAME_SEMANTICS: dict[str, tuple[int, tuple[int, ...], Guard]] = {
    "GreaterOrEqual": (12, (16,), _no_guard),  # 16 adds bfloat16
    "LessOrEqual": (12, (16,), _no_guard),  # 16 adds bfloat16
    "Resize": (13, (18,), _resize_guard),  # 18 adds antialias, axes, keep_aspect_ratio_policy
    # onnx2torch's ScatterND ignores ``reduction``; 16 added add/mul, 18 max/min.
    "ScatterND": (16, (11, 13, 16, 18), _scatter_nd_guard),
}


def _guarded(op: str, original: Callable, guard: Guard) -> Callable:
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        problem = guard(node)
        if problem:
            raise NotImplementedError(f"{problem} is not supported")
        return original(node, graph)

    convert.__name__ = f"convert_{op}"
    return convert


def register_same_semantics() -> None:
    for op, (base, versions, guard) in SAME_SEMANTICS.items():
        converter(op, versions, override=True)(_guarded(op, onnx2torch_converter(op, base), guard))


register_same_semantics()
