"""Masked sequences (``Embedding(mask_zero=True)``, ``Masking``) port exactly, with padding anywhere.

Keras skips masked steps wherever they are: the recurrent state is carried through them, the outputs
repeat the previous one (or are zeros inside a Bidirectional returning sequences), and a masked
GlobalAveragePooling1D averages over the valid steps only. The references are Keras' own outputs.
"""

from __future__ import annotations

import json

import pytest
import torch

from migrate.tf.keras_worker import padded_steps
from tests import test_port
from tests.conftest import assert_close
from tests.test_port import keras_inputs, keras_predict, run_module, tf2torch

ported = test_port.ported  # the module-scoped fixture: each model is ported once per module


def padded(manifest: dict, batch: int, length: int, seed: int) -> dict:
    """Inputs whose sequences are padded at the start, inside and at the end (token 0, all-zero rows)."""
    feeds = keras_inputs(manifest, batch, seed, length)
    feeds["tokens"] = feeds["tokens"] % 9 + 1
    for row, steps in enumerate(padded_steps(batch, length)):
        for name in feeds:
            feeds[name][row, steps] = 0
    feeds["tokens"][-1, 2:4] = 0  # a run of padded steps inside one sequence
    return feeds


def test_padding_anywhere_matches_keras(ported):
    import migrate

    source, out = ported("port_text_masked")
    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out)
    cases = [(batch, length) for batch in (1, 3) for length in (7, 5)]
    batches = [padded(manifest, batch, length, seed=30 + batch + length) for batch, length in cases]
    for (batch, length), feeds, want in zip(cases, batches, keras_predict(source, batches)):
        unmasked = run_module(module, manifest, {k: v % 9 + 1 if k == "tokens" else v + 1 for k, v in feeds.items()})
        got = run_module(module, manifest, feeds)
        assert_close(got["logits"], want["logits"], what=f"batch {batch} length {length}")
        assert not torch.allclose(torch.from_numpy(got["logits"]), torch.from_numpy(unmasked["logits"]))


def test_model_py_runs_the_mask_through_the_native_kernels(ported):
    text = (ported("port_text_masked")[1] / "model.py").read_text()
    assert "tokens_mask = tokens != 0" in text and "features_mask = features_nonzero.any(dim=-1)" in text
    assert "self.bilstm_forward = nn.LSTM(8, 6, batch_first=True)" in text
    assert "keras_masked_rnn(self.bilstm_backward, embed.flip(1), tokens_mask.flip(1), zero_masked=True)" in text


@pytest.mark.parametrize("consumer, call", [("MultiHeadAttention", "(2, 4, name='pool')(y, y)"),
                                            ("Attention", "(name='pool')([y, y])")])
def test_a_mask_consumer_without_support_is_refused(tmp_path, consumer, call):
    """A layer that would apply the mask in Keras but has no masked port: exit 1, one line, nothing written."""
    import subprocess
    import sys

    script = (
        "import keras\n"
        "x = keras.Input((None,), dtype='int32')\n"
        "y = keras.layers.Embedding(10, 4, mask_zero=True, name='embed')(x)\n"
        f"y = keras.layers.{consumer}{call}\n"
        f"keras.Model(x, y).save({str(tmp_path / 'model.keras')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    proc = tf2torch("port", str(tmp_path / "model.keras"), "-o", str(tmp_path / "out"), "-q")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pool ({consumer})" in lines[0] and "mask" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
