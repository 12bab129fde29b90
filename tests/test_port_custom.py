"""``tf2torch port`` on real Keras code: custom Layer classes, a subclassed Model, a Lambda of a registered
function, ``keras.random`` in a layer, a layer of raw ``tf.*`` ops, augmentation layers, and train.py on a
softmax output (segmentation).

Each fixture is written like public Keras example code and ported once through the CLI with
``--custom-objects`` (its module), then checked against Keras (worker process) in eval and in training.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from migrate.tf.client import run_worker
from migrate.tf.custom_objects import specs
from tests.cli_helpers import ROOT, assert_ruff_clean, imported_packages, tf2torch, train_parity
from tests.conftest import assert_close
from tests.test_port import run_module

#: fixture -> the custom Keras classes that must each become exactly one class in model.py
CUSTOM = {"port_text_transformer": ["TransformerBlock", "TokenAndPositionEmbedding"],
          "port_vae_sampling": ["Sampling"], "port_siamese_lambda": [], "port_recommender": ["RecommenderNet"],
          "port_vit_patches": ["Patches", "PatchEncoder"], "port_augment": [], "port_segmentation": [],
          "port_cct": ["CCTTokenizer", "PositionEmbedding", "SequencePooling"], "port_raw_tf": ["GatedResidual"]}
#: fixture -> optimizers whose 3-step training parity holds (every fixture, SGD and Adam; the text transformer's
#: position Embedding repeats every row in the batch: parity sums a row's sparse gradient slices, docs/parity.md)
TRAIN = {name: ("sgd", "adam") for name in CUSTOM}


def _module(name: str) -> str:
    return str(ROOT / "fixtures" / "models" / f"{name}.py")


@pytest.fixture(scope="module")
def ported(port_once):
    """``ported(name)`` -> (model.keras, OUT), ported with the fixture's module as --custom-objects."""
    return lambda name: port_once(name, custom_objects=_module(name))


def keras_predict(source: Path, name: str, batches: list[dict[str, np.ndarray]], tmp: Path) -> list[dict]:
    """``model(x, training=False)`` in the Keras worker (custom objects from the fixture's module)."""
    ins = [str(tmp / f"in{i}.npz") for i in range(len(batches))]
    outs = [str(tmp / f"out{i}.npz") for i in range(len(batches))]
    for path, feeds in zip(ins, batches):
        np.savez(path, **feeds)
    run_worker("predict", {"source": str(source), "inputs": ins, "outputs": outs,
                           "custom_objects": specs(_module(name))}, module="migrate.tf.keras_worker")
    results = []
    for path in outs:
        with np.load(path) as data:
            results.append({k: data[k] for k in data.files})
    return results


def keras_inputs(manifest: dict, batch: int, seed: int, length: int = 7) -> dict[str, np.ndarray]:
    """Seeded inputs; float token ids (``token_ids`` in the manifest) as whole numbers below the vocabulary."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest["inputs"]:
        shape = [batch if i == 0 else (length if d is None else d) for i, d in enumerate(spec["tf_shape"])]
        if spec.get("token_ids"):
            feeds[spec["tf_name"]] = rng.integers(0, spec["token_ids"], shape).astype(spec["dtype"])
        elif spec["dtype"].startswith("float"):
            feeds[spec["tf_name"]] = rng.standard_normal(shape).astype(spec["dtype"])
        else:
            feeds[spec["tf_name"]] = rng.integers(0, 10, shape).astype(spec["dtype"])
    return feeds


@pytest.mark.parametrize("name", list(CUSTOM))
def test_eval_matches_keras_at_batch_1_and_3(ported, name, tmp_path):
    """Batch 1 and 3 (two lengths where a dimension is dynamic); keras.random draws their mean on both sides."""
    import migrate

    source, out = ported(name)
    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out)
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # RandomDraw: its mean, as the Keras predict worker's keras.random
    dynamic = any(d is None for s in manifest["inputs"] for d in s["tf_shape"][1:])
    cases = [(b, t) for b in (1, 3) for t in ((7, 4) if dynamic else (7,))]
    batches = [keras_inputs(manifest, b, seed=20 + b, length=t) for b, t in cases]
    for (batch, length), feeds, want in zip(cases, batches, keras_predict(source, name, batches, tmp_path)):
        got = run_module(module, manifest, feeds)
        for key, expected in want.items():
            assert_close(got[key], expected, what=f"{name} {key} batch {batch} length {length}")


@pytest.mark.parametrize("name", list(CUSTOM))
def test_model_py_imports_only_torch_is_ruff_clean_one_class_per_keras_class(ported, name):
    _, out = ported(name)
    text = (out / "model.py").read_text()
    imports = imported_packages(text)
    assert imports == {"torch"}, imports
    for cls in CUSTOM[name]:
        assert text.count(f"class {cls}(nn.Module):") == 1, (cls, text)
        assert f"class {cls}2(" not in text
    assert_ruff_clean(out / "model.py")


def test_custom_layer_reads_like_the_keras_class(ported):
    """Attribute names are Keras' (self.att, self.ffn, self.layernorm1); sizes from ops.shape stay shape reads."""
    _, out = ported("port_text_transformer")
    text = (out / "model.py").read_text()
    for attr in ("self.att = ", "self.ffn = Ffn()", "self.layernorm1 = ", "self.pos_emb = ", "self.token_emb = "):
        assert attr in text
    assert "def forward(self, inputs: torch.Tensor):" in text
    _, vae = ported("port_vae_sampling")
    assert "self.normal((inputs_0.shape[0], 2), inputs_0)" in (vae / "model.py").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name,optimizer", [(n, o) for n, opts in TRAIN.items() for o in opts])
