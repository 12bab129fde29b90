"""Padding, pooling, CumSum, Pad/Split/Reduce and version-range converters against ONNX Runtime.

Each test builds a one-node ONNX graph with ``onnx.helper``, runs it in ONNX Runtime and in the
converted torch module, and compares. Graphs with a symbolic batch are also exported with
``torch.export`` (dynamic batch) to prove the modules stay traceable.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from migrate.conversion.onnx2torch_compat import onnx2torch

onnx2torch()
import torch
from onnx import defs

from migrate.conversion.converters.registry import is_supported, known
from migrate.conversion.converters.versions import SAME_SEMANTICS
from migrate.conversion.to_torch import onnx_to_torch, prepare
from migrate.core.errors import ConversionError

TYPES = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT32, np.int64: TensorProto.INT64,
         np.bool_: TensorProto.BOOL}


def _model(node: onnx.NodeProto, inputs: dict[str, tuple[type, list]], n_outputs: int = 1,
           initializers: list | None = None, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TYPES[t], shape) for n, (t, shape) in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in node.output[:n_outputs]],
        initializers or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], atol: float = 1e-5,
           export: bool = False) -> torch.nn.Module:
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    gm = onnx_to_torch(prepare(model))
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    with torch.no_grad():
        got = gm(*args)
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert tuple(g.shape) == e.shape
        assert g.numpy().dtype == e.dtype
        np.testing.assert_allclose(g.numpy(), e, atol=atol, rtol=1e-4)
    if export:
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(gm, args, dynamic_shapes=tuple({0: batch} for _ in args))
        bigger = tuple(torch.cat([a, a, a]) for a in args)
        with torch.no_grad():
            want = gm(*bigger)
            have = program.module()(*bigger)
        for w, h in zip(*(x if isinstance(x, (list, tuple)) else [x] for x in (want, have))):
            torch.testing.assert_close(h, w)
    return gm


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


# ---------------------------------------------------------------- Conv

@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (4, 2), (3, 2), (2, 3)])
@pytest.mark.parametrize("static", [True, False], ids=["static-hw", "dynamic-hw"])
def test_conv2d_auto_pad(auto_pad, kernel, stride, static):
    x = _rand(2, 3, 11, 8)
    w, b = _rand(4, 3, kernel, kernel, seed=1), _rand(4, seed=2)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad=auto_pad, strides=[stride, stride],
                            kernel_shape=[kernel, kernel])
    spatial = [11, 8] if static else ["h", "w"]
    model = _model(node, {"x": (np.float32, ["n", 3, *spatial])}, initializers=[_init("w", w), _init("b", b)])
    _check(model, {"x": x}, export=static)


def _tf_same_pads(sizes, kernel, stride, dilation, upper):
    """TF 'same' (ONNX spec SAME_*): output ceil(size / stride); the odd pixel goes last for UPPER."""
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, stride, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        begins.append(total // 2 if upper else total - total // 2)
        ends.append(total - begins[-1])
    return begins + ends


@pytest.mark.parametrize("op", ["Conv", "MaxPool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_dilated_same_matches_the_spec(op, auto_pad):
    """ONNX Runtime rejects (Conv) or mis-sizes (MaxPool) dilated SAME, so compare with explicit spec pads."""
    x, w = _rand(2, 3, 10, 11) - 1.0, _rand(4, 3, 2, 3, seed=1)
    attrs = {"kernel_shape": [2, 3], "dilations": [2, 2], "strides": [2, 1]}
    inputs, inits = (["x", "w"], [_init("w", w)]) if op == "Conv" else (["x"], [])
    pads = _tf_same_pads([10, 11], [2, 3], [2, 1], [2, 2], upper=auto_pad == "SAME_UPPER")
    explicit = _model(helper.make_node(op, inputs, ["y"], pads=pads, **attrs),
                      {"x": (np.float32, ["n", 3, 10, 11])}, initializers=inits)
    expected = ort.InferenceSession(explicit.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert expected.shape[2:] == (5, 11)
    gm = onnx_to_torch(prepare(_model(helper.make_node(op, inputs, ["y"], auto_pad=auto_pad, **attrs),
                                      {"x": (np.float32, ["n", 3, 10, 11])}, initializers=inits)))
    with torch.no_grad():
        np.testing.assert_allclose(gm(torch.from_numpy(x)).numpy(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rank", [1, 3])
def test_conv_1d_3d_same_upper_and_asymmetric_pads(rank):
    spatial = [9, 6, 7][:rank] if rank == 3 else [13]
    x = _rand(2, 2, *spatial)
    w = _rand(3, 2, *[3] * rank, seed=1)
    for attrs in ({"auto_pad": "SAME_UPPER", "strides": [2] * rank},
                  {"pads": [2] * rank + [0] * rank, "dilations": [2] * rank}):  # causal-style left padding
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        _check(_model(node, {"x": (np.float32, ["n", 2, *spatial])}, initializers=[_init("w", w)]), {"x": x},
               export=True)


def test_grouped_conv_with_asymmetric_explicit_pads():
    x, w = _rand(1, 6, 10, 9), _rand(6, 1, 3, 3, seed=1)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=6, pads=[0, 1, 1, 2], strides=[2, 2])
    _check(_model(node, {"x": (np.float32, [1, 6, 10, 9])}, initializers=[_init("w", w)]), {"x": x})


def test_conv_with_computed_weights():
    x, w = _rand(2, 3, 8, 8), _rand(4, 3, 3, 3, seed=1)
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", kernel_shape=[3, 3], strides=[2, 2])
    _check(_model(node, {"x": (np.float32, [2, 3, 8, 8]), "w": (np.float32, [4, 3, 3, 3])}), {"x": x, "w": w})


@pytest.mark.parametrize("attrs", [
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
    {"auto_pad": "SAME_UPPER", "strides": [3, 2], "output_padding": [1, 0]},
    {"pads": [0, 1, 2, 0], "strides": [2, 2]},
    {"output_shape": [12, 10], "strides": [2, 2]},
    {"output_shape": [11, 10], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
], ids=["same-upper", "same-lower", "same-output-padding", "asymmetric", "output-shape", "output-shape-upper"])
@pytest.mark.parametrize("kernel", [3, 4])
def test_conv_transpose_padding_forms(attrs, kernel):
    x, w, b = _rand(2, 3, 6, 5), _rand(3, 4, kernel, kernel, seed=1), _rand(4, seed=2)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    model = _model(node, {"x": (np.float32, ["n", 3, 6, 5])}, initializers=[_init("w", w), _init("b", b)])
    _check(model, {"x": x}, export=True)


# ---------------------------------------------------------------- pooling

POOL_PADS = [
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
    {"auto_pad": "SAME_UPPER", "strides": [1, 1]},
    {"pads": [0, 0, 1, 1], "strides": [2, 2]},  # what tf2onnx writes for TF 'same' on even sizes
    {"pads": [1, 1, 1, 1], "strides": [1, 1]},  # symmetric: native torch padding
    {"pads": [2, 0, 0, 2], "strides": [1, 2]},  # more than half the kernel: explicit padding
]


@pytest.mark.parametrize("attrs", POOL_PADS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("static", [True, False], ids=["static-hw", "dynamic-hw"])
def test_average_pool_padding(attrs, count_include_pad, static):
    x = _rand(2, 3, 9, 8) + 3.0  # offset so that counting zeros of padding would show
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], count_include_pad=count_include_pad,
                            **attrs)
    spatial = [9, 8] if static else ["h", "w"]
    _check(_model(node, {"x": (np.float32, ["n", 3, *spatial])}), {"x": x}, export=static)


@pytest.mark.parametrize("attrs", POOL_PADS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
@pytest.mark.parametrize("static", [True, False], ids=["static-hw", "dynamic-hw"])
def test_max_pool_padding(attrs, static):
    x = _rand(2, 3, 9, 8) - 5.0  # all negative: zero padding instead of -inf would win the max
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], **attrs)
    spatial = [9, 8] if static else ["h", "w"]
    _check(_model(node, {"x": (np.float32, ["n", 3, *spatial])}), {"x": x}, export=static)


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
@pytest.mark.parametrize("rank", [1, 3])
def test_pool_1d_3d_same(op, rank):
    spatial = [13] if rank == 1 else [7, 6, 5]
    x = _rand(2, 2, *spatial) - 2.0
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[2] * rank, strides=[2] * rank, auto_pad="SAME_UPPER")
    _check(_model(node, {"x": (np.float32, ["n", 2, *spatial])}), {"x": x}, export=True)


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 5, 4), (2, 1, 3, 4, 5)])
def test_global_pools(op, shape):
    x = _rand(*shape) - 4.0
    node = helper.make_node(op, ["x"], ["y"])
    _check(_model(node, {"x": (np.float32, ["n", *shape[1:]])}), {"x": x}, export=True)


def test_global_average_pool_of_unknown_rank_keeps_batch_and_channels():
    """tf2onnx's LayerNormalization moments: GlobalAveragePool of a tensor shape inference cannot size."""
    x = _rand(2, 3, 4)
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_empty_tensor_value_info("y")])
    _check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x})


