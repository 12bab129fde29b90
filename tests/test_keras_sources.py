"""Keras sources (issue 10): inference-mode export, an independent Keras reference, training-mode warnings,
custom objects, readable input names.

References come from the TF worker's ``predict``: for a .keras/.h5 file that is the Keras model itself,
``model(x, training=False)`` (what ``model.predict`` computes), never the SavedModel the converter exports.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

import migrate
from checks.parity.api import compare
from migrate.core.errors import InputError
from migrate.tf.client import run_worker
from migrate.tf.custom_objects import specs
from tests.cli_helpers import ROOT, tf2torch
from tests.conftest import assert_close, tf_predict, to_torch_layout

CUSTOM_MODULE = ROOT / "fixtures" / "models" / "keras_custom_layer.py"
BATCH_NORM_WARNING = "computes BatchNorm with batch statistics (training mode)"


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 20, 20, 3)).astype("float32")


def run_module(module, manifest: dict, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    args = [torch.from_numpy(to_torch_layout(feeds[s["tf_name"]], s)) for s in manifest["inputs"]]
    with torch.no_grad():
        return module(*args).numpy()


@pytest.mark.parametrize("kind", ["model.keras", pytest.param("model.h5", marks=pytest.mark.slow)])
def test_resize_batchnorm_keras_file_matches_keras_inference(fixture_model, tmp_path, kind):
    """model.export() would bake BatchNorm in training mode here (Resizing before BatchNormalization)."""
    source = fixture_model("keras_resize_bn") / kind
    result = migrate.convert(source, tmp_path / "out")
    assert result.manifest["warnings"] == []
    assert [(s["name"], s["tf_name"]) for s in result.manifest["inputs"]] == [("input_layer", "input_layer")]
    for batch in (1, 5):
        feeds = {"input_layer": images(batch, seed=batch)}
        (expected,) = tf_predict(source, [feeds])
        actual = run_module(result.module, result.manifest, feeds)
        assert_close(actual, expected["output_0"], what=f"{kind} batch {batch}")
        assert (actual.argmax(-1) == expected["output_0"].argmax(-1)).all()


def test_training_mode_saved_model_warns_and_differs_from_keras(fixture_model, tmp_path):
    """The SavedModel Keras's model.export() wrote: converted faithfully, with a warning saying it is training mode."""
    model = fixture_model("keras_resize_bn")
    out = tmp_path / "out"
    proc = tf2torch("convert", str(model / "saved_model"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warning) == 1 and BATCH_NORM_WARNING in warning[0], proc.stderr
    assert "2 layer(s)" in warning[0] and "training=False" in warning[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["warnings"]) == 1 and BATCH_NORM_WARNING in manifest["warnings"][0]
    # Keras named the unnamed input keras_tensor; the manifest (and model.pt2's keyword) says input_layer,
    # as for the .keras file.
    assert [(s["name"], s["tf_name"]) for s in manifest["inputs"]] == [("input_layer", "keras_tensor")]

    feeds = images(4)
    (keras_out,) = tf_predict(model / "model.keras", [{"input_layer": feeds}])
    converted = run_module(migrate.load(out), manifest, {"keras_tensor": feeds})
    assert np.abs(converted - keras_out["output_0"]).max() > 0.5  # what parity used to pass


def test_fused_batchnorm_and_dropout_in_serving_graph_warn(fixture_model, tmp_path):
    """Keras-2/raw-TF training graphs: FusedBatchNormV3(is_training=True) and tf.nn.dropout."""
    run_worker("export", {"source": str(fixture_model("keras_resize_bn") / "training_graph"),
                          "signature": "serving_default", "opset": 17, "keep_layout": False,
                          "onnx": str(tmp_path / "m.onnx"), "signature_json": str(tmp_path / "s.json"),
                          "custom_objects": []})
    warnings = json.loads((tmp_path / "s.json").read_text())["warnings"]
    assert len(warnings) == 2, warnings
    assert BATCH_NORM_WARNING in warnings[0] and "FusedBatchNormV3" in warnings[0]
    assert "draws random numbers (dropout" in warnings[1] and "dropout/random_uniform" in warnings[1]


def test_clean_saved_model_has_no_warnings(fixture_model, tmp_path):
    result = migrate.convert(fixture_model("cnn") / "saved_model", tmp_path / "out")  # BatchNorm, inference mode
    assert result.manifest["warnings"] == []


def test_custom_layer_needs_custom_objects_and_says_which(fixture_model, tmp_path):
    source = fixture_model("keras_custom_layer") / "model.keras"
    proc = tf2torch("convert", str(source), "-o", str(tmp_path / "out"), "-q")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tf2torch convert: error: "), proc.stderr
    assert "custom class 'SensorNorm'" in lines[0] and "--custom-objects module.py" in lines[0]
    assert "saved by model.save" not in lines[0]
    assert not (tmp_path / "out").exists()

    proc = tf2torch("convert", str(source), "-o", str(tmp_path / "out"), "-q",
                    "--custom-objects", str(CUSTOM_MODULE.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][0]["name"] == "readings"
    feeds = {"readings": np.random.default_rng(0).standard_normal((3, 6)).astype("float32")}
    (expected,) = tf_predict(source, [feeds], custom_objects=str(CUSTOM_MODULE))
    assert_close(run_module(migrate.load(tmp_path / "out"), manifest, feeds), expected["output_0"])

    proc = tf2torch("parity", str(source), str(tmp_path / "out"), "--format", "json")
    assert proc.returncode == 2 and "custom class 'SensorNorm'" in proc.stderr
    proc = tf2torch("parity", str(source), str(tmp_path / "out"), "--format", "json",
                    "--custom-objects", "fixtures.models.keras_custom_layer:SensorNorm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["passed"] is True


def test_custom_objects_api_module_attr(fixture_model, tmp_path):
    source = fixture_model("keras_custom_layer") / "model.keras"
    result = migrate.convert(source, tmp_path / "out", custom_objects="fixtures.models.keras_custom_layer:SensorNorm")
    report = compare(source, tmp_path / "out", custom_objects=[str(CUSTOM_MODULE)], onnx=False)
    assert report.passed, report.to_text()
    assert result.manifest["inputs"][0]["name"] == "readings"


def test_subclassed_model_converts_with_custom_objects(fixture_model, tmp_path):
    """A subclassed Keras model (BatchNorm + Dropout) loaded from a file: built, never called, inference mode."""
    source = fixture_model("keras_custom_layer") / "sensor_net.keras"
    result = migrate.convert(source, tmp_path / "out", custom_objects=str(CUSTOM_MODULE))
    assert [s["name"] for s in result.manifest["inputs"]] == ["inputs"] and result.manifest["warnings"] == []
    for batch in (1, 4):
        feeds = {"inputs": np.random.default_rng(batch).standard_normal((batch, 5)).astype("float32")}
        (expected,) = tf_predict(source, [feeds], custom_objects=str(CUSTOM_MODULE))
        assert_close(run_module(result.module, result.manifest, feeds), expected["output_0"], what=f"batch {batch}")


def test_custom_objects_specs_are_checked_before_any_work(tmp_path):
    module = tmp_path / "layers.py"
    module.write_text("X = 1\n")
    assert specs(f"{module}:Sensor") == [{"module": str(module), "attr": "Sensor", "name": None, "root": None}]
    assert specs([str(module), "pkg.mod:Name"])[1] == {"module": "pkg.mod", "attr": "Name", "name": None,
                                                       "root": str(Path.cwd())}
    assert specs({"Temp": tempfile.TemporaryDirectory})[0]["module"] == "tempfile"
    for bad, needle in [(str(tmp_path / "missing.py"), "no such file"), ("not a/module:X", "neither a .py file"),
                        ({"f": lambda x: x}, "top level of an importable module")]:
        with pytest.raises(InputError, match=needle):
            specs(bad)


@pytest.mark.slow
def test_keras_applications_input_name_is_readable(fixture_model, tmp_path):
    result = migrate.convert(fixture_model("app_mobilenetv3small") / "saved_model", tmp_path / "out")
    (spec,) = result.manifest["inputs"]
    assert spec["name"] == "input_layer" and spec["tf_name"].startswith("keras_tensor"), spec
    assert result.manifest["warnings"] == []