def test_parity_train_three_steps(ported, name, optimizer):
    source, out = ported(name)
    train = train_parity(source, out, optimizer)
    repeated = [n for n in train["notes"] if n.startswith("rows repeated in the batch")]
    if name == "port_text_transformer" and optimizer == "adam":  # the position table over arange, every row twice
        assert len(repeated) == 1 and re.search(r"token_and_position_embedding/embedding/embeddings: \d+ row\(s\)",
                                                repeated[0]), repeated
    elif optimizer == "sgd":  # linear in the gradient: summing the slices first changes nothing, no note
        assert not repeated, repeated


@pytest.mark.slow
def test_repeated_ids_train_with_adam_like_tf_keras(ported):
    """The recommender's bias Embeddings (no regulariser, so their gradient stays sparse) at batch 8 repeat
    user and movie ids: Keras 3-TF would add sum(g_i**2) to Adam's second moment, parity applies the summed
    gradient (tf.keras, Keras 3 on JAX/torch, torch) and names the rows in a note."""
    source, out = ported("port_recommender")
    proc = tf2torch("parity", str(source), str(out), "--train", "--trust-model-py", "--steps", "3", "--optimizer",
                    "adam", "--batch-size", "8", "--format", "json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    notes = [n for n in json.loads(proc.stdout)["train"]["notes"] if n.startswith("rows repeated in the batch")]
    assert len(notes) == 1 and "embedding_1/embeddings" in notes[0] and "embedding_3/embeddings" in notes[0], notes


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CUSTOM if n not in ("port_vae_sampling", "port_siamese_lambda")])
def test_short_fine_tune_lowers_the_loss(ported, name):
    """train.py's own train_step, 15 steps on one synthetic batch: the loss goes down."""
    _, out = ported(name)
    sys.path.insert(0, str(out))
    try:
        spec = importlib.util.spec_from_file_location(f"train_{name}", out / "train.py")
        train = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train)
        import migrate

        model = migrate.load_port(out)
        optimizer = train.make_optimizer(model)
        torch.manual_seed(0)
        inputs, targets = train.synthetic_batch(8)
        losses = [train.train_step(model, optimizer, inputs, targets) for _ in range(15)]
    finally:
        sys.path.remove(str(out))
    assert losses[-1] < losses[0], losses


def test_training_branch_becomes_self_training(ported):
    """StochasticDepth's ``if training:`` (keras.random.uniform, floor) is forward's ``if self.training:``;
    add_weight's position table is a parameter named after the attribute, sliced by the input's shape."""
    _, out = ported("port_cct")
    text = (out / "model.py").read_text()
    assert "        if self.training:  # StochasticDepth.call branches on training" in text
    assert "self.position_embeddings = nn.Parameter(torch.zeros(16, 16))" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"keras": "position_embedding/embeddings", "torch": "position_embedding.position_embeddings",
            "transform": "", "trainable": True} in manifest["weights"] or any(
        w["torch"] == "position_embedding.position_embeddings" for w in manifest["weights"])


def test_segmentation_softmax_loss_is_taken_from_the_logits(ported):
    """softmax + sparse CE (not from_logits): train.py's loss is the logits' cross-entropy, unclipped."""
    _, out = ported("port_segmentation")
    assert "return F.cross_entropy(torch.log(outputs), targets.long())" in (out / "train.py").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"][0]["activation"] == "softmax"


def test_raw_tf_layer_reads_like_the_keras_class(ported):
    """tf.linalg.matmul, tf.nn.sigmoid, tf.shape/tf.cast/tf.sqrt traced as keras.ops; ``if training:`` around
    tf.nn.dropout is ``if self.training:`` with an nn.Dropout; the weights are parameters named as in Keras."""
    _, out = ported("port_raw_tf")
    text = (out / "model.py").read_text()
    for line in ("self.w = nn.Parameter(torch.zeros(6, 8))", "self.g = nn.Parameter(torch.zeros(8))",
                 "self.dropout = nn.Dropout(0.1)", "if self.training:  # GatedResidual.call branches on training",
                 "torch.matmul(inputs, self.w)", "torch.sigmoid(", "/ 2.449489"):
        assert line in text, (line, text)
    assert text.count("self.dropout(") == 1  # only in the training branch


