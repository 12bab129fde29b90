"""Keras recurrent layers over a ``None`` time dim (masked or not) as native recurrent modules, vs TF.

Each fixture goes through the TF worker (SavedModel -> ONNX), is converted, and must match
TensorFlow at batch 1 and 3 and lengths 1, 7 and 64 eagerly, as a ``torch.export`` program with
batch and time dynamic, and under ``torch.compile(fullgraph=True)``. Masked models get zero padding
at the end of some sequences. Nothing is unrolled: the graph is the same size whatever the length.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from migrate.onnx2torch_compat import onnx2torch

onnx2torch()
import torch  # noqa: E402
from torch.export import Dim  # noqa: E402

from migrate.converters.control_flow import OnnxLoop  # noqa: E402
from migrate.converters.recurrent_loop import RecurrentLoop  # noqa: E402
from migrate.to_torch import onnx_to_torch, prepare  # noqa: E402

#: fixture -> (recurrent Loop kinds it must convert to, whether its input is masked by zeros)
FIXTURES = {
    "rnn_text_bilstm": ([], False),  # unmasked: tf2onnx already writes an ONNX LSTM
    "rnn_text_bilstm_masked": (["LSTM", "LSTM"], True),
    "rnn_gru_dynamic": (["GRU", "GRU_RESET_BEFORE"], False),
    "rnn_masked_lstm_seq": (["LSTM"], True),
}
LENGTHS = (1, 7, 64)
VOCAB = 40


def _export(source, tmp_path) -> tuple[onnx.ModelProto, dict]:
    from migrate.worker_client import run_worker

    onnx_path, sig_path = tmp_path / "m.onnx", tmp_path / "sig.json"
    run_worker("export", {"source": str(source), "signature": "serving_default", "opset": 17,
                          "keep_layout": False, "onnx": str(onnx_path), "signature_json": str(sig_path)})
    return onnx.load(str(onnx_path)), json.loads(sig_path.read_text())


def _inputs(value: onnx.ValueInfoProto, batch: int, length: int, padded: bool, seed: int) -> np.ndarray:
    """Token ids in [1, VOCAB) or normal floats; with ``padded``, rows 1 and 2 end in zero padding."""
    rng = np.random.default_rng(seed)
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim[2:]]
    if value.type.tensor_type.elem_type == onnx.TensorProto.INT32:
        x = rng.integers(1, VOCAB, (batch, length)).astype(np.int32)
    else:
        x = rng.standard_normal((batch, length, *dims)).astype(np.float32)
    if padded and batch > 1:
        x[1, max(1, length // 2):] = 0
        x[2, max(1, length - 2):] = 0
    return x


def _recurrent_kinds(gm) -> list[str]:
    assert not any(isinstance(m, OnnxLoop) for m in gm.modules()), "a recurrent Loop was unrolled"
    return sorted(m.kind for m in gm.modules() if isinstance(m, RecurrentLoop))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_dynamic_length_matches_tensorflow(fixture_model, tmp_path, name):
    from migrate.fx_passes import export_program
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
    program = export_program(gm, (torch.from_numpy(_inputs(value, 3, 8, padded, seed=0)),),
                             dynamic_shapes=({0: batch, 1: time},))
    torch._dynamo.reset()
    compiled = torch.compile(gm, fullgraph=True, backend="eager")
    out_name = next(iter(expected[0]))
    errors = {}
    for (batch_size, length), x, want, got in zip(cases, feeds, expected, eager):
        with torch.no_grad():
            runs = {"eager": got, "export": program.module()(torch.from_numpy(x)),
                    "compile": compiled(torch.from_numpy(x))}
        for how, out in runs.items():
            what = f"{name} {how} batch {batch_size} length {length}"
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
