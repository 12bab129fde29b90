"""``tf2torch port`` on the Keras models the ``convert`` fixtures build: eval parity with Keras ``training=False``.

Each builder also writes ``model.keras``; the CLI ports it, ``migrate.load_port`` loads it, and the module is
compared with ``model(x, training=False)`` in the Keras worker at batch 1 and 3 (and two lengths where an input
has a ``None`` non-batch dimension). Fixtures that port refuses or gets wrong are listed in docs/port.md (limits).
"""

from __future__ import annotations

import pytest

from tests.test_port import assert_port_matches_keras, tf2torch

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
    source = fixture_model(name) / "model.keras"
    out = tmp_path / "out"
    proc = tf2torch("port", str(source), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert_port_matches_keras(source, out, name, seed=20)
