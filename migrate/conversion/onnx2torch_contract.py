"""The onnx2torch internals tf2torch relies on, in one place (data only: this module imports nothing).

onnx2torch has no public API for converters, its registry or its modules' state, so the conversion code
(``converters/``, ``passes/``, ``to_torch.py``, ``onnx2torch_compat.py``) uses its internals.
tests/test_onnx2torch_contract.py checks every entry against the installed onnx2torch, and that the conversion
code uses no onnx2torch module, name or module class missing here; ``converters/registry.py`` refuses to replace
or reuse an onnx2torch converter whose key is not listed. constraints.txt pins the onnx2torch version it was
last checked with.
"""

from __future__ import annotations

#: onnx2torch module -> the names imported from it.
RELIED_ON_IMPORTS: dict[str, tuple[str, ...]] = {
    "onnx2torch": ("convert",),
    "onnx2torch.converter": ("convert",),
    "onnx2torch.node_converters.gather": ("OnnxGather",),
    "onnx2torch.node_converters.registry": ("OperationDescription", "_CONVERTER_REGISTRY"),
    "onnx2torch.node_converters.resize": ("_onnx_mode_to_torch_mode",),
    "onnx2torch.onnx_graph": ("OnnxGraph",),
    "onnx2torch.onnx_node": ("OnnxNode",),
    "onnx2torch.utils.common": ("OnnxMapping", "OnnxToTorchModule", "OperationConverterResult", "get_const_value",
                                "onnx_mapping_from_node"),
}

#: class -> the members tf2torch reads or passes by keyword: the registry's key (converters/registry.py), what a
#: converter receives (node, graph) and returns.
RELIED_ON_MEMBERS: dict[str, tuple[str, ...]] = {
    "OperationDescription": ("domain", "operation_type", "version"),
    "OnnxNode": ("attributes", "domain", "input_values", "name", "operation_type", "output_values", "proto"),
    "OnnxGraph": ("initializers", "value_as_node_output"),
    "OperationConverterResult": ("torch_module", "onnx_mapping"),
    "OnnxMapping": ("inputs", "outputs"),
}

#: onnx2torch module class (the fx passes key on ``type(module).__name__``) -> the instance attributes they read
#: (passes/shape_ops.py RULES, passes/cleanup.py, converters/subgraph.py).
RELIED_ON_MODULES: dict[str, tuple[str, ...]] = {
    "OnnxBinaryMathOperation": ("broadcast", "math_op_function"),
    "OnnxCast": ("torch_dtype",),
    "OnnxCompare": ("compare_function",),
    "OnnxConcat": ("axis",),
    "OnnxConstantOfShape": ("value",),
    "OnnxCopyIdentity": (),
    "OnnxDropoutDynamic": (),
    "OnnxExpand": (),
    "OnnxGather": ("_axis",),
    "OnnxMinMax": ("_operator",),
    "OnnxPadDynamic": ("mode",),
    "OnnxRange": (),
    "OnnxReduceStaticAxes": ("axes", "keepdims", "operation_type"),
    "OnnxReduceSumDynamicAxes": ("_keepdims", "_noop_with_empty_axes"),
    "OnnxReduceSumStaticAxes": ("_axes", "_keepdims"),
    "OnnxReshape": (),
    "OnnxResize": ("align_corners", "ignore_roi", "onnx_mode"),
    "OnnxRound": ("round_function",),
    "OnnxShape": ("_end", "_start"),
    "OnnxSlice": (),
    "OnnxSplit13": ("axis",),
    "OnnxSqueezeDynamicAxes": (),
    "OnnxSqueezeStaticAxes": ("axes",),
    "OnnxTile": (),
    "OnnxTopK": ("dim", "largest", "sorted"),
    "OnnxTranspose": ("perm",),
    "OnnxUnsqueezeDynamicAxes": (),
    "OnnxUnsqueezeStaticAxes": ("_axes",),
}

#: (op_type, version) keys of onnx2torch's registry (ONNX domain) whose converter one of ours replaces
#: (``@converter(..., override=True)``); converters/registry.py's OVERRIDES must equal this set.
OVERRIDDEN: frozenset[tuple[str, int]] = frozenset({
    *(("AveragePool", v) for v in (7, 10, 11)), ("Conv", 1), ("Conv", 11), ("ConvTranspose", 1),
    ("ConvTranspose", 11), ("CumSum", 11), ("CumSum", 14), ("GlobalAveragePool", 1),
    *(("MaxPool", v) for v in (8, 10, 11, 12)), ("Pad", 11), ("Pad", 13), *(("ScatterND", v) for v in (11, 13, 16)),
    ("Split", 13),
})

#: (op_type, version) keys whose onnx2torch converter ours reuse for later versions (converters/versions.py).
REUSED: frozenset[tuple[str, int]] = frozenset({
    ("GreaterOrEqual", 12), ("LessOrEqual", 12), ("Resize", 13), ("ScatterND", 16),
})
