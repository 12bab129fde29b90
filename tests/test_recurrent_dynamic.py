"""Keras recurrent layers over a ``None`` time dim (masked or not) as native recurrent modules, vs TF.

Each fixture goes through the TF worker (SavedModel -> ONNX), is converted, and must match
TensorFlow at batch 1 and 3 and lengths 1, 7 and 64 eagerly, as a ``torch.export`` program with
batch and time dynamic, and under ``torch.compile(fullgraph=True)``. Masked models get zero padding
at the end of some sequences (and masked steps inside one). Nothing is unrolled: the graph is the same size whatever the length.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from migrate.conversion.onnx2torch_compat import onnx2torch

onnx2torch()
import torch
from torch.export import Dim

from migrate.conversion.converters.control_flow import OnnxLoop
from migrate.conversion.converters.recurrent_loop import RecurrentLoop
from migrate.conversion.to_torch import onnx_to_torch, prepare

#: fixture -> (recurrent Loop kinds it must convert to, whether its input is masked by zeros)
FIXTURES = {
    "rnn_text_bilstm": ([], False),  # unmasked: tf2onnx already writes an ONNX LSTM
    "rnn_text_bilstm_masked": (["LSTM", "LSTM"], True),
    "rnn_gru_dynamic": (["GRU", "GRU_RESET_BEFORE"], False),
    "rnn_masked_lstm_seq": (["LSTM"], True),
    "rnn_masked_gru_rnn": (["GRU", "RNN_TANH"], True),
    "rnn_masked_bigru_state": (["GRU", "GRU", "LSTM", "LSTM"], True),
}
LENGTHS = (1, 7, 64)
VOCAB = 40


def _export(source, tmp_path) -> tuple[onnx.ModelProto, dict]:
    from migrate.tf.client import run_worker

    onnx_path, sig_path = tmp_path / "m.onnx", tmp_path / "sig.json"
    run_worker("export", {"source": str(source), "signature": "serving_default", "opset": 17,
                          "keep_layout": False, "onnx": str(onnx_path), "signature_json": str(sig_path)})
    return onnx.load(str(onnx_path)), json.loads(sig_path.read_text())


def _inputs(value: onnx.ValueInfoProto, batch: int, length: int, padded: bool, seed: int) -> np.ndarray:
    """Token ids in [1, VOCAB) or normal floats; with ``padded``, rows 1 and 2 end in zero padding and
    row 2 has zero steps inside too."""
    rng = np.random.default_rng(seed)
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim[2:]]
    if value.type.tensor_type.elem_type == onnx.TensorProto.INT32:
        x = rng.integers(1, VOCAB, (batch, length)).astype(np.int32)
    else:
        x = rng.standard_normal((batch, length, *dims)).astype(np.float32)
    if padded and batch > 1:
        x[1, max(1, length // 2):] = 0
        x[2, max(1, length - 2):] = 0
        x[2, 1:3] = 0  # masked steps inside the sequence too (Keras masks them wherever they are)
    return x


def _recurrent_kinds(gm) -> list[str]:
    assert not any(isinstance(m, OnnxLoop) for m in gm.modules()), "a recurrent Loop was unrolled"
    return sorted(m.kind for m in gm.modules() if isinstance(m, RecurrentLoop))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_dynamic_length_matches_tensorflow(fixture_model, tmp_path, name):
    from migrate.conversion.passes.driver import optimize
    from tests.conftest import assert_close, tf_predict

    kinds, padded = FIXTURES[name]
    source = fixture_model(name) / "saved_model"
    model, info = _export(source, tmp_path)
    value = model.graph.input[0]
    tf_name = info["inputs"][0]["tf_name"]
    cases = [(batch, length) for length in LENGTHS for batch in (1, 3)]
    feeds = [_inputs(value, batch, length, padded, seed=length * 10 + batch) for batch, length in cases]
    expected = tf_predict(source, [{tf_name: x} for x in feeds])
    gm = onnx_to_torch(prepare(model))
    assert _recurrent_kinds(gm) == sorted(kinds)
    with torch.no_grad():
        eager = [gm(torch.from_numpy(x)) for x in feeds]
    batch, time = Dim("batch"), Dim("time")
    example = (torch.from_numpy(_inputs(value, 3, 8, padded, seed=0)),)
    torch._dynamo.reset()
    program = torch.export.export(optimize(gm, example), example, dynamic_shapes=({0: batch, 1: time},),
                                  strict=False)
    torch._dynamo.reset()
    compiled = torch.compile(gm, fullgraph=True, backend="eager")
    out_names = [o.name for o in model.graph.output]
    errors = {}
    for (batch_size, length), x, want, got in zip(cases, feeds, expected, eager):
        with torch.no_grad():
            runs = {"eager": got, "export": program.module()(torch.from_numpy(x)),
                    "compile": compiled(torch.from_numpy(x))}
        for how, outs in runs.items():
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            assert len(outs) == len(out_names)
            for out_name, out in zip(out_names, outs):
                what = f"{name}/{out_name} {how} batch {batch_size} length {length}"
                errors[what] = assert_close(out.numpy(), want[out_name], what=what)
    print("\n".join(f"max abs err {v:.3g}  {k}" for k, v in errors.items()))


def _with_static_length(model: onnx.ModelProto, length: int) -> onnx.ModelProto:
    static = onnx.ModelProto()
    static.CopyFrom(model)
    static.graph.ClearField("value_info")  # tf2onnx's symbolic shapes; inference redoes them from the input
    static.graph.input[0].type.tensor_type.shape.dim[1].dim_value = length
    return static


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rnn_text_bilstm_masked", "rnn_gru_dynamic"])
def test_static_length_graph_does_not_grow_with_the_length(fixture_model, tmp_path, name):
    """A fixed length converts to the same recurrent modules and graph size at 8 and 64 steps."""
    model, _ = _export(fixture_model(name) / "saved_model", tmp_path)
    sizes = {}
    for length in (8, 64):
        gm = onnx_to_torch(prepare(_with_static_length(model, length)))
        assert _recurrent_kinds(gm) == sorted(FIXTURES[name][0])
        sizes[length] = len(gm.graph.nodes)
    assert sizes[8] == sizes[64]


def _keras_reference(kind: str, module: RecurrentLoop, x: torch.Tensor, mask: torch.Tensor, h0: torch.Tensor,
                     c0: torch.Tensor, zero_masked: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keras's masked loop step by step with torch's own cells: a masked step keeps h and c and outputs
    the previous output (or zeros)."""
    hidden = h0.shape[-1]
    if kind == "LSTM":
        cell = torch.nn.LSTMCell(x.shape[-1], hidden)
    elif kind == "GRU":
        cell = torch.nn.GRUCell(x.shape[-1], hidden)
    else:
        cell = torch.nn.RNNCell(x.shape[-1], hidden, nonlinearity="tanh" if kind == "RNN_TANH" else "relu")
    weight_ih = module.weight_ih[:, : x.shape[-1]]  # without the LSTM hold feature
    cell.load_state_dict({"weight_ih": weight_ih, "weight_hh": module.weight_hh, "bias_ih": module.bias_ih,
                          "bias_hh": module.bias_hh})
    h, c, out, outs = h0, c0, torch.zeros_like(h0), []
    for t in range(x.shape[0]):
        keep = mask[t]
        if kind == "LSTM":
            h_new, c_new = cell(x[t], (h, c))
            c = torch.where(keep, c_new, c)
        else:
            h_new = cell(x[t], h)
        h = torch.where(keep, h_new, h)
        out = torch.where(keep, h_new, torch.zeros_like(h_new) if zero_masked else out)
        outs.append(out)
    return torch.stack(outs), h, c


