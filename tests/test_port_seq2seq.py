"""``tf2torch port`` on the Keras seq2seq Transformer (English-to-Spanish example): masks from a custom layer's
``compute_mask``, handed to custom layers that ``supports_masking``, the decoder's causal mask built from
``ops.shape`` at run time, and two token inputs of independent dynamic lengths.

``port_seq2seq`` writes ``get_config`` for its layers as the example does; ``port_seq2seq_noconfig`` is the same
model whose layers define none; ``port_seq2seq_nested`` wraps the decoder in a nested Functional model as the
published example does (the encoder's padding mask enters it, its output mask reaches the loss). Each is ported
once through the CLI and checked against Keras.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from tests.cli_helpers import assert_ruff_clean, imported_packages, train_parity
from tests.conftest import assert_close
from tests.test_port import run_module
from tests.test_port_custom import _module, keras_predict, tf2torch

FIXTURES = ["port_seq2seq", "port_seq2seq_noconfig", "port_seq2seq_nested"]
CLASSES = ["PositionalEmbedding", "TransformerEncoder", "TransformerDecoder"]
VOCABULARY = 40  # the fixtures' vocab_size
#: (batch, encoder length, decoder length): batch 1 and 3, two lengths for each dynamic axis, never equal
CASES = [(1, 7, 4), (3, 7, 4), (1, 5, 9), (3, 5, 9)]


@pytest.fixture(scope="module")
def ported(port_once):
    """``ported(name)`` -> (model.keras, OUT), ported with the fixture's module as --custom-objects."""
    return lambda name: port_once(name, custom_objects=_module(name))


def padded_tokens(rng: np.random.Generator, batch: int, length: int, row_pads: tuple[int, ...]) -> np.ndarray:
    """Token ids in [1, VOCABULARY) with each row's last ``row_pads[row % len]`` steps set to 0 (padding)."""
    ids = rng.integers(1, VOCABULARY, (batch, length)).astype("int64")
    for row in range(batch):
        pad = row_pads[row % len(row_pads)]
        if pad:
            ids[row, -pad:] = 0
    return ids


def feeds_for(batch: int, enc: int, dec: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"encoder_inputs": padded_tokens(rng, batch, enc, (2, 0, 3)),
            "decoder_inputs": padded_tokens(rng, batch, dec, (1, 3, 0))}


@pytest.mark.parametrize("name", FIXTURES)
def test_eval_matches_keras_two_independent_lengths(ported, name, tmp_path):
    """Keras ``model(x, training=False)`` vs the port at batch 1 and 3, encoder lengths 7 and 5, decoder lengths
    4 and 9 (each with padding at the end of some rows): every position, padded ones included."""
    import migrate

    source, out = ported(name)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["tf_shape"] for s in manifest["inputs"]] == [[None, None], [None, None]]
    module = migrate.load_port(out)
    batches = [feeds_for(b, e, d, seed=40 + i) for i, (b, e, d) in enumerate(CASES)]
    for (batch, enc, dec), feeds, want in zip(CASES, batches, keras_predict(source, name, batches, tmp_path)):
        got = run_module(module, manifest, feeds)
        for key, expected in want.items():
            assert expected.shape == (batch, dec, VOCABULARY)
            assert np.isfinite(got[key]).all()
            assert_close(got[key], expected, what=f"{name} {key} batch {batch} lengths {enc}/{dec}")


