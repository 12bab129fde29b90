"""Graph passes: converted models export with a dynamic batch, match before/after, and compile whole.

Two layers: hand-built ONNX graphs with the shape patterns tf2onnx emits, checked against ONNX
Runtime (fast, no TensorFlow); and fixture models converted from real TensorFlow, checked against
TensorFlow itself (child process) at batch 1 and 3.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from migrate.conversion.onnx2torch_compat import onnx2torch

onnx2torch()
import torch
import torch.utils._pytree as pytree

from migrate.conversion.export import export_program
from migrate.conversion.passes.driver import optimize
from migrate.conversion.to_torch import onnx_to_torch, prepare
from tests.test_convert import CASES

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: onnx2torch modules that read shape tensors' values; none may survive the passes.
VALUE_READERS = {"OnnxReshape", "OnnxSlice", "OnnxExpand", "OnnxTile", "OnnxConstantOfShape", "OnnxRange",
                 "OnnxResize", "OnnxSqueezeDynamicAxes", "OnnxUnsqueezeDynamicAxes", "OnnxPadDynamic",
                 "OnnxReduceSumDynamicAxes", "OnnxSplit13", "OnnxTopK"}


def _leaves(value: Any) -> list[torch.Tensor]:
    return [t.detach() for t in pytree.tree_leaves(value)]


def _assert_same(actual: Any, expected: Any, atol: float = 1e-6) -> None:
    """Same values; dtypes are compared against ONNX Runtime instead (onnx2torch's Range drops int32)."""
    for a, e in zip(_leaves(actual), _leaves(expected), strict=True):
        assert a.shape == e.shape, f"{a.shape} != {e.shape}"
        e = e.to(a.dtype)
        if e.is_floating_point():
            torch.testing.assert_close(a, e, atol=atol, rtol=0)
        else:
            assert torch.equal(a, e)


def _spec(name: str, shape: list[int | None]) -> dict[str, Any]:
    """A float32 input spec as the manifest has it (None: dynamic)."""
    return {"name": name, "tf_name": name, "dtype": "float32", "shape": shape}


def _remaining_readers(gm: torch.fx.GraphModule) -> list[str]:
    return [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes
            if n.op == "call_module" and type(gm.get_submodule(n.target)).__name__ in VALUE_READERS]


# ---- hand-built ONNX graphs -------------------------------------------------------------------

def _const(name: str, values: Any, dtype: Any = np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(values, dtype), name))