# ---------------------------------------------------------------- CumSum, Pad, Split, Reduce

@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [None, 0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_cumsum(exclusive, reverse, dtype):
    x = (np.random.default_rng(0).integers(-5, 5, (2, 4, 5))).astype(dtype)
    attrs = {"exclusive": exclusive} if reverse is None else {"exclusive": exclusive, "reverse": reverse}
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], **attrs)
    model = _model(node, {"x": (dtype, ["n", 4, 5])}, initializers=[_init("axis", np.array(-1, np.int64))])
    _check(model, {"x": x}, export=True)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [13, 18])
def test_pad(mode, opset):
    x = _rand(2, 3, 5, 6)
    inits = [_init("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)), _init("value", np.array(1.5, np.float32))]
    names = ["x", "pads", "value" if mode == "constant" else ""]
    node = helper.make_node("Pad", names, ["y"], mode=mode)
    _check(_model(node, {"x": (np.float32, ["n", 3, 5, 6])}, initializers=inits, opset=opset), {"x": x}, export=True)


def test_pad_18_axes_and_negative_pads():
    x = _rand(2, 3, 5, 6)
    inits = [_init("pads", np.array([1, -1, 2, 3], np.int64)), _init("axes", np.array([-1, 2], np.int64))]
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"])
    _check(_model(node, {"x": (np.float32, ["n", 3, 5, 6])}, initializers=inits, opset=18), {"x": x})


def test_split_18_num_outputs_uneven_and_13_sizes():
    x = _rand(2, 7, 3)
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)
    _check(_model(node, {"x": (np.float32, ["n", 7, 3])}, n_outputs=3, opset=18), {"x": x}, export=True)
    node = helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1)
    model = _model(node, {"x": (np.float32, ["n", 7, 3])}, n_outputs=2, opset=13,
                   initializers=[_init("sizes", np.array([5, 2], np.int64))])
    _check(model, {"x": x}, export=True)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceLogSumExp",
                                "ReduceSumSquare"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_18_axes_input(op, keepdims):
    x = _rand(2, 3, 4, 5)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    model = _model(node, {"x": (np.float32, ["n", 3, 4, 5])}, opset=18,
                   initializers=[_init("axes", np.array([-1, 1], np.int64))])
    _check(model, {"x": x}, export=True)


