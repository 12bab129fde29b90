"""``tf2torch port`` of CTC models: an endpoint layer that adds a CTC loss with ``add_loss``.

Three forms from public Keras code, each a fixture: TensorFlow's (``tf.compat.v1.nn.ctc_loss`` on a
``tf.SparseTensor`` built from the dense labels with ``tf.sequence_mask``/``tf.where``/``tf.gather_nd``, the
captcha OCR example), Keras 3's ``keras.ops.ctc_loss`` (blank = ``mask_index``), and ``keras.losses.ctc`` on a
dynamic time axis (blank 0). A fourth pads its labels with -1 anywhere in the row (the SparseTensor from ``tf.where(labels != -1)``). The
loss becomes ``F.ctc_loss`` and ``model.added_loss``; the inference output,
the per-sample loss term and 3 training steps are checked against Keras.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import ROOT, assert_ruff_clean, imported_packages, tf2torch, train_parity
from tests.conftest import assert_close
from tests.test_port import run_module, to_module

#: fixture -> (blank index, number of classes, the padding label: 0 at the end of a row, -1 anywhere, or None)
CTC = {"case_ctc_ocr": (5, 6, None), "port_ctc_keras_ops": (5, 6, None), "port_ctc_losses_dynamic": (0, 5, 0),
       "port_ctc_masked_labels": (4, 5, -1)}
#: fixtures compiled with an optimizer and no loss, as the OCR examples compile them
COMPILED = {"port_ctc_keras_ops"}

#: Keras ``model(x, training=False)`` and its add_loss terms, in a TensorFlow-only child process
KERAS_LOSSES = r"""
import json, sys
from pathlib import Path
import numpy as np
from migrate.tf.custom_objects import specs
from migrate.tf.keras_worker import input_names, load_keras, model_inputs
import tensorflow as tf

source, module, *paths = sys.argv[1:]
model = load_keras(Path(source), specs(module))
for feeds_path, out_path in zip(paths[::2], paths[1::2]):
    with np.load(feeds_path) as data:
        args = [tf.constant(data[n]) for n in input_names(model)]
    output = model(model_inputs(model, args), training=False)
    np.savez(out_path, output=np.asarray(output), **{f"loss{i}": np.asarray(t) for i, t in enumerate(model.losses)})
"""


def _module(name: str) -> str:
    return str(ROOT / "fixtures" / "models" / f"{name}.py")


@pytest.fixture(scope="module")
def ported(port_once):
    """``ported(name)`` -> (model.keras, OUT), ported with the fixture's module as --custom-objects."""
    return lambda name: port_once(name, custom_objects=_module(name))