def _shape_model() -> onnx.ModelProto:
    """X[N, 4, 6] through every shape pattern tf2onnx writes; one output per pattern."""
    n = helper.make_node
    nodes = [
        n("Shape", ["X"], ["s"]),
        _const("i0", 0), _const("i1", 1), _const("ax0", [0]), _const("m1", [-1]), _const("one", [1]),
        _const("two", 2), _const("three", [3]), _const("ax1", [1]), _const("ax2", [2]),
        n("Gather", ["s", "i0"], ["b"]),
        n("Unsqueeze", ["b", "ax0"], ["bu"]),
        # Reshape to [N, -1] built from the batch, and ONNX's "0 copies the input dim".
        n("Concat", ["bu", "m1"], ["flat_shape"], axis=0),
        n("Reshape", ["X", "flat_shape"], ["flat"]),
        _const("zero_shape", [0, 6, 4]),
        n("Reshape", ["X", "zero_shape"], ["zero_reshaped"]),
        # Expand is bidirectional: [N, 1, 1] keeps X's 4 and 6; a constant grows to X's shape.
        n("Concat", ["bu", "one", "one"], ["n11"], axis=0),
        n("Expand", ["X", "n11"], ["expanded"]),
        _const("col", np.arange(4, dtype=np.float32).reshape(1, 4, 1), np.float32),
        n("Expand", ["col", "s"], ["grown"]),
        # Slices: reversed with INT64 bounds, open-ended, and an end computed from a dim.
        _const("rev_start", [-1]), _const("rev_end", [INT64_MIN]), _const("rev_step", [-1]),
        n("Slice", ["X", "rev_start", "rev_end", "ax2", "rev_step"], ["reversed"]),
        _const("big", [INT64_MAX]),
        n("Slice", ["X", "one", "big", "ax1"], ["tail"]),
        n("Gather", ["s", "i1"], ["rows"]),
        n("Div", ["rows", "two"], ["half_rows"]),
        n("Unsqueeze", ["half_rows", "ax0"], ["half_end"]),
        _const("zero1", [0]),
        n("Slice", ["X", "zero1", "half_end", "ax1"], ["top"]),
        # Range over the batch in int32 (ONNX keeps the input dtype), ConstantOfShape, Tile.
        n("Cast", ["b"], ["b32"], to=TensorProto.INT32),
        _const("r0", 0, np.int32), _const("r1", 1, np.int32),
        n("Range", ["r0", "b32", "r1"], ["positions"]),
        n("Concat", ["bu", "three"], ["n3"], axis=0),
        n("ConstantOfShape", ["n3"], ["filled"], value=numpy_helper.from_array(np.array([2.5], np.float32))),
        # Float arithmetic on a dim (resize-style scales): floor(rows * 1.5) = 6.
        n("Cast", ["rows"], ["rows_f"], to=TensorProto.FLOAT), _const("scale", 1.5, np.float32),
        n("Mul", ["rows_f", "scale"], ["rows_scaled"]), n("Floor", ["rows_scaled"], ["rows_floor"]),
        n("Cast", ["rows_floor"], ["rows_new"], to=TensorProto.INT64),
        n("Unsqueeze", ["rows_new", "ax0"], ["rows_new1"]),
        n("Concat", ["bu", "rows_new1"], ["n6"], axis=0),
        n("ConstantOfShape", ["n6"], ["scaled"], value=numpy_helper.from_array(np.array([1.0], np.float32))),
        _const("reps", [1, 2, 1]),
        n("Tile", ["X", "reps"], ["tiled"]),
        # Squeeze/Unsqueeze with axes as inputs (opset 13+), Pad with constant pads.
        n("Unsqueeze", ["X", "ax1"], ["x_1"]),
        n("Squeeze", ["x_1", "ax1"], ["squeezed"]),
        _const("pads", [0, 1, 0, 0, 2, 0]),
        _const("pad_value", 0.5, np.float32),
        n("Pad", ["X", "pads", "pad_value"], ["padded"]),
        # No-ops: same-dtype Cast, Identity, transposes that cancel.
        n("Abs", ["X"], ["abs"]),
        n("Cast", ["abs"], ["same"], to=TensorProto.FLOAT),
        n("Identity", ["same"], ["ident"]),
        n("Transpose", ["ident"], ["t1"], perm=[0, 2, 1]),
        n("Transpose", ["t1"], ["roundtrip"], perm=[0, 2, 1]),
    ]
    outs = {"flat": ("N", 24), "zero_reshaped": ("N", 6, 4), "expanded": ("N", 4, 6), "grown": ("N", 4, 6),
            "reversed": ("N", 4, 6), "tail": ("N", 3, 6), "top": ("N", 2, 6), "filled": ("N", 3), "scaled": ("N", 6),
            "tiled": ("N", 8, 6), "squeezed": ("N", 4, 6), "padded": ("N", 7, 6), "roundtrip": ("N", 4, 6)}
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in outs.items()]
    outputs.append(helper.make_tensor_value_info("positions", TensorProto.INT32, ["N"]))
    graph = helper.make_graph(nodes, "shapes", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4, 6])],
                              outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def shape_graph() -> tuple[onnx.ModelProto, torch.fx.GraphModule, torch.fx.GraphModule, Any]:
    model = _shape_model()
    onnx.checker.check_model(model)
    original = onnx_to_torch(prepare(model))
    optimized = copy.deepcopy(original)
    program = export_program(optimized, [_spec("X", [None, 4, 6])]).program
    return model, original, optimized, program


def test_no_value_reading_module_survives(shape_graph) -> None:
    _, original, optimized, _ = shape_graph
    assert len(_remaining_readers(original)) >= 10
    assert _remaining_readers(optimized) == []
    kinds = {type(optimized.get_submodule(n.target)).__name__ for n in optimized.graph.nodes if n.op == "call_module"}
    assert not kinds & {"OnnxCopyIdentity", "OnnxCast", "OnnxTranspose", "OnnxShape", "OnnxGather", "OnnxConcat"}
    rewrites = optimized.meta["tf2torch_rewrites"]
    assert rewrites.get("OnnxReshape") == 2 and rewrites.get("OnnxSlice") == 3


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_shape_patterns_match_onnxruntime(shape_graph, batch: int) -> None:
    model, original, _, program = shape_graph
    x = np.random.default_rng(batch).standard_normal((batch, 4, 6)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    expected = dict(zip(names, session.run(names, {"X": x})))
    exported = _leaves(program.module()(torch.from_numpy(x)))
    _assert_same(exported, original(torch.from_numpy(x)))
    for name, got in zip(names, exported):
        want = expected[name]
        assert got.dtype == torch.from_numpy(want).dtype, name
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6, rtol=0, err_msg=name)


def test_batch_stays_dynamic(shape_graph) -> None:
    *_, program = shape_graph
    (symbol, bounds), = program.range_constraints.items()
    assert bounds.lower <= 2 and bounds.upper > 10**6, f"batch {symbol} specialised to {bounds}"


