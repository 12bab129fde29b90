"""``OUT/train.py``, written by ``tf2torch port`` for a Keras model saved compiled.

It must lint clean (ruff, ``tf2torch lint``), run as a script, lower the loss on a fixed batch, and its
first step must match Keras' own ``model.train_on_batch`` (Keras in ``migrate.tf.train_worker``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from migrate.porting import transforms
from migrate.tf.client import run_worker

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def ported(tmp_path_factory, fixture_model):
    source = fixture_model("train_cnn") / "model.keras"
    out = tmp_path_factory.mktemp("port") / "train_cnn"
    proc = run("-m", "migrate.cli", "port", str(source), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    return source, out


def load_train(out: Path):
    spec = importlib.util.spec_from_file_location("generated_train", out / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_py_is_clean_and_runs_as_a_script(ported):
    _, out = ported
    manifest = json.loads((out / "manifest.json").read_text())
    assert "train.py" in manifest["files"]
    text = (out / "train.py").read_text()
    assert "softmax" not in text and "F.cross_entropy(outputs, targets.long())" in text
    assert "eps=1e-07" in text and "register_step_pre_hook(keras_adam_epsilon)" in text
    assert '0.01 * model.get_parameter("hidden.weight").square().sum()' in text
    ruff = run("-m", "ruff", "check", "--no-cache", "--isolated", str(out / "train.py"))
    assert ruff.returncode == 0, ruff.stdout
    lint = run("-m", "migrate.cli", "lint", str(out / "train.py"))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    script = run("train.py", "--steps", "2", "--batch-size", "4", cwd=out)
    assert script.returncode == 0, script.stderr
    assert "step 2: loss" in script.stdout and "eval accuracy" in script.stdout


def test_loss_decreases_and_first_step_matches_keras_train_on_batch(ported, tmp_path):
    import migrate

    source, out = ported
    train = load_train(out)
    rng = np.random.default_rng(3)
    images = rng.standard_normal((8, 12, 12, 3)).astype("float32")
    labels = rng.integers(0, 5, 8)
    np.savez(tmp_path / "batch.npz", image=images, **{"target/logits": labels})
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp, "keras.npz"))
        answer = run_worker("train_on_batch", {"source": str(source), "inputs": str(tmp_path / "batch.npz"),
                                               "result_npz": result}, module="migrate.tf.train_worker")
        with np.load(result) as data:
            keras_after = {k: data[k] for k in data.files}
    model = migrate.load_port(out)
    model.drop.p = 0.0  # the reference ran with dropout off: masks cannot match across frameworks
    optimizer = train.make_optimizer(model)
    batch = (torch.from_numpy(images).permute(0, 3, 1, 2),), torch.from_numpy(labels)
    losses = [train.train_step(model, optimizer, *batch)]
    assert abs(losses[0] - answer["loss"]) <= 1e-5 * abs(answer["loss"]) + 1e-6, (losses[0], answer["loss"])
    manifest = json.loads((out / "manifest.json").read_text())
    state = model.state_dict()
    for entry in manifest["weights"]:
        if entry["keras"] == "conv/bias":  # in front of BatchNorm its gradient is rounding noise, which Adam follows
            continue
        want = transforms.apply(transforms.parse(entry["transform"]), keras_after[f"after/{entry['keras']}"])
        np.testing.assert_allclose(state[entry["torch"]].numpy(), want, atol=2e-5, rtol=1e-4, err_msg=entry["torch"])
    for _ in range(7):
        losses.append(train.train_step(model, optimizer, *batch))
    assert losses[-1] < 0.5 * losses[0], losses


def test_no_train_py_for_a_model_saved_without_compile(fixture_model, tmp_path):
    proc = run("-m", "migrate.cli", "port", str(fixture_model("port_mlp_dropout") / "model.keras"), "-o",
               str(tmp_path / "out"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "out" / "train.py").exists()


def test_rendered_for_two_outputs_a_dynamic_length_and_token_ids(tmp_path):
    """Weighted multi-output loss, per-variable clipnorm, a None time dimension: clean, importable, runnable."""
    from migrate.porting.train_script import render

    spec = {"dtype": "float32", "layout": None, "tf_layout": None}
    manifest = {"class_name": "Tagger", "weights": [{"keras": "dense/kernel", "torch": "dense.weight"}],
                "inputs": [dict(spec, name="tokens", tf_name="tokens", dtype="int32", shape=[None, None],
                                tf_shape=[None, None])],
                "outputs": [dict(spec, name="per_step", tf_name="per_step", shape=[None, None, 3],
                                 tf_shape=[None, None, 3]),
                            dict(spec, name="summary", tf_name="summary", shape=[None, 4], tf_shape=[None, 4])]}
    config = {"optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.01, "clipnorm": 1.0}},
              "losses": [{"output": "per_step", "name": "mean_squared_error", "config": {}, "weight": 0.5},
                         {"output": "summary", "name": "sparse_categorical_crossentropy",
                          "config": {"from_logits": True}, "weight": 1.0}],
              "regularizers": [{"keras": "dense/kernel", "l1": 0.001, "l2": 0.0}], "metrics": []}
    (tmp_path / "train.py").write_text(render(config, manifest))
    ruff = run("-m", "ruff", "check", "--no-cache", "--isolated", str(tmp_path / "train.py"))
    assert ruff.returncode == 0, ruff.stdout
    train = load_train(tmp_path)
    inputs, targets = train.synthetic_batch(3)
    assert inputs[0].shape == (3, 16) and targets[0].shape == (3, 16, 3) and targets[1].shape == (3,)
    outputs = torch.randn(3, 16, 3), torch.randn(3, 4)
    want = 0.5 * torch.nn.functional.mse_loss(outputs[0], targets[0]) + torch.nn.functional.cross_entropy(
        outputs[1], targets[1])
    assert torch.allclose(train.compute_loss(outputs, targets), want)
    model = torch.nn.Module()
    model.dense = torch.nn.Linear(2, 2)
    assert torch.allclose(train.regularization(model), 0.001 * model.dense.weight.abs().sum())


@pytest.mark.parametrize(("shape", "tf_shape", "layout", "loss", "target_shape", "classes_dim"), [
    ([None, None, 5], [None, None, 5], None, "sparse_categorical_crossentropy", (3, 16), -1),  # per-timestep
    ([None, None, 5], [None, None, 5], None, "categorical_crossentropy", (3, 16, 5), -1),
    ([None, 5, 4, 4], [None, 4, 4, 5], "NCHW", "sparse_categorical_crossentropy", (3, 4, 4), 1),  # segmentation
    ([None, 5, 4, 4], [None, 4, 4, 5], "NCHW", "categorical_crossentropy", (3, 5, 4, 4), 1),
])
def test_class_axis_of_a_rank_3_or_4_output(tmp_path, shape, tf_shape, layout, loss, target_shape, classes_dim):
    """Keras' class axis is the last in Keras layout: dim 1 of a channels-first port output, else the last dim."""
    from migrate.porting.train_script import render

    manifest = {"class_name": "Net", "weights": [],
                "inputs": [{"name": "x", "tf_name": "x", "dtype": "float32", "shape": [None, None, 2],
                            "tf_shape": [None, None, 2], "layout": None, "tf_layout": None}],
                "outputs": [{"name": "y", "tf_name": "y", "dtype": "float32", "shape": shape, "tf_shape": tf_shape,
                             "layout": layout, "tf_layout": layout and "NHWC"}]}
    config = {"optimizer": {"class_name": "SGD", "config": {"learning_rate": 0.1}},
              "losses": [{"output": "y", "name": loss, "config": {"from_logits": True}, "weight": 1.0}],
              "regularizers": [], "metrics": ["accuracy"]}
    (tmp_path / "train.py").write_text(render(config, manifest))
    train = load_train(tmp_path)
    _, targets = train.synthetic_batch(3)
    assert tuple(targets.shape) == target_shape
    outputs = torch.randn(3, *[16 if d is None else d for d in shape[1:]]) if layout is None else torch.randn(3, 5, 4, 4)
    labels = targets if targets.ndim == outputs.ndim - 1 else targets.argmax(classes_dim)
    assert int(labels.max()) < 5
    want = torch.nn.functional.cross_entropy(outputs.movedim(classes_dim, 1), labels)
    assert torch.allclose(train.compute_loss(outputs, targets), want)
