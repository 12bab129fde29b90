"""``tf2torch port`` on the Keras models the ``convert`` fixtures build: eval parity with Keras ``training=False``.

Each builder also writes ``model.keras``; the CLI ports it, ``migrate.load_port`` loads it, and the module is
compared with ``model(x, training=False)`` in the Keras worker at batch 1 and 3 (and two lengths where an input
has a ``None`` non-batch dimension). Fixtures that port refuses or gets wrong are listed in docs/port.md (limits).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_close
from tests.test_port import keras_inputs, keras_predict, run_module, tf2torch

#: convert fixtures built from a Keras model whose ``model.keras`` ports and matches Keras
FIXTURES = [
    "attn_encoder",
    "cnn_conv1d_causal",
    "cnn_conv3d",
    "cnn_separable",
    "image2image",
    "keras_resize_bn",
    "mlp",
    "rnn_bilstm",
    "rnn_gru_dynamic",
    "rnn_embedding_lstm",
    "rnn_lstm_state",  # dict outputs: returned in Keras's flattening order (sorted keys)
    "rnn_masked_bigru_state",
    "rnn_masked_gru_rnn",
    "rnn_masked_lstm_seq",
    "rnn_stacked_gru",
    "rnn_text_bilstm",
    "rnn_text_bilstm_masked",
    "shape_flatten",
    "shape_keras_resize",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXTURES)
def test_ported_convert_fixture_matches_keras(fixture_model, tmp_path, name):
    import migrate

    source = fixture_model(name) / "model.keras"
    out = tmp_path / "out"
    proc = tf2torch("port", str(source), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out)
    dynamic = any(d is None for s in manifest["inputs"] for d in s["tf_shape"][1:])
    cases = [(batch, length) for batch in (1, 3) for length in ((7, 4) if dynamic else (7,))]
    batches = [keras_inputs(manifest, batch, seed=20 + batch, length=length) for batch, length in cases]
    for (batch, length), feeds, want in zip(cases, batches, keras_predict(source, batches)):
        got = run_module(module, manifest, feeds)
        for key, expected in want.items():
            assert_close(got[key], expected, what=f"{name} {key} batch {batch} length {length}")
