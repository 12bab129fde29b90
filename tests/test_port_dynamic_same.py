"""Strided 'same' convolutions and pooling on a dynamic time axis port (``pad_same`` at run time).

TF pads 'same' by an amount that depends on the length; the port computes it from ``x.shape`` when it runs,
as timm's ``pad_same`` does. References are Keras' own outputs at an odd and an even length.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.cli_helpers import train_parity
from tests.conftest import assert_close
from tests.test_port import keras_inputs, keras_predict, run_module, to_module


def test_strided_same_on_a_dynamic_time_axis_matches_keras(fixture_model, tmp_path):
    import migrate

    source = fixture_model("port_speech_strided") / "model.keras"
    out = tmp_path / "out"
    result = migrate.port(source, out)
    text = (out / "model.py").read_text()
    assert "def pad_same(" in text and "def same_pads(" in text and "def keras_avg_pool_same(" in text
    assert "self.conv1(pad_same(spectrogram, (3, 3), (2, 2), (1, 1)))" in text
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", str(out / "model.py")],
                          check=False, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    manifest, module = result.manifest, result.module
    cases = [(2, 23), (3, 40)]
    batches = [keras_inputs(manifest, batch, seed=7 + length, length=length) for batch, length in cases]
    for (batch, length), feeds, want in zip(cases, batches, keras_predict(source, batches)):
        got = run_module(module, manifest, feeds)
        assert_close(got["logits"], want["logits"], what=f"batch {batch} length {length}")

    # export and compile keep the time dim dynamic: lengths at which every strided layer still outputs
    # 2 steps or more (a traced 1 would be specialised); the whole stack strides time by 96
    (spec,) = manifest["inputs"]
    inputs = [(to_module(keras_inputs(manifest, 2, seed=1, length=length)[spec["tf_name"]], spec),)
              for length in (203, 150)]
    program = torch.export.export(module, inputs[0], dynamic_shapes=({2: torch.export.Dim("time", min=97)},))
    compiled = torch.compile(module, fullgraph=True, backend="eager", dynamic=True)
    with torch.no_grad():
        for args in inputs:
            expected = module(*args)
            torch.testing.assert_close(program.module()(*args), expected)
            torch.testing.assert_close(compiled(*args), expected)
    assert json.loads((out / "manifest.json").read_text())["verified_max_abs_err"]["logits"] < 1e-4


@pytest.mark.parametrize("optimizer", ["sgd:learning_rate=0.05,momentum=0.9", "adam:learning_rate=0.01"])
def test_strided_same_on_a_dynamic_time_axis_trains_like_keras(port_once, optimizer):
    """3 steps of ``parity --train``: the run-time padding is differentiated like TF's 'same'."""
    source, out = port_once("port_speech_strided")
    train_parity(source, out, optimizer, "--loss", "mse")