@pytest.mark.parametrize("zero_masked", [False, True], ids=["previous-output", "zero-output"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_masked_steps_anywhere_match_keras_semantics(kind, zero_masked):
    """Masks with gaps, leading masked steps and an all-masked entry; eager (kernels) and traced (scan)."""
    gen = torch.Generator().manual_seed(0)
    steps, batch, features, hidden = 6, 4, 3, 5
    gates = {"LSTM": 4, "GRU": 3}.get(kind, 1)
    weights = {"weight_ih": torch.randn(gates * hidden, features, generator=gen),
               "weight_hh": torch.randn(gates * hidden, hidden, generator=gen),
               "bias_ih": torch.randn(gates * hidden, generator=gen), "bias_hh": torch.randn(gates * hidden, generator=gen)}
    roles = ["count", "out", "h"] + (["c"] if kind == "LSTM" else [])
    module = RecurrentLoop(kind, hidden, weights, roles, 1, len(roles) + 1, masked=True, zero_masked=zero_masked)
    x = torch.randn(steps, batch, features, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 1]],
                        dtype=torch.bool).T[..., None]
    h0, c0 = torch.randn(batch, hidden, generator=gen), torch.randn(batch, hidden, generator=gen)
    inits = [torch.tensor(0), torch.zeros(batch, hidden), h0] + ([c0] if kind == "LSTM" else [])
    y_ref, h_ref, c_ref = _keras_reference(kind, module, x, mask, h0, c0, zero_masked)
    torch._dynamo.reset()
    traced = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        for run in (module, traced):
            count, last, h, *rest = run(x, mask, *inits)
            y = rest[-1]
            assert int(count) == steps
            torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(last, y_ref[-1], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-4)
            if kind == "LSTM":
                torch.testing.assert_close(rest[0], c_ref, atol=1e-5, rtol=1e-4)


def test_a_conversion_does_not_pin_the_next_ones_length(converted):
    """scan runs under torch.compile: Dynamo's cache from a length-7 model's export used to leave the next
    dynamic-length export a guard ``seq != 7``. Converted in one process, the second runs at 7 and 3."""
    converted("rnn_bilstm")  # time fixed to 7
    _, out = converted("rnn_gru_dynamic")
    program = torch.export.load(str(out / "model.pt2")).module()
    for length in (7, 3):
        with torch.no_grad():
            y = program(torch.ones(2, length, 5))
        assert torch.isfinite(y if isinstance(y, torch.Tensor) else y[0]).all()