def test_reduce_18_without_axes():
    x = _rand(2, 3, 4)
    for attrs in ({"keepdims": 0}, {"noop_with_empty_axes": 1}):
        node = helper.make_node("ReduceMax", ["x"], ["y"], **attrs)
        _check(_model(node, {"x": (np.float32, [2, 3, 4])}, opset=18), {"x": x})


# ---------------------------------------------------------------- version ranges

@pytest.mark.parametrize("op", ["GreaterOrEqual", "LessOrEqual"])
def test_comparisons_at_opset_16(op):
    a, b = _rand(2, 5), _rand(1, 5, seed=1)
    b[0, :2] = a[0, :2]  # equal elements must be True
    node = helper.make_node(op, ["a", "b"], ["y"])
    _check(_model(node, {"a": (np.float32, ["n", 5]), "b": (np.float32, [1, 5])}, opset=16), {"a": a, "b": b})


def test_resize_18_linear_and_guard():
    x = _rand(1, 2, 4, 5)
    inits = [_init("scales", np.array([1, 1, 2, 1.5], np.float32))]
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")
    _check(_model(node, {"x": (np.float32, [1, 2, 4, 5])}, initializers=inits, opset=18), {"x": x})
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1)
    with pytest.raises(ConversionError, match="antialias"):
        onnx_to_torch(prepare(_model(node, {"x": (np.float32, [1, 2, 4, 5])}, initializers=inits, opset=18)))


def test_scatter_nd_reduction_is_refused_not_ignored():
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="add")
    model = _model(node, {"x": (np.float32, [4]), "i": (np.int64, [1, 1]), "u": (np.float32, [1])}, opset=16)
    with pytest.raises(ConversionError, match="reduction='add'"):
        onnx_to_torch(prepare(model))


def _known_ops() -> list[str]:
    return sorted({k.operation_type for k in known() if k.domain in ("", defs.ONNX_DOMAIN)})


@pytest.mark.parametrize("opset", range(13, 19))
def test_every_known_op_converts_at_every_opset_13_to_18(opset):
    """An op with a converter for some version must have one for the version each opset 13..18 selects."""
    missing = []
    for op in _known_ops():
        try:
            defs.get_schema(op, max_inclusive_version=opset)
        except defs.SchemaError:
            continue  # not defined yet at this opset
        if not is_supported(op, opset):
            missing.append(op)
    assert not missing, f"no converter at opset {opset} for: {', '.join(missing)}"


def test_same_semantics_table_reuses_onnx2torch_converters():
    for op, (base, versions, _guard) in SAME_SEMANTICS.items():
        for version in versions:
            assert defs.get_schema(op, max_inclusive_version=version).since_version == version, (op, version)
        assert is_supported(op, base)