def test_unportable_construct_one_line_exit_1(fixture_model, tmp_path):
    """A tf.* function the table does not map: one line naming the class, the function and the call's file:line."""
    out = tmp_path / "out"
    name = "port_raw_tf_unmapped"
    proc = tf2torch("port", str(fixture_model(name) / "model.keras"), "-o", str(out), "-q",
                    "--custom-objects", _module(name))
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.count("\n") == 0, line
    assert "(ResizeBlock)" in line and "tf.image.resize has no port mapping yet" in line, line
    assert f"{name}.py:13" in line, line  # the line of the tf.image.resize call
    assert not out.exists()


#: keras-hub backbones built from constructor arguments (fixtures/models/port_hub_backbones.py) -> the keras-hub
#: classes that must each become exactly one class in model.py
HUB = {"bert": ["PositionEmbedding", "TransformerEncoder"], "gpt2": ["PositionEmbedding", "TransformerDecoder"],
       "vit": ["ViTPatchingAndEmbedding", "ViTEncoderBlock", "ViTEncoder", "MLP"]}
HUB_VOCABULARY = 50  # the fixture's vocabulary_size


@pytest.fixture(scope="module")
def hub_ported(port_once):
    pytest.importorskip("keras_hub")
    return lambda backbone: port_once("port_hub_backbones", f"{backbone}.keras", custom_objects="keras_hub")


def hub_inputs(manifest: dict, batch: int, seed: int, length: int) -> dict[str, np.ndarray]:
    """Token ids below the vocabulary, segment ids 0/1, and a padding mask as a tokenizer writes it: full rows,
    rows padded at the end, and rows padded at the start (a causal decoder's first queries then see no key)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest["inputs"]:
        name = spec["tf_name"]
        shape = [batch if i == 0 else (length if d is None else d) for i, d in enumerate(spec["tf_shape"])]
        if spec["dtype"].startswith("float"):
            feeds[name] = rng.standard_normal(shape).astype(spec["dtype"])
        elif name == "padding_mask":
            mask = np.ones(shape, spec["dtype"])
            for row in range(batch):
                if row % 3 == 1:
                    mask[row, -2:] = 0
                elif row % 3 == 2:
                    mask[row, :2] = 0
            feeds[name] = mask
        else:
            feeds[name] = rng.integers(0, 2 if name == "segment_ids" else HUB_VOCABULARY, shape).astype(spec["dtype"])
    return feeds


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(HUB))
def test_keras_hub_backbone_matches_keras_at_two_batches_and_lengths(hub_ported, backbone, tmp_path):
    """BERT (dict inputs, ReversibleEmbedding, TransformerEncoder), GPT-2 (CachedMultiHeadAttention without a
    cache, causal mask from ops.arange) and ViT (MLP without get_config, position ids held as a tensor) against
    Keras ``model(x, training=False)`` at batch 1 and 3, and lengths 7 and 4 where the length is dynamic."""
    import migrate

    source, out = hub_ported(backbone)
    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out)
    dynamic = any(d is None for s in manifest["inputs"] for d in s["tf_shape"][1:])
    cases = [(b, t) for b in (1, 3) for t in ((7, 4) if dynamic else (7,))]
    batches = [hub_inputs(manifest, b, seed=30 + b, length=t) for b, t in cases]
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
                assert np.isfinite(got[key]).all()
                assert_close(got[key], want[key], what=f"{backbone} {key} batch {batch} length {length}")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(HUB))
def test_keras_hub_model_py_reads_like_the_keras_classes(hub_ported, backbone):
    """One class per keras-hub class, named after it; attributes named as in keras-hub; imports only torch;
    ruff-clean; weights are parameters (ViT's position table is not baked into forward)."""
    _, out = hub_ported(backbone)
    text = (out / "model.py").read_text()
    imports = imported_packages(text)
    assert imports == {"torch"}, imports
    for cls in HUB[backbone]:
        assert text.count(f"class {cls}(nn.Module):") == 1, (cls, text)
    expected = {
        "bert": ["def forward(self, padding_mask: torch.Tensor, segment_ids: torch.Tensor, token_ids: torch.Tensor):",
                 "self.token_embedding = nn.Embedding(50, 16)", "self.position_embeddings = nn.Parameter(",
                 "self.self_attention_layer = KerasMultiHeadAttention(", "approximate=\"tanh\")"],
        "gpt2": ["self.self_attention = KerasMultiHeadAttention(", "mask=minimum)",
                 "torch.arange(0, decoder_sequence.shape[1]"],
        "vit": [('self.register_buffer("position_ids", torch.arange(17, dtype=torch.int32).reshape(1, 17), '
                 "persistent=False)"), "self.position_embedding(self.position_ids.long())", "self.mlp = MLP()"],
    }[backbone]
    for line in expected:
        assert line in text, (line, text)
    assert "torch.tensor([[" not in text  # no weights as constants
    assert_ruff_clean(out / "model.py")


@pytest.mark.slow
@pytest.mark.parametrize("backbone,optimizer", [(b, o) for b in HUB for o in ("sgd", "adam")])
def test_keras_hub_backbone_trains_like_keras(hub_ported, backbone, optimizer):
    """3 steps of ``parity --train`` (MSE on every output: the backbones are saved uncompiled)."""
    source, out = hub_ported(backbone)
    train_parity(source, out, optimizer, "--loss", "mse", "--custom-objects", "keras_hub")
