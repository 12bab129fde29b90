"""The Keras-loss -> torch registry (``migrate.training.losses``) against Keras' own values.

Probabilities include values at 0 and 1, where Keras clips to [1e-7, 1 - 1e-7] (binary cross-entropy also
adds 1e-7 inside the log); one Keras worker call evaluates every loss.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from migrate.tf.client import run_worker
from migrate.training import losses

CASES = [  # (name, config, case)
    ("sparse_categorical_crossentropy", {"from_logits": True}, "sparse_logits"),
    ("sparse_categorical_crossentropy", {}, "sparse_probs"),
    ("categorical_crossentropy", {"from_logits": True}, "onehot_logits"),
    ("categorical_crossentropy", {"from_logits": True, "label_smoothing": 0.1}, "onehot_logits"),
    ("categorical_crossentropy", {}, "onehot_probs"),
    ("categorical_crossentropy", {"label_smoothing": 0.2}, "onehot_probs"),
    ("binary_crossentropy", {"from_logits": True}, "binary_logits"),
    ("binary_crossentropy", {}, "binary_probs"),
    ("binary_crossentropy", {"label_smoothing": 0.1}, "binary_probs"),
    ("mean_squared_error", {}, "real"),
    ("mean_absolute_error", {}, "real"),
    ("huber", {"delta": 0.5}, "real"),
    # rank 3, class scores on the last axis (a per-timestep classifier): rendered with class_last=True
    ("sparse_categorical_crossentropy", {"from_logits": True}, "seq_sparse_logits"),
    ("sparse_categorical_crossentropy", {}, "seq_sparse_probs"),
    ("categorical_crossentropy", {"from_logits": True, "label_smoothing": 0.1}, "seq_onehot_logits"),
    ("categorical_crossentropy", {"label_smoothing": 0.2}, "seq_onehot_probs"),
    ("binary_crossentropy", {}, "seq_binary_probs"),
]


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal((6, 5))).astype("float32")
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[0] = [1, 0, 0, 0, 0]  # exactly 0 and 1: clipping matters
    probs = probs.astype("float32")
    labels = rng.integers(0, 5, 6)
    labels[0] = 1
    onehot = np.eye(5, dtype="float32")[labels]
    binary = rng.integers(0, 2, (6, 5)).astype("float32")
    sig = (1 / (1 + np.exp(-logits))).astype("float32")
    sig[0, :2] = [0.0, 1.0]
    return {"sparse_logits/y_true": labels, "sparse_logits/y_pred": logits, "sparse_probs/y_true": labels,
            "sparse_probs/y_pred": probs, "onehot_logits/y_true": onehot, "onehot_logits/y_pred": logits,
            "onehot_probs/y_true": onehot, "onehot_probs/y_pred": probs, "binary_logits/y_true": binary,
            "binary_logits/y_pred": logits, "binary_probs/y_true": binary, "binary_probs/y_pred": sig,
            "real/y_true": rng.standard_normal((6, 5)).astype("float32"), "real/y_pred": logits,
            **{f"seq_{case}/{key}": value.reshape((2, 3, *value.shape[1:]))
               for case, (true, pred) in {"sparse_logits": (labels, logits), "sparse_probs": (labels, probs),
                                          "onehot_logits": (onehot, logits), "onehot_probs": (onehot, probs),
                                          "binary_probs": (binary, sig)}.items()
               for key, value in (("y_true", true), ("y_pred", pred))}}


@pytest.fixture(scope="module")
def keras_values() -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp, "arrays.npz"), **arrays())
        request = {"arrays": str(Path(tmp, "arrays.npz")),
                   "losses": [{"name": n, "config": c, "case": case} for n, c, case in CASES]}
        return run_worker("losses", request, module="migrate.tf.train_worker")["values"]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{n}-{c}" for n, c, _ in CASES])
def test_torch_expression_equals_keras_loss(keras_values, index):
    name, config, case = CASES[index]
    data = arrays()
    expression = losses.render({"name": name, "config": config}, "pred", "target", class_last=case.startswith("seq_"))
    value = eval(expression, {"torch": torch, "F": F, "pred": torch.from_numpy(data[f"{case}/y_pred"]),
                              "target": torch.from_numpy(data[f"{case}/y_true"])}).item()
    assert abs(value - keras_values[index]) <= 1e-6 + 1e-5 * abs(keras_values[index]), (expression, value)


def test_aliases_and_unknown_losses():
    assert losses.parse_spec("mse") == {"name": "mean_squared_error", "config": {}}
    assert losses.parse_spec("SparseCategoricalCrossentropy:from_logits=true")["config"] == {"from_logits": True}
    with pytest.raises(Exception, match="has no torch mapping"):
        losses.parse_spec("hinge")