@pytest.mark.parametrize("name", FIXTURES)
def test_model_py_reads_like_the_keras_classes(ported, name):
    """One class per Keras class with Keras' attribute names; the masks are forward arguments; the causal mask
    follows the decoder input's shape (no traced size in the text); imports only torch; ruff-clean."""
    _, out = ported(name)
    text = (out / "model.py").read_text()
    imports = imported_packages(text)
    assert imports == {"torch"}, imports
    for cls in CLASSES:
        assert text.count(f"class {cls}(nn.Module):") == 1, (cls, text)
        assert f"class {cls}2(" not in text
    for line in ("self.token_embeddings = nn.Embedding(40, 16)", "self.position_embeddings = nn.Embedding(16, 16)",
                 "self.attention_1 = KerasMultiHeadAttention(", "self.layernorm_3 = nn.LayerNorm(16",
                 "self.dense_proj = DenseProj()",
                 "def forward(self, inputs: torch.Tensor, mask: torch.Tensor):",
                 ("def forward(self, inputs: torch.Tensor, encoder_outputs: torch.Tensor, inputs_mask: torch.Tensor, "
                  "encoder_outputs_mask: torch.Tensor):"),
                 "torch.arange(0, inputs.shape[1], device=inputs.device)",
                 ".reshape((1, inputs.shape[1], inputs.shape[1]))", ".repeat((inputs.shape[0], 1, 1))",
                 "encoder_inputs_mask = encoder_inputs != 0", "decoder_inputs_mask = decoder_inputs != 0",
                 "mask=encoder_outputs_mask[:, None, :])",
                 "self.output_mask = decoder_inputs_mask"):
        assert line in text, (line, text)
    assert not any(str(size) in text for size in (9973, 9967, 9949))  # no traced sentinel size
    if name == "port_seq2seq_nested":  # the encoder's padding mask is the nested decoder's last argument
        for line in ("decoder_state_inputs_mask: torch.Tensor):",
                     "self.functional_2(decoder_inputs, transformer_encoder, encoder_inputs_mask)",
                     "self.output_mask = self.functional_2.output_mask"):
            assert line in text, (line, text)
    assert_ruff_clean(out / "model.py")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["port_seq2seq", "port_seq2seq_nested", "port_nested_masked_rnn"])
def test_parity_train_three_steps(ported, name, optimizer):
    """3 steps of ``parity --train`` with the compiled sparse cross-entropy, which Keras averages over the
    output mask's steps (the decoder's padding, which the nested decoder's output carries out to the loss):
    train.py's compute_loss takes ``model.output_mask``."""
    source, out = ported(name)
    train_parity(source, out, optimizer)


def test_short_fine_tune_lowers_the_loss(ported):
    """train.py's own train_step, 15 steps on one padded batch: the masked loss goes down."""
    import migrate

    _, out = ported("port_seq2seq")
    spec = importlib.util.spec_from_file_location("train_port_seq2seq", out / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    model = migrate.load_port(out)
    optimizer = train.make_optimizer(model)
    feeds = feeds_for(4, 6, 5, seed=7)
    inputs = (torch.from_numpy(feeds["encoder_inputs"]), torch.from_numpy(feeds["decoder_inputs"]))
    targets = torch.from_numpy(np.random.default_rng(8).integers(0, VOCABULARY, (4, 5)))
    losses = [train.train_step(model, optimizer, inputs, targets) for _ in range(15)]
    assert losses[-1] < losses[0], losses
    assert model.output_mask.tolist() == (inputs[1] != 0).tolist()



def test_nested_model_handed_a_builtin_mask(ported, fixture_model, tmp_path):
    """``Embedding(mask_zero=True)`` into a nested model's LSTM: the port checks itself against Keras (padded
    sequences), the mask is the nested forward's last argument and its output mask is the model's (parity
    --train: test_parity_train_three_steps); a nested output whose mask Keras carries on into a GRU is one
    line, exit 1."""
    _, out = ported("port_nested_masked_rnn")
    text = (out / "model.py").read_text()
    for line in ("def forward(self, sequence: torch.Tensor, sequence_mask: torch.Tensor):",
                 "self.tagger(embedding, tokens_mask)", "self.output_mask = self.tagger.output_mask"):
        assert line in text, (line, text)
    proc = tf2torch("port", str(fixture_model("port_nested_masked_rnn") / "carried.keras"), "-o",
                    str(tmp_path / "carried"), "-q")
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and "tagger (Functional)" in line and "carries the Keras mask" in line, line
    assert "Masking)" not in line and not (tmp_path / "carried").exists()