def test_optimized_graph_compiles_without_graph_break(shape_graph) -> None:
    _, original, optimized, program = shape_graph
    torch._dynamo.reset()
    compiled = torch.compile(optimized, fullgraph=True, backend="eager", dynamic=True)
    compiled_program = torch.compile(program.module(), fullgraph=True, backend="eager")
    for batch in (2, 3):
        x = torch.randn(batch, 4, 6)
        _assert_same(compiled(x), original(x))
        _assert_same(compiled_program(x), original(x))


def test_optimize_keeps_other_dynamic_dims() -> None:
    """A None time axis next to the batch: the passes must not bake the example's length in."""
    n = helper.make_node
    nodes = [n("Shape", ["X"], ["s"]), _const("ax0", [0]), _const("m1", [-1]),
             _const("t_idx", [1]), n("Gather", ["s", "t_idx"], ["t"]),
             n("Concat", ["m1", "t"], ["shape"], axis=0), n("Reshape", ["X", "shape"], ["Y"])]
    graph = helper.make_graph(nodes, "time", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "T", 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    gm = onnx_to_torch(prepare(model))
    example = (torch.randn(2, 5, 2),)
    optimize(gm, example)
    program = torch.export.export(gm, example, dynamic_shapes=({0: torch.export.Dim("batch"),
                                                                 1: torch.export.Dim("time")},), strict=False)
    for shape in ((1, 7, 2), (4, 3, 2)):
        x = torch.randn(*shape)
        assert program.module()(x).shape == (shape[0] * 2, shape[1])


def test_tf_slice_to_the_end_keeps_the_length_dynamic() -> None:
    """TF ``Slice(table, [0, 0], [len, -1])`` as tf2onnx writes it: ``end = begin + size + INT_MAX * (size == -1)``.

    A run-time size is never -1, so the comparison is decided and the slice's end stays a SymInt
    (before the Compare rule this was GuardOnDataDependentSymNode on keras-hub-style position embeddings).
    """
    n = helper.make_node
    table = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(16, 4), "table")
    nodes = [n("Shape", ["X"], ["s"]), _const("t_idx", [1]), n("Gather", ["s", "t_idx"], ["t"]),
             _const("minus1", [-1]), n("Concat", ["t", "minus1"], ["size"], axis=0),
             _const("begin", [0, 0]), n("Add", ["begin", "size"], ["end0"]),
             n("Equal", ["size", "minus1"], ["is_all"]), n("Cast", ["is_all"], ["is_all_i"], to=TensorProto.INT64),
             _const("big", [INT64_MAX]), n("Mul", ["big", "is_all_i"], ["extra"]), n("Add", ["end0", "extra"], ["end"]),
             n("Slice", ["table", "begin", "end"], ["rows"]), n("Add", ["X", "rows"], ["Y"])]
    graph = helper.make_graph(nodes, "slice_size", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "T", 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    gm = onnx_to_torch(prepare(model))
    program = export_program(gm, [_spec("X", [None, None, 4])]).program
    assert _remaining_readers(gm) == []
    for shape in ((1, 1, 4), (3, 7, 4), (2, 16, 4)):
        x = torch.randn(*shape)
        (want,) = session.run(None, {"X": x.numpy()})
        _assert_same(program.module()(x), torch.from_numpy(want))


def test_float_range_over_a_length_keeps_it_one_symbol() -> None:
    """Keras positions ``range(0.0, float(length), 1.0)`` added to a mask of that length (keras-hub's GPT-2).

    With float bounds torch.export gets the length ``ceil(float(s) / 1.0)`` and ties it to the mask's
    length only through a guard it writes as float code; counted in ints, both are the same symbol.
    """
    from migrate.conversion.export import export_program as export_specs

    n = helper.make_node
    nodes = [n("Shape", ["X"], ["s"]), _const("t_idx", 1), n("Gather", ["s", "t_idx"], ["t"]),
             n("Cast", ["t"], ["t_f"], to=TensorProto.FLOAT), _const("zero", 0.0, np.float32),
             _const("step", 1.0, np.float32), n("Range", ["zero", "t_f", "step"], ["positions"]),
             n("Add", ["M", "positions"], ["Y"]), n("Mul", ["Y", "X"], ["Z"])]
    graph = helper.make_graph(nodes, "positions", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "T"]),
                                                   helper.make_tensor_value_info("M", TensorProto.FLOAT, ["N", "T"])],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    specs = [{"name": name, "dtype": "float32", "shape": [None, None]} for name in ("X", "M")]
    exported = export_specs(onnx_to_torch(prepare(model)), specs)
    assert exported.dims == {"batch": [["X", 0], ["M", 0]], "seq": [["X", 1], ["M", 1]]}
    assert not any("ceil" in guard for guard in exported.program._guards_code)  # what .module() checks per call
    x, m = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(exported.program.module()(x, m), (m + torch.arange(5.0)) * x)


