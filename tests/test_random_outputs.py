"""Random outputs by design (issue 16): the Keras VAE example's ``Sampling`` layer converts, the manifest says
which outputs are random, and parity compares their distribution and says so.

Real TensorFlow (child process), tf2onnx, ONNX Runtime and torch; the distribution of the converted ``z`` is
also held to an independent, analytic reference: ``z ~ N(z_mean, exp(0.5 * z_log_var)**2)`` with
``z_mean``/``z_log_var`` from Keras' own ``model(x, training=False)``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import migrate
from checks.parity.api import RANDOM_DRAWS, compare
from migrate.conversion import pt2_ops
from migrate.core.compare import SAMPLE_SIGMAS, Tolerance, compare_samples
from tests.cli_helpers import ROOT, tf2torch
from tests.conftest import assert_close, tf_predict
from tests.derive_pt2_ops import program_targets

VAE = "port_vae_sampling"
VAE_OBJECTS = ROOT / "fixtures" / "models" / "port_vae_sampling.py"
#: The encoder returns [z_mean, z_log_var, z]; the manifest names Keras' list outputs output_0..2.
Z_MEAN, Z_LOG_VAR, Z = "output_0", "output_1", "output_2"


def _images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (batch, 16, 16, 1)).astype("float32")


@pytest.fixture(scope="module")
def vae(fixture_model, tmp_path_factory):
    source = fixture_model(VAE) / "model.keras"
    out = tmp_path_factory.mktemp("vae") / "out"
    proc = tf2torch("convert", source, "-o", out, "--custom-objects", VAE_OBJECTS.relative_to(ROOT))
    assert proc.returncode == 0, proc.stderr
    return source, out, proc


@pytest.mark.slow
def test_vae_converts_and_z_has_the_analytic_distribution(vae):
    source, out, proc = vae
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["random_outputs"] == {Z: ["RandomNormal"]}
    assert [o.get("random") for o in manifest["outputs"]] == [None, None, ["RandomNormal"]]
    assert manifest["warnings"] == []  # a draw by design is no training-mode warning
    assert manifest["dims"] == {"batch": [["input_layer", 0]]}  # the batch stays dynamic
    assert f"random outputs: {Z} (RandomNormal)" in proc.stderr

    targets, _ = program_targets(out / "model.pt2")  # within the allow-list, randn among them
    assert "torch.ops.aten.randn.default" in targets and targets <= pt2_ops.OPERATORS | pt2_ops.SYMBOLIC

    import torch

    module = migrate.load(out)
    for batch in (3, 5):
        x = _images(batch, seed=batch)
        (keras,) = tf_predict(source, [{"input_layer": x}], custom_objects=str(VAE_OBJECTS))
        nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            z_mean, z_log_var, z = (t.numpy() for t in module(nchw))
        assert_close(z_mean, keras[Z_MEAN], what=f"z_mean batch {batch}")
        assert_close(z_log_var, keras[Z_LOG_VAR], what=f"z_log_var batch {batch}")
        assert z.shape == (batch, 2)
        if batch == 3:
            continue
        # the analytic reference: N(z_mean, sigma^2), sigma = exp(0.5 z_log_var), from Keras' own heads
        draws = 1000
        with torch.no_grad():
            samples = torch.stack([module(nchw)[2] for _ in range(draws)]).numpy().astype(np.float64)
        sigma = np.exp(0.5 * keras[Z_LOG_VAR].astype(np.float64))
        assert (np.abs(samples.mean(0) - keras[Z_MEAN]) <= SAMPLE_SIGMAS * sigma / np.sqrt(draws) + 1e-5).all()
        assert (np.abs(samples.std(0, ddof=1) - sigma) <= SAMPLE_SIGMAS * sigma / np.sqrt(2 * draws) + 1e-5).all()
        # a fresh draw on every call: consecutive (batch, 2) samples differ (a single float32 coordinate may repeat
        # by chance among 1000 normal draws, a whole sample may not)
        assert (np.diff(samples, axis=0) != 0).any(axis=(1, 2)).all()


@pytest.mark.slow
def test_vae_parity_compares_z_by_distribution_and_says_so(vae):
    source, out, _ = vae
    report = compare(source, out, custom_objects=str(VAE_OBJECTS), float_range=(0.0, 1.0),
                     pairs=["tf~torch", "tf~onnx", "onnx~torch"])
    assert report.passed, report.to_text()
    data = json.loads(report.to_json())
    by = {(o["name"], o["pair"]): o for o in data["outputs"]}
    for pair in ("tf~torch", "tf~onnx", "onnx~torch"):
        z = by[(Z, pair)]
        assert z["compared"] == "distribution" and z["passed"]
        assert z["random"]["ops"] == ["RandomNormal"] and z["random"]["draws"] == RANDOM_DRAWS
        assert z["random"]["max_abs_mean_diff"] <= z["random"]["mean_bound"]
        assert z["how"].startswith(f"random (RandomNormal), compared mean and std of {RANDOM_DRAWS} draws per element")
        for name in (Z_MEAN, Z_LOG_VAR):
            assert by[(name, pair)]["compared"] == "values" and by[(name, pair)]["max_abs_err"] < 1e-4
    text = report.to_text()
    assert f"{Z} (tf~torch): random (RandomNormal), compared mean and std of {RANDOM_DRAWS} draws" in text
    assert "max |Δmean| = " in text
    assert f"<system-out>random (RandomNormal), compared mean and std of {RANDOM_DRAWS}" in report.to_junit()


def _normal(shape: tuple[int, ...], mean: float = 0.5, std: float = 2.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, std, (RANDOM_DRAWS, *shape)).astype("float32")


def test_compare_samples_passes_the_same_distribution():
    result = compare_samples(_normal((4, 3), seed=1), _normal((4, 3), seed=2), Tolerance(1e-6, 1e-4))
    assert result.stats.passed and result.stats.total == 12 and result.draws == RANDOM_DRAWS
    assert result.max_mean_diff <= result.mean_bound and result.max_std_diff <= result.std_bound
    assert "compared mean and std of 200 draws per element" in result.describe(["RandomNormal"])


@pytest.mark.parametrize("planted", ["shifted mean", "wrong scale", "constant", "shape"])
def test_compare_samples_fails_a_planted_error(planted):
    expected = _normal((4, 3), seed=2)
    actual = {"shifted mean": lambda: _normal((4, 3), mean=1.5, seed=1),  # off by half a sigma
              "wrong scale": lambda: _normal((4, 3), std=3.0, seed=1),  # exp(0.5 z_log_var) * 1.5
              "constant": lambda: np.full((RANDOM_DRAWS, 4, 3), 0.5, np.float32),  # a draw frozen at its mean
              "shape": lambda: _normal((4, 2), seed=1)}[planted]()
    result = compare_samples(actual, expected, Tolerance(1e-6, 1e-4))
    assert not result.stats.passed and result.stats.mismatched > 0
    assert "standard errors" in result.stats.message or "shape" in result.stats.message


def test_dropout_baked_in_training_mode_is_still_refused(fixture_model, tmp_path):
    """tf.nn.dropout in a serving function (a RandomUniform tf2onnx exports, thresholded into a mask): refused,
    with the training-mode line and its re-export hint, and OUT is not written."""
    out = tmp_path / "out"
    proc = tf2torch("convert", fixture_model("keras_resize_bn") / "training_graph", "-o", out)
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("tf2torch convert: error: the serving function draws random numbers (dropout")
    assert "dropout/random_uniform" in error and "model(x, training=False)" in error and "refused" in error
    assert not out.exists()
