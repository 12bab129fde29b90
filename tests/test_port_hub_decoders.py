"""``tf2torch port`` on keras-hub decoder-only backbones (Llama, Llama 3, Mistral, Gemma) built from constructor arguments
(fixtures/models/port_hub_decoders.py): RMS norm, rotary position embedding computed from the length at run time,
grouped-query attention under the causal (and sliding-window) and padding mask, gated feed-forward, reversible
embedding. All through the general route: each keras-hub class opened up (its ``call`` traced on symbolic
tensors, ``keras.ops`` emitters), no keras-hub-specific emitter.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from migrate.tf.client import run_worker
from migrate.tf.custom_objects import specs
from tests.cli_helpers import assert_ruff_clean, imported_packages, train_parity
from tests.conftest import assert_close
from tests.test_port import run_module

#: backbone -> the keras-hub classes that must each become exactly one class in model.py
LLAMA = ["LlamaLayerNorm", "LlamaRotaryEmbedding", "LlamaAttention", "LlamaTransformerDecoder"]
DECODERS = {"llama": LLAMA, "llama3": LLAMA,
            "mistral": ["MistralLayerNormalization", "RotaryEmbedding", "CachedMistralAttention",
                        "MistralTransformerDecoder"],
            "gemma": ["RMSNormalization", "RotaryEmbedding", "CachedGemmaAttention", "GemmaDecoderBlock"]}
VOCABULARY = 50  # the fixture's vocabulary_size


@pytest.fixture(scope="module")
def decoder_ported(port_once):
    pytest.importorskip("keras_hub")
    return lambda backbone: port_once("port_hub_decoders", f"{backbone}.keras", custom_objects="keras_hub")


def decoder_inputs(batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids below the vocabulary and a padding mask with zeros at the ends: row 0 padded at the end, row 1
    full, row 2 padded at the start (its first queries then see no key under the causal mask)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), "int32")
    mask[0, -2:] = 0
    if batch > 2:
        mask[2, :2] = 0
    return {"token_ids": rng.integers(0, VOCABULARY, (batch, length)).astype("int32"), "padding_mask": mask}


@pytest.mark.parametrize("backbone", list(DECODERS))
def test_decoder_matches_keras_at_two_batches_and_lengths(decoder_ported, backbone, tmp_path):
    """Against Keras ``model(x, training=False)`` at batch 1 and 3 and lengths 7 and 4 (Mistral's window of 4 is
    crossed at 7): the rotary tables, the causal mask and the heads are read off the input, never traced sizes."""
    import migrate

    source, out = decoder_ported(backbone)
    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out)
    cases = [(b, t) for b in (1, 3) for t in (7, 4)]
    batches = [decoder_inputs(b, t, seed=40 + b + t) for b, t in cases]
    ins = [str(tmp_path / f"in{i}.npz") for i in range(len(batches))]
    outs = [str(tmp_path / f"out{i}.npz") for i in range(len(batches))]
    for path, feeds in zip(ins, batches):
        np.savez(path, **feeds)
    run_worker("predict", {"source": str(source), "inputs": ins, "outputs": outs, "custom_objects": specs("keras_hub")},
               module="migrate.tf.keras_worker")
    for (batch, length), feeds, path in zip(cases, batches, outs):
        got = run_module(module, manifest, feeds)
        with np.load(path) as want:
            for key in want.files:
                assert got[key].shape == (batch, length, 16)
                assert np.isfinite(got[key]).all()
                assert_close(got[key], want[key], what=f"{backbone} {key} batch {batch} length {length}")


@pytest.mark.parametrize("backbone", list(DECODERS))
def test_decoder_model_py_reads_like_the_keras_classes(decoder_ported, backbone):
    """One class per keras-hub class, named after it; imports only torch; ruff-clean; the rotary angles come
    from ``torch.arange`` over the input's length and the masked softmax keeps Keras' mask."""
    _, out = decoder_ported(backbone)
    text = (out / "model.py").read_text()
    imports = imported_packages(text)
    assert imports == {"torch"}, imports
    for cls in DECODERS[backbone]:
        assert text.count(f"class {cls}(nn.Module):") == 1, (cls, text)
    for line in ["torch.arange(0, inputs.shape[1], dtype=torch.float32, device=inputs.device)",
                 "reshape((inputs.shape[0], inputs.shape[1], inputs.shape[2], 4))",  # 4 query or 2 key heads
                 "torch.where((get_item > 0.5), torch.softmax(torch.where((get_item > 0.5), ",
                 "self.token_embedding = nn.Embedding(50, 16)"]:
        assert line in text, (line, text)
    assert "9973" not in text and "9967" not in text and "9949" not in text  # no traced sentinel size
    assert "torch.tensor([[" not in text  # no weights as constants
    assert_ruff_clean(out / "model.py")


@pytest.mark.slow
@pytest.mark.parametrize("backbone,optimizer", [(b, o) for b in DECODERS for o in ("sgd", "adam")])
def test_decoder_trains_like_keras(decoder_ported, backbone, optimizer):
    """3 steps of ``parity --train`` (MSE on the sequence output: the backbones are saved uncompiled)."""
    source, out = decoder_ported(backbone)
    train_parity(source, out, optimizer, "--loss", "mse", "--custom-objects", "keras_hub")


@pytest.mark.parametrize("backbone", list(DECODERS))
def test_decoder_short_fine_tune_lowers_the_loss(decoder_ported, backbone):
    """20 Adam steps of next-token prediction through the tied embedding (``token_embedding.weight``, as keras-hub's
    ``ReversibleEmbedding(reverse=True)``) on one padded batch: the loss goes down."""
    import migrate

    _, out = decoder_ported(backbone)
    model = migrate.load_port(out)
    model.train()
    feeds = decoder_inputs(4, 7, seed=7)
    tokens, mask = torch.from_numpy(feeds["token_ids"]), torch.from_numpy(feeds["padding_mask"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        hidden = model(mask, tokens)  # forward takes the inputs in Keras' order: padding_mask, token_ids
        logits = hidden[:, :-1] @ model.token_embedding.weight.T
        keep = mask[:, 1:].bool()
        loss = torch.nn.functional.cross_entropy(logits[keep], tokens[:, 1:][keep].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
