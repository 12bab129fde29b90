"""Recurrent and control-flow converters: ONNX Runtime on hand-built graphs, and the Keras fixtures vs TF."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from migrate.conversion.onnx2torch_compat import onnx2torch

onnx2torch()
import torch

from migrate.conversion.converters.control_flow import OnnxIf, OnnxIfConstant, OnnxLoop
from migrate.conversion.converters.recurrent import OnnxRecurrent
from migrate.conversion.to_torch import onnx_to_torch, prepare
from migrate.core.errors import ConversionError

SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _model(nodes, inputs, outputs, initializers, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _run_both(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], object]:
    expected = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    gm = onnx_to_torch(prepare(model))
    with torch.no_grad():
        got = gm(*(torch.from_numpy(v) for v in feeds.values()))
    got = got if isinstance(got, (list, tuple)) else [got]
    return expected, [g.numpy() for g in got], gm


def _assert_close(got: list[np.ndarray], expected: list[np.ndarray], atol: float = 1e-5) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=atol, rtol=1e-4)


def _recurrent_model(op: str, direction: str, states: bool, lens: bool = False, layout: int = 0,
                     **attrs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, s).astype(np.float32), n) for n, s in
             (("W", (dirs, g * HIDDEN, INPUT)), ("R", (dirs, g * HIDDEN, HIDDEN)), ("B", (dirs, 2 * g * HIDDEN)))]
    x_shape = ["batch", SEQ, INPUT] if layout else [SEQ, "batch", INPUT]
    s_shape = ["batch", dirs, HIDDEN] if layout else [dirs, "batch", HIDDEN]
    sized = lambda shape: [BATCH if d == "batch" else d for d in shape]
    feeds = {"X": rng.normal(size=sized(x_shape)).astype(np.float32)}
    names = ["X", "W", "R", "B", "", "", ""]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if lens:
        feeds["L"] = np.array([SEQ, 2, 4][:BATCH], dtype=np.int32)
        names[4] = "L"
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, ["batch"]))
    if states:
        for i, name in ((5, "H0"), (6, "C0"))[: 2 if op == "LSTM" else 1]:
            feeds[name] = rng.normal(size=sized(s_shape)).astype(np.float32)
            names[i] = name
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, s_shape))
    if "P" in attrs:
        inits.append(numpy_helper.from_array(attrs.pop("P"), "P"))
        names += [""] * (8 - len(names))
        names[7] = "P"
    while names and not names[-1]:
        names.pop()
    outs = ["Y", "Y_h", "Y_c"][: 3 if op == "LSTM" else 2]
    extra = {"layout": layout} if layout else {}
    node = helper.make_node(op, names, outs, hidden_size=HIDDEN, direction=direction, **extra, **attrs)
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    return _model([node], inputs, outputs, inits, opset=14 if layout else 17), feeds


def _recurrent_module(gm) -> OnnxRecurrent:
    return next(m for m in gm.modules() if isinstance(m, OnnxRecurrent))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("states", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_native_recurrent_matches_onnxruntime(op, direction, states):
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    model, feeds = _recurrent_model(op, direction, states, **attrs)
    expected, got, gm = _run_both(model, feeds)
    assert _recurrent_module(gm).native
    _assert_close(got, expected)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("states", [False, True], ids=["zero-state", "initial-state"])
def test_gru_linear_before_reset_0_uses_the_cell_loop(direction, states):
    model, feeds = _recurrent_model("GRU", direction, states, linear_before_reset=0)
    expected, got, gm = _run_both(model, feeds)
    assert not _recurrent_module(gm).native
    _assert_close(got, expected)


CELL_LOOP_CASES = {
    "lstm-peepholes-clip": ("LSTM", {"clip": 0.7, "P": np.random.default_rng(1).normal(
        0, 0.5, (2, 3 * HIDDEN)).astype(np.float32)}),
    "lstm-input-forget": ("LSTM", {"input_forget": 1}),
    "lstm-hardsigmoid-relu": ("LSTM", {"activations": ["HardSigmoid", "Relu", "Tanh"] * 2,
                                       "activation_alpha": [0.3, 0.25], "activation_beta": [0.4, 0.6]}),
    "gru-leakyrelu": ("GRU", {"activations": ["Sigmoid", "LeakyRelu"] * 2, "activation_alpha": [0.2, 0.1]}),
    "rnn-relu": ("RNN", {"activations": ["Relu", "Relu"]}),
}


@pytest.mark.parametrize("case", sorted(CELL_LOOP_CASES))
def test_cell_loop_semantics_match_onnxruntime(case):
    op, attrs = CELL_LOOP_CASES[case]
    model, feeds = _recurrent_model(op, "bidirectional", True, **dict(attrs))
    expected, got, gm = _run_both(model, feeds)
    assert not _recurrent_module(gm).native
    _assert_close(got, expected)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sequence_lens_mask_steps_like_onnxruntime(op, direction):
    model, feeds = _recurrent_model(op, direction, True, lens=True)
    expected, got, _ = _run_both(model, feeds)
    _assert_close(got, expected)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_batch_first_layout(op):
    """layout=1 (opset 14): ONNX Runtime has no batch-first kernel, so compare with its layout=0 result."""
    model, feeds = _recurrent_model(op, "bidirectional", True)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    node = model.graph.node[0]
    node.attribute.append(helper.make_attribute("layout", 1))
    model.opset_import[0].version = 14
    for value in model.graph.input:
        value.type.tensor_type.ClearField("shape")
    batch_first = {k: np.ascontiguousarray(v.swapaxes(0, 1)) for k, v in feeds.items()}
    with torch.no_grad():
        got = onnx_to_torch(prepare(model))(*(torch.from_numpy(v) for v in batch_first.values()))
    _assert_close([got[0].numpy()] + [g.numpy() for g in got[1:]],
                  [expected[0].transpose(2, 0, 1, 3)] + [e.swapaxes(0, 1) for e in expected[1:]])


def test_non_constant_weights_are_refused_with_the_node_name():
    model, _feeds = _recurrent_model("LSTM", "forward", False)
    w = model.graph.initializer[0]
    model.graph.initializer.remove(w)
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.dims)))
    with pytest.raises(ConversionError, match="W.*computed at run time"):
        onnx_to_torch(prepare(model))


@pytest.mark.parametrize("time_axis", [0, 1])
def test_reverse_sequence_matches_onnxruntime(time_axis):
    rng = np.random.default_rng(2)
    shape = [SEQ, BATCH, 2] if time_axis == 0 else [BATCH, SEQ, 2]
    feeds = {"x": rng.normal(size=shape).astype(np.float32), "lens": np.array([5, 1, 3], dtype=np.int64)}
    node = helper.make_node("ReverseSequence", ["x", "lens"], ["y"], time_axis=time_axis, batch_axis=1 - time_axis)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                            helper.make_tensor_value_info("lens", TensorProto.INT64, [BATCH])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [])
    expected, got, _ = _run_both(model, feeds)
    _assert_close(got, expected, atol=0)


def _if_model(pred_from_input: bool) -> onnx.ModelProto:
    """y = relu(x @ w) if sum(x) > 0 else tanh(x) * 2; the branches read x and w from the outer scope."""
    w = numpy_helper.from_array(np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32), "w")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["t"])],
                               "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    else_g = helper.make_graph([helper.make_node("Tanh", ["x"], ["h"]), helper.make_node("Mul", ["h", "two"], ["e"])],
                               "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)], [two])
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    if pred_from_input:
        nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["p"])]
        inits = [w, zero]
    else:
        nodes = [helper.make_node("Constant", [], ["p"], value=numpy_helper.from_array(np.array(False)))]
        inits = [w]
    nodes.append(helper.make_node("If", ["p"], ["y"], then_branch=then_g, else_branch=else_g))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])], [out], inits)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["then", "else"])
def test_data_dependent_if_takes_the_branch_onnxruntime_takes(sign):
    x = np.abs(np.random.default_rng(4).normal(size=(3, 4))).astype(np.float32) * sign
    expected, got, gm = _run_both(_if_model(True), {"x": x})
    assert any(isinstance(m, OnnxIf) for m in gm.modules())
    _assert_close(got, expected)


def test_constant_if_keeps_only_the_taken_branch():
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    expected, got, gm = _run_both(_if_model(False), {"x": x})
    assert any(isinstance(m, OnnxIfConstant) for m in gm.modules())
    _assert_close(got, expected)


def _loop_model(trip_count: int | None, data_dependent_exit: bool = False) -> onnx.ModelProto:
    """acc_{i+1} = acc_i * 0.5 + x[i] (x read from the outer scope), scan output acc_{i+1};
    the exit condition is ``i + 1 < 4`` (static) or ``sum(acc) < 3`` (data dependent)."""
    body_nodes = [
        helper.make_node("Gather", ["x", "i"], ["xi"], axis=0),
        helper.make_node("Mul", ["acc", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "xi"], ["acc_out"]),
        helper.make_node("Identity", ["acc_out"], ["scan"]),
    ]
    if data_dependent_exit:
        body_nodes += [helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
                       helper.make_node("Less", ["total", "three"], ["cond_out"])]
    else:
        body_nodes += [helper.make_node("Add", ["i", "one"], ["next"]),
                       helper.make_node("Less", ["next", "four"], ["cond_out"])]
    consts = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in
              (("half", 0.5, np.float32), ("one", 1, np.int64), ("four", 4, np.int64), ("three", 3.0, np.float32))]
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("scan", TensorProto.FLOAT, ["batch", 2])], consts)
    inits = [numpy_helper.from_array(np.array(True), "cond0")]
    if trip_count is not None:
        inits.append(numpy_helper.from_array(np.array(trip_count, np.int64), "M"))
    loop = helper.make_node("Loop", ["M" if trip_count is not None else "", "cond0", "acc0"], ["acc_final", "scans"],
                            body=body)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, "batch", 2]),
              helper.make_tensor_value_info("acc0", TensorProto.FLOAT, ["batch", 2])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("acc_final", "scans")]
    return _model([loop], inputs, outputs, inits)


@pytest.mark.parametrize("trip_count,trips", [(6, 4), (3, 3), (None, 4)])
def test_counted_loop_unrolls_to_onnxruntime_trip_count(trip_count, trips):
    rng = np.random.default_rng(6)
    feeds = {"x": rng.normal(size=(6, 3, 2)).astype(np.float32), "acc0": rng.normal(size=(3, 2)).astype(np.float32)}
    expected, got, gm = _run_both(_loop_model(trip_count), feeds)
    assert next(m for m in gm.modules() if isinstance(m, OnnxLoop)).trips == trips
    assert got[1].shape[0] == trips
    _assert_close(got, expected)


def test_data_dependent_loop_is_refused_with_a_clear_error():
    with pytest.raises(ConversionError, match="exit condition depends on values computed at run time"):
        onnx_to_torch(prepare(_loop_model(6, data_dependent_exit=True)))


#: case -> (model and feeds, batch axis of each input)
EXPORT_CASES = {
    "lstm-bidirectional": (lambda: _recurrent_model("LSTM", "bidirectional", True), {"X": 1, "H0": 1, "C0": 1}),
    "gru-reverse": (lambda: _recurrent_model("GRU", "reverse", False, linear_before_reset=1), {"X": 1}),
    "gru-lbr0-lens": (lambda: _recurrent_model("GRU", "forward", True, lens=True), {"X": 1, "L": 0, "H0": 1}),
    "if": (lambda: (_if_model(True), {"x": np.ones((3, 4), np.float32)}), {"x": 0}),
    "loop": (lambda: (_loop_model(6), {"x": np.ones((6, 3, 2), np.float32), "acc0": np.ones((3, 2), np.float32)}),
             {"x": 1, "acc0": 0}),
}


def _as_list(value) -> list[np.ndarray]:
    return [v.detach().numpy() for v in (value if isinstance(value, (list, tuple)) else [value])]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_modules_export_with_dynamic_batch_and_compile_fullgraph(case):
    build, axes = EXPORT_CASES[case]
    model, feeds = build()
    gm = onnx_to_torch(prepare(model))
    batch = torch.export.Dim("batch")
    program = torch.export.export(gm, tuple(torch.from_numpy(v) for v in feeds.values()),
                                  dynamic_shapes=tuple({axes[k]: batch} for k in feeds))
    session = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(7)
    for size in (1, 3):
        resized = {k: np.repeat(v.take([0], axis=axes[k]), size, axis=axes[k]) for k, v in feeds.items()}
        resized = {k: (v + rng.normal(size=v.shape).astype(v.dtype)) if v.dtype == np.float32 else v
                   for k, v in resized.items()}
        _assert_close(_as_list(program.module()(*(torch.from_numpy(v) for v in resized.values()))),
                      session.run(None, resized))
    torch._dynamo.reset()
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    compiled = torch.compile(gm, fullgraph=True, backend="eager")
    _assert_close(_as_list(compiled(*args)), _as_list(gm(*args)))


FIXTURES = ["rnn_embedding_lstm", "rnn_stacked_gru", "rnn_bilstm", "rnn_lstm_state", "cond_tf_module"]


def _export_fixture(source, tmp_path, opset: int) -> tuple[onnx.ModelProto, dict]:
    """SavedModel -> ONNX through the TF worker (a child process), like ``tf2torch convert`` does."""
    import json

    from migrate.tf.client import run_worker

    onnx_path, sig_path = tmp_path / f"m{opset}.onnx", tmp_path / f"sig{opset}.json"
    run_worker("export", {"source": str(source), "signature": "serving_default", "opset": opset,
                          "keep_layout": False, "onnx": str(onnx_path), "signature_json": str(sig_path)})
    return onnx.load(str(onnx_path)), json.loads(sig_path.read_text())


def _fixture_batches(name: str, specs: list[dict]) -> list[dict[str, np.ndarray]]:
    from tests.conftest import random_tf_inputs

    batches = [random_tf_inputs(specs, batch, seed=batch) for batch in (1, 3)]
    if name.startswith("cond"):  # one batch through each branch of the tf.cond
        batches = [{k: np.abs(v) * sign for k, v in feeds.items()} for feeds, sign in zip(batches, (1, -1))]
    return batches


@pytest.mark.slow
@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_tensorflow_and_exports(fixture_model, tmp_path, name, opset):
    """Eager GraphModule, torch.export with a dynamic batch and torch.compile(fullgraph) all match TF."""
    from migrate.conversion.export import export_program
    from tests.conftest import assert_close, tf_predict

    source = fixture_model(name) / "saved_model"
    model, info = _export_fixture(source, tmp_path, opset)
    input_order = [i.name for i in model.graph.input]
    output_order = [o.name for o in model.graph.output]
    batches = _fixture_batches(name, info["inputs"])
    expected = tf_predict(source, batches)
    gm = onnx_to_torch(prepare(model))

    def run(module, feeds):
        return _as_list(module(*(torch.from_numpy(feeds[n]) for n in input_order)))

    errors = {}
    with torch.no_grad():
        eager = [run(gm, feeds) for feeds in batches]
    by_tf = {s["tf_name"]: s for s in info["inputs"]}
    program = export_program(gm, [by_tf[n] for n in input_order]).program
    torch._dynamo.reset()
    compiled = torch.compile(gm, fullgraph=True, backend="eager")
    for how, outs in (("eager", eager), ("export", [run(program.module(), f) for f in batches]),
                      ("compile", [run(compiled, f) for f in batches])):
        for feeds, want, got in zip(batches, expected, outs):
            for out_name, array in zip(output_order, got):
                what = f"{name}/{out_name} opset {opset} {how} batch {len(next(iter(feeds.values())))}"
                errors[what] = assert_close(array, want[out_name], what=what)
    print("\n".join(f"max abs err {v:.3g}  {k}" for k, v in errors.items()))


def test_control_flow_opsets_come_from_the_conversion_context():
    """Folding and subgraphs use the opsets onnx_to_torch sets for the model, not the caller's frame."""
    from migrate.conversion.converters.subgraph import _opsets, converting
    from migrate.conversion.passes.driver import MIN_TRACE_BATCH, optimize

    with pytest.raises(ConversionError, match="run only inside"):
        _opsets()
    model = _if_model(True)
    with converting(model, optimize, MIN_TRACE_BATCH):
        assert [(o.domain, o.version) for o in _opsets()] == [("", 17)]
    with pytest.raises(ConversionError, match="run only inside"):
        _opsets()
