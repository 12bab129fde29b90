"""Issue 2 acceptance: every fixture and source kind converts and matches TF at batch 1 and 3, in both layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import migrate
from tests.conftest import assert_close, random_tf_inputs, tf_predict, to_tf_layout, to_torch_layout

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("mlp", "saved_model", "serving_default"),
    ("cnn", "saved_model", "serving_default"),
    ("cnn", "model.keras", "serving_default"),
    ("cnn", "model.h5", "serving_default"),
    ("image2image", "saved_model", "serving_default"),
    ("multi_io", "saved_model", "serving_default"),
    ("tf_module", "saved_model", "serving_default"),
    ("tf_module", "saved_model", "scaled"),
]


def run_plain_torch(pt2: Path, names: list[str], batches: list[dict[str, np.ndarray]], tmp: Path,
                    compile_too: bool = False) -> list[list[np.ndarray]]:
    """Feed torch-layout batches to model.pt2 in a fresh process that imports only torch."""
    args = [sys.executable, str(ROOT / "tests" / "run_pt2.py"), *(["--compile"] if compile_too else []),
            str(pt2), ",".join(names)]
    for i, feeds in enumerate(batches):
        np.savez(tmp / f"t_in{i}.npz", **feeds)
        args += [str(tmp / f"t_in{i}.npz"), str(tmp / f"t_out{i}.npz")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outs = []
    for i in range(len(batches)):
        with np.load(tmp / f"t_out{i}.npz") as data:
            outs.append([data[f"out{j}"] for j in range(len(data.files))])
    return outs


@pytest.mark.parametrize("keep_layout", [False, True], ids=["nchw", "keep-layout"])
@pytest.mark.parametrize("name,kind,signature", CASES, ids=[f"{n}-{k}-{s}" for n, k, s in CASES])
def test_convert_matches_tensorflow(fixture_model, tmp_path, name, kind, signature, keep_layout):
    source = fixture_model(name) / kind
    result = migrate.convert(source, tmp_path / "out", signature=signature, keep_layout=keep_layout)
    manifest = result.manifest
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "model.onnx", "model.pt2"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    assert manifest["source"]["kind"] == {"saved_model": "saved_model", "model.keras": "keras", "model.h5": "h5"}[kind]

    batches = [random_tf_inputs(manifest["inputs"], batch, seed=batch) for batch in (1, 3)]
    expected = tf_predict(source, batches, signature)
    torch_batches = [{s["name"]: to_torch_layout(feeds[s["tf_name"]], s) for s in manifest["inputs"]} for feeds in batches]
    actual = run_plain_torch(result.paths["pt2"], [s["name"] for s in manifest["inputs"]], torch_batches, tmp_path)
    for feeds, want, got in zip(batches, expected, actual):
        assert len(got) == len(manifest["outputs"])
        for spec, array in zip(manifest["outputs"], got):
            assert_close(to_tf_layout(array, spec), want[spec["tf_name"]],
                         what=f"{name}/{spec['name']} batch {next(iter(feeds.values())).shape[0]}")


@pytest.mark.parametrize("keep_layout", [False, True])
def test_image_layouts_in_manifest(fixture_model, tmp_path, keep_layout):
    result = migrate.convert(fixture_model("image2image") / "saved_model", tmp_path / "o", keep_layout=keep_layout)
    (image,), (mask,) = result.manifest["inputs"], result.manifest["outputs"]
    assert image["tf_layout"] == mask["tf_layout"] == "NHWC"
    assert image["tf_shape"] == [None, 16, 16, 3]
    if keep_layout:
        assert image["layout"] == mask["layout"] == "NHWC"
        assert image["shape"] == [None, 16, 16, 3] and mask["shape"] == [None, 16, 16, 2]
    else:
        assert image["layout"] == mask["layout"] == "NCHW"
        assert image["shape"] == [None, 3, 16, 16] and mask["shape"] == [None, 2, 16, 16]


def test_non_image_tensors_have_no_layout(fixture_model, tmp_path):
    manifest = migrate.convert(fixture_model("multi_io") / "saved_model", tmp_path / "o").manifest
    assert [s["name"] for s in manifest["inputs"]] == ["features", "tokens"]
    assert {s["name"]: s["dtype"] for s in manifest["inputs"]} == {"features": "float32", "tokens": "int64"}
    assert sorted(s["name"] for s in manifest["outputs"]) == ["probs", "score"]
    assert all(s["layout"] is None and s["tf_layout"] is None for s in manifest["inputs"] + manifest["outputs"])


def test_api_load_returns_module(fixture_model, tmp_path):
    import torch

    result = migrate.convert(fixture_model("mlp") / "saved_model", tmp_path / "o")
    module = migrate.load(tmp_path / "o")
    assert isinstance(module, torch.nn.Module)
    x = torch.randn(5, 16)
    torch.testing.assert_close(module(x), result.module(x))
    assert module(x).shape == (5, 4)
