"""``tf2torch parity SOURCE.keras --keras-backend torch``: Keras' torch backend against its TensorFlow backend.

Each backend runs in its own child process (TensorFlow in ``migrate.tf.train_worker``, torch in
``migrate.tf.keras_torch_worker``); a planted backend-specific layer must be named first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from checks.parity.train.backend import compare_backends

ROOT = Path(__file__).resolve().parents[1]


def tf2torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrate.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          check=False)


@pytest.mark.parametrize("name", ["cnn", "port_mlp_dropout", pytest.param("port_frozen", marks=pytest.mark.slow),
                                  pytest.param("port_shared_nested", marks=pytest.mark.slow),
                                  pytest.param("port_rnn", marks=pytest.mark.slow)])
def test_keras_built_fixtures_run_alike_under_torch(fixture_model, name):
    report = compare_backends(fixture_model(name) / "model.keras", train=True, optimizer="sgd:learning_rate=0.05",
                              loss="mse")
    assert report.passed, report.to_text()
    assert {c.kind for c in report.checks} == {"layer", "output", "loss", "weight"}


def test_compiled_model_one_train_on_batch_step_through_the_cli(fixture_model, tmp_path):
    """train_mlp: compiled SGD (Nesterov, clipnorm), Huber, L1L2 regularisers, BatchNorm."""
    proc = tf2torch("parity", str(fixture_model("train_mlp") / "model.keras"), "--keras-backend", "torch", "--train",
                    "--format", "json", "--output", str(tmp_path / "report.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["train"]["loss"]["passed"]
    assert any(o["name"] == "embed_bn (training=True)" for o in report["outputs"])
    assert report["pairs"] == ["tf~torch"] and report["seed"] == 0 and report["first_divergence"] is None
    assert all(o["pair"] == "tf~torch" and o["mismatched"] == 0 and o["total"] > 0 for o in report["outputs"])


def test_planted_backend_difference_is_named(fixture_model):
    source = fixture_model("train_backend_shift") / "model.keras"
    proc = tf2torch("parity", str(source), "--keras-backend", "torch",
                    "--custom-objects", str(ROOT / "fixtures/models/train_backend_shift.py"))
    assert proc.returncode == 1, proc.stderr
    assert "first divergence: layer shift (training=False) (Keras layer 'shift')" in proc.stdout
    assert "hidden (training=False)" in proc.stdout  # the layer before it matched and is listed


def test_usage_errors(fixture_model):
    keras_file = fixture_model("cnn") / "model.keras"
    for args in ([str(fixture_model("cnn") / "model.h5"), "--keras-backend", "torch"],
                 [str(keras_file), str(keras_file.parent), "--keras-backend", "torch"],
                 [str(keras_file)]):
        proc = tf2torch("parity", *args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (args, proc.stderr)
    shift = fixture_model("train_backend_shift")
    proc = tf2torch("parity", str(shift / "model.keras"), "--keras-backend", "torch")  # no --custom-objects
    assert proc.returncode == 2 and "not a readable Keras model" in proc.stderr, proc.stderr


def test_a_layer_that_cannot_load_under_torch_is_named(fixture_model):
    proc = tf2torch("parity", str(fixture_model("train_backend_shift") / "unloadable.keras"), "--keras-backend",
                    "torch", "--custom-objects", str(ROOT / "fixtures/models/train_backend_shift.py"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Keras with the torch backend cannot load" in proc.stderr and "TensorFlowOnly" in proc.stderr
