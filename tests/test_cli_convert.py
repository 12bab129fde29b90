"""The ``tf2torch convert`` command: exit codes, one-line errors, atomic output, quiet mode, process boundary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import ROOT, tf2torch


def bad_sources(tmp: Path, good: Path) -> dict[str, tuple[Path, list[str]]]:
    (tmp / "empty").mkdir()
    truncated = tmp / "truncated"
    shutil.copytree(good, truncated)
    pb = (truncated / "saved_model.pb").read_bytes()
    (truncated / "saved_model.pb").write_bytes(pb[: len(pb) // 3])
    (tmp / "text" / "model.keras").parent.mkdir()
    (tmp / "text" / "model.keras").write_text("not a model\n")
    (tmp / "fake.h5").write_text("not hdf5\n")
    return {
        "missing": (tmp / "does-not-exist", ["no such file or directory"]),
        "empty-dir": (tmp / "empty", ["is empty", "not a SavedModel"]),
        "truncated-pb": (truncated, ["cannot read the SavedModel", "corrupt"]),
        "text-keras": (tmp / "text" / "model.keras", ["not a Keras model"]),
        "text-h5": (tmp / "fake.h5", ["not an HDF5 file"]),
        "unknown-signature": (good, ["no signature 'nope'", "available signatures: serve, serving_default"]),
    }


@pytest.mark.parametrize("case", ["missing", "empty-dir", "truncated-pb", "text-keras", "text-h5", "unknown-signature"])
def test_bad_input_exit_2_one_line_nothing_written(fixture_model, tmp_path, case):
    source, needles = bad_sources(tmp_path, fixture_model("mlp") / "saved_model")[case]
    out = tmp_path / "sub" / "out"
    extra = ["--signature", "nope"] if case == "unknown-signature" else []
    proc = tf2torch("convert", str(source), "-o", str(out), "-q", *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tf2torch convert: error: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists() and not out.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_existing_out_refused_without_force(fixture_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    source = str(fixture_model("mlp") / "saved_model")
    proc = tf2torch("convert", source, "-o", str(out))
    assert proc.returncode == 2 and "already exists; pass --force" in proc.stderr
    assert (out / "keep.txt").read_text() == "user data"
    proc = tf2torch("convert", source, "-o", str(out), "--force", "-q")
    assert proc.returncode == 2 and "is not a tf2torch output" in proc.stderr  # docs/guarantees.md
    assert (out / "keep.txt").read_text() == "user data"
    (out / "keep.txt").unlink()
    proc = tf2torch("convert", source, "-o", str(out), "--force", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.pt2"]


def test_progress_and_summary_without_library_chatter(fixture_model, tmp_path):
    proc = tf2torch("convert", str(fixture_model("mlp") / "saved_model"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [ln[:5] for ln in lines[:3]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert lines[3].startswith("converted ") and "torch.export" in lines[3] and "features[N,16]" in lines[3]
    assert len(lines) == 4, proc.stderr


def test_conversion_failure_exits_1_and_names_the_op(tmp_path):
    """An op no converter handles: exit 1, one line naming the op, node count and first node names."""
    from onnx import TensorProto, helper

    from migrate.conversion.to_torch import onnx_to_torch
    from migrate.core.errors import ConversionError

    nodes = [helper.make_node("Det", ["x"], [f"d{i}"], name=f"det_{i}") for i in range(2)]
    nodes.append(helper.make_node("Add", ["d0", "d1"], ["y"], name="add"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError) as err:
        onnx_to_torch(model)
    assert str(err.value).startswith("unsupported ONNX op(s) at opset 17: Det (2 nodes, first: det_0, det_1)")
    assert ConversionError.exit_code == 1


def test_tensorflow_never_enters_this_process(fixture_model, tmp_path):
    """`import migrate, checks` and a whole conversion keep TensorFlow out of the parent's sys.modules."""
    code = (
        "import sys, migrate, checks\n"
        "assert 'tensorflow' not in sys.modules and 'torch' not in sys.modules, 'import must be cheap'\n"
        f"r = migrate.convert({str(fixture_model('cnn') / 'model.keras')!r}, {str(tmp_path / 'o')!r})\n"
        "assert 'torch' in sys.modules\n"
        "leaked = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
        "assert not leaked, leaked\n"
        "print(r.manifest['source']['kind'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "keras"


def test_manifest_contract(fixture_model, tmp_path):
    proc = tf2torch("convert", str(fixture_model("cnn") / "saved_model"), "-o", str(tmp_path / "o"), "--opset", "15", "-q")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["format"] == 1
    assert manifest["source"]["kind"] == "saved_model" and manifest["source"]["signature"] == "serving_default"
    assert manifest["onnx"] == {"opset": 15}
    assert set(manifest["versions"]) >= {"tf2torch", "tensorflow", "tf2onnx", "onnx", "torch"}
    assert set(manifest["timings_s"]) == {"tf_export", "to_torch", "export"}
    (image,) = manifest["inputs"]
    assert image == {"name": "image", "tf_name": "image", "dtype": "float32", "shape": [None, 3, 32, 32],
                     "tf_shape": [None, 32, 32, 3], "layout": "NCHW", "tf_layout": "NHWC"}


def test_bad_opset_is_usage_error(fixture_model, tmp_path):
    proc = tf2torch("convert", str(fixture_model("mlp") / "saved_model"), "-o", str(tmp_path / "o"), "--opset", "9")
    assert proc.returncode == 2 and "--opset 9 is not supported; use 13..18" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_missing_convert_extra_says_what_to_install(fixture_model, tmp_path):
    """A linter-only install (no onnx2torch) gets the install line, not an ImportError."""
    code = ("import sys; sys.modules['onnx2torch'] = None\n"
            "from migrate.cli import main\n"
            f"sys.exit(main(['convert', {str(fixture_model('mlp') / 'saved_model')!r}, '-o', {str(tmp_path / 'o')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("tf2torch convert: error: tf2torch convert needs packages that are not installed (onnx2torch); "
                                   "install them with: pip install -c constraints.txt 'tf2torch[convert]'")
    assert not (tmp_path / "o").exists()