def ctc_inputs(manifest: dict, name: str, batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Valid labels (never the blank; padded where the fixture pads), pixels or N(0, 1) features."""
    blank, classes, pad = CTC[name]
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest["inputs"]:
        shape = [batch if i == 0 else (length if d is None else d) for i, d in enumerate(spec["tf_shape"])]
        if spec["tf_name"] == "label":
            labels = rng.integers(0, classes - 1, shape)
            labels = labels + (labels >= blank)  # skip the blank
            if pad == 0:
                labels[1::2, -1] = 0  # every other row one label shorter
            elif pad == -1:
                labels[1::2, 1] = -1  # inside the row
                labels[2::3, -1] = -1  # and at its end
            feeds["label"] = labels.astype(spec["dtype"])
        elif len(shape) == 4:
            feeds[spec["tf_name"]] = rng.uniform(0, 255, shape).astype(spec["dtype"])
        else:
            feeds[spec["tf_name"]] = rng.standard_normal(shape).astype(spec["dtype"])
    return feeds


def keras_losses(source: Path, name: str, batches: list[dict[str, np.ndarray]], tmp: Path) -> list[dict]:
    """Keras' output and add_loss terms for each batch (one child process)."""
    paths = []
    for i, feeds in enumerate(batches):
        np.savez(tmp / f"in{i}.npz", **feeds)
        paths += [str(tmp / f"in{i}.npz"), str(tmp / f"out{i}.npz")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", KERAS_LOSSES, str(source), _module(name), *paths],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = []
    for path in paths[1::2]:
        with np.load(path) as data:
            results.append({k: data[k] for k in data.files})
    return results


@pytest.mark.parametrize("name", list(CTC))
def test_output_and_ctc_loss_term_match_keras(ported, name, tmp_path):
    """Batch 1 and 3 (and two lengths on the dynamic time axis): the inference output and the add_loss term
    (per sample for the OCR example's (batch, 1) term), and model.added_loss is its sum, as Keras adds it."""
    import migrate

    source, out = ported(name)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["added_loss"] is True
    module = migrate.load_port(out)
    dynamic = any(d is None for s in manifest["inputs"] for d in s["tf_shape"][1:])
    cases = [(b, t) for b in (1, 3) for t in ((9, 6) if dynamic else (0,))]
    batches = [ctc_inputs(manifest, name, batch, length, seed=batch) for batch, length in cases]
    for (batch, length), feeds, want in zip(cases, batches, keras_losses(source, name, batches, tmp_path)):
        got = run_module(module, manifest, feeds)
        what = f"{name} batch {batch} length {length}"
        assert_close(got[manifest["outputs"][0]["tf_name"]], want["output"], what=what)
        term = next(m.added_loss for m in module.children() if hasattr(m, "added_loss"))
        assert term.shape == want["loss0"].shape, (term.shape, want["loss0"].shape)
        assert np.isfinite(want["loss0"]).all() and (want["loss0"] > 0).all()
        assert_close(term.numpy(), want["loss0"], what=f"{what} CTC loss")
        assert_close(module.added_loss.numpy(), want["loss0"].sum(), what=f"{what} added_loss")


@pytest.mark.parametrize("name", list(CTC))
def test_model_py_is_torch_only_ruff_clean_one_ctc_class(ported, name):
    _, out = ported(name)
    text = (out / "model.py").read_text()
    imports = imported_packages(text)
    assert imports == {"torch"}, imports
    assert text.count("class CTCLayer(nn.Module):") == 1
    blank = CTC[name][0]
    assert text.count("F.ctc_loss(torch.log_softmax(") == 1 and f'blank={blank}, reduction="none")' in text
    assert "self.added_loss = self." in text  # the top-level module sums the layer's term
    assert "9973" not in text and "9967" not in text  # no traced sentinel size baked in
    assert_ruff_clean(out / "model.py")
    assert "model.added_loss" in (out / "train.py").read_text() if (out / "train.py").exists() else True


@pytest.mark.parametrize("name,optimizer", [(n, o) for n in CTC for o in ("sgd", "adam")])
def test_parity_train_three_steps(ported, name, optimizer):
    """Generated inputs (labels drawn valid for the layer's blank) and MSE targets on the softmax output, or for
    the model compiled without a loss no output loss at all; the CTC term is added on both sides (Keras:
    model.losses summed; torch: train.py's regularization)."""
    source, out = ported(name)
    loss = [] if name in COMPILED else ["--loss", "mse"]  # compiled with no loss: the CTC term is the loss
    train = train_parity(source, out, optimizer, *loss, "--custom-objects", _module(name))
    assert train["first_divergence"] is None
    assert train["loss"]["keras"] > 1.0  # the CTC term (dominating the MSE on a softmax)
    assert all(p["passed"] for p in train["parameters"])


def test_compiled_without_a_loss_trains_on_the_ctc_term(ported):
    """The examples compile with an optimizer only: train.py's loss is model.added_loss, and 15 steps of its own
    train_step on one batch of valid labels lower it."""
    import migrate

    name = "port_ctc_keras_ops"
    _, out = ported(name)
    text = (out / "train.py").read_text()
    assert "return outputs.new_zeros(())" in text and "return model.added_loss" in text
    manifest = json.loads((out / "manifest.json").read_text())
    feeds = ctc_inputs(manifest, name, 4, 0, seed=5)
    inputs = tuple(to_module(feeds[s["tf_name"]], s) for s in manifest["inputs"])
    sys.path.insert(0, str(out))
    try:
        spec = importlib.util.spec_from_file_location("train_ctc", out / "train.py")
        train = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train)
        model = migrate.load_port(out)
        optimizer = train.make_optimizer(model)
        losses = [train.train_step(model, optimizer, inputs, None) for _ in range(15)]
    finally:
        sys.path.remove(str(out))
    assert losses[-1] < 0.9 * losses[0], losses


def test_unmapped_ctc_option_one_line_exit_1(fixture_model, tmp_path):
    """v1 ctc_loss with ctc_merge_repeated=False (F.ctc_loss always merges): one line naming the class, the
    construct and the file:line of the call."""
    name = "port_ctc_unmapped"
    proc = tf2torch("port", str(fixture_model(name) / "model.keras"), "-o", str(tmp_path / "out"), "-q",
                    "--custom-objects", _module(name))
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.count("\n") == 0, line
    assert "(CTCLayer)" in line and "ctc_merge_repeated=False has no port mapping yet" in line, line
    assert f"{name}.py:18" in line, line
    assert not (tmp_path / "out").exists()