def test_optimize_rejects_nothing_it_cannot_prove() -> None:
    """A Reshape whose shape is real data (not from Shape/constants) is left as onnx2torch wrote it."""
    n = helper.make_node
    nodes = [n("Reshape", ["X", "S"], ["Y"])]
    graph = helper.make_graph(nodes, "data_shape",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("S", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    gm = onnx_to_torch(prepare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    inputs = (torch.randn(2, 3), torch.tensor([3, 2]))
    optimize(gm, inputs)
    assert _remaining_readers(gm) == ["OnnxReshape"]
    assert gm(*inputs).shape == (3, 2)


# ---- fixture models from real TensorFlow ----------------------------------------------------

_CONVERTED: dict[str, tuple[Path, onnx.ModelProto, dict[str, Any]]] = {}


def _convert(name: str) -> tuple[Path, onnx.ModelProto, dict[str, Any]]:
    """Fixture -> (SavedModel dir, ONNX model, signature.json) through the TF worker, once per session."""
    if name not in _CONVERTED:
        from fixtures.models import model_dir
        from migrate.tf.client import run_worker

        source = model_dir(name) / "saved_model"
        with tempfile.TemporaryDirectory(prefix=f"fx-passes-{name}-") as tmp:
            onnx_path, sig_path = Path(tmp, "model.onnx"), Path(tmp, "signature.json")
            run_worker("export", {"source": str(source), "signature": "serving_default", "opset": 17,
                                  "onnx": str(onnx_path), "signature_json": str(sig_path), "keep_layout": False})
            _CONVERTED[name] = (source, onnx.load(str(onnx_path)), json.loads(sig_path.read_text()))
    return _CONVERTED[name]


def _inputs(specs: list[dict[str, Any]], batch: int, seed: int) -> tuple[dict[str, np.ndarray], tuple[torch.Tensor, ...]]:
    """Random inputs in the TF layout and the same in the converted model's layout."""
    from tests.conftest import random_tf_inputs, to_torch_layout

    feeds = random_tf_inputs(specs, batch=batch, seed=seed)
    return feeds, tuple(torch.from_numpy(to_torch_layout(feeds[s["tf_name"]], s)) for s in specs)


def _export_fixture(name: str) -> tuple[Path, dict[str, Any], torch.fx.GraphModule, Any]:
    """(source, signature, unoptimized GraphModule, exported program) with every None dim dynamic."""
    source, model, signature = _convert(name)
    original = onnx_to_torch(prepare(model))
    optimized = copy.deepcopy(original)
    program = export_program(optimized, signature["inputs"]).program  # optimizes ``optimized`` in place
    assert _remaining_readers(optimized) == []
    return source, signature, original, program


@pytest.mark.parametrize("name", ["shape_flatten", "shape_dynamic", "shape_resize", "shape_keras_resize"])
def test_shape_fixture_exports_and_matches_tf(name: str) -> None:
    from tests.conftest import assert_close, tf_predict, to_tf_layout

    source, signature, original, program = _export_fixture(name)
    specs = signature["inputs"]
    batches = [_inputs(specs, batch=b, seed=b) for b in (1, 3)]
    references = tf_predict(source, [feeds for feeds, _ in batches])
    for (_, inputs), reference in zip(batches, references):
        exported = _leaves(program.module()(*inputs))
        _assert_same(exported, original(*inputs))
        for spec, got in zip(signature["outputs"], exported):
            assert_close(to_tf_layout(got.numpy(), spec), reference[spec["tf_name"]], what=f"{name}:{spec['name']}")
    torch._dynamo.reset()
    compiled = torch.compile(program.module(), fullgraph=True, backend="eager")
    for batch in (2, 3):
        _, inputs = _inputs(specs, batch=batch, seed=11)
        _assert_same(compiled(*inputs), original(*inputs))


#: The fixtures tests/test_convert.py covers: tests/test_zoo.py checks the passes on every other one in its
#: single sweep; here the passes must leave no value-reading module and change no output (batch 1 and 3).
ZOO = sorted({name for name, _, _ in CASES})


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_exports_unchanged(name: str) -> None:
    _, signature, original, program = _export_fixture(name)
    for batch in (1, 3):
        _, inputs = _inputs(signature["inputs"], batch=batch, seed=batch)
        _assert_same(program.module()(*inputs), original(*inputs))


@pytest.mark.slow
def test_inductor_compiles_optimized_model() -> None:
    """One real inductor build (C++ codegen) on a small model with run-time shapes."""
    _source, model, _signature = _convert("shape_dynamic")
    original = onnx_to_torch(prepare(model))
    optimized = optimize(copy.deepcopy(original), (torch.randn(2, 6, 8),))
    torch._dynamo.reset()
    compiled = torch.compile(optimized, fullgraph=True, dynamic=True)
    for batch in (2, 3):
        x = torch.randn(batch, 6, 8)
        _assert_same(compiled(x), original(x), atol=1e-5)
