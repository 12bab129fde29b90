"""Issue 4 acceptance: ``tf2torch parity`` on real conversions (TF in the worker, torch, ONNX Runtime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from fixtures.models import model_dir
from migrate.cli import main
from tests.cli_helpers import env_with_root, tf2torch, user_pytest


def parity(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["parity", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def corrupt_matmul_weight(converted_dir: Path, target: Path) -> str:
    """Copy CONVERTED to ``target`` with one MatMul weight shifted inside model.pt2; return that ONNX node's name.

    The weight is found by value: the torch state tensor equal to the ONNX initializer the MatMul reads.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    shutil.copytree(converted_dir, target)
    model = onnx.load(str(target / "model.onnx"))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    matmuls = [(n.name, i) for n in model.graph.node if n.op_type == "MatMul" for i in n.input if i in initializers]
    program = torch.export.load(str(target / "model.pt2"))
    for node_name, weight in matmuls:
        for tensor in [*program.state_dict.values(), *program.constants.values()]:
            value = tensor.detach().numpy()
            if value.shape == initializers[weight].shape and np.array_equal(value, initializers[weight]):
                with torch.no_grad():
                    tensor.add_(0.25)
                torch.export.save(program, str(target / "model.pt2"))
                return node_name
    raise AssertionError("no MatMul weight of model.onnx found in model.pt2")


@pytest.mark.parametrize("name", ["multi_io", "cnn", "image2image"])
def test_converted_fixtures_pass(converted, capsys, name):
    source, out = converted(name)
    code, stdout, stderr = parity(capsys, source, out, "--format", "json", "--iterations", "2")
    report = json.loads(stdout)
    assert code == 0, stdout + stderr
    assert report["passed"] and report["pairs"] == ["tf~torch", "tf~onnx", "onnx~torch"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(report["outputs"]) == 3 * len(manifest["outputs"])
    for entry in report["outputs"]:
        assert entry["passed"] and entry["mismatched"] == 0 and entry["max_abs_err"] < 1e-4
        assert entry["total"] > 0


def test_embedding_input_gets_the_table_range(converted):
    from checks.parity.inputs import InputOptions, generate, infer_index_ranges
    from checks.parity.specs import load_manifest

    manifest = load_manifest(converted("multi_io")[1])
    ranges = infer_index_ranges(manifest.onnx, manifest.inputs)
    assert ranges == {"tokens": (0, 12)}  # Embedding(12, 4) in fixtures/models/multi_io.py
    tokens = generate(manifest.inputs, InputOptions(batch_size=50), ranges)[0]["tokens"]
    assert tokens.dtype == np.int64 and tokens.min() == 0 and tokens.max() == 11


def test_perturbed_weight_fails_and_per_layer_names_its_node(converted, capsys, tmp_path):
    source, out = converted("multi_io")
    node = corrupt_matmul_weight(out, tmp_path / "bad")
    code, stdout, stderr = parity(capsys, source, tmp_path / "bad", "--per-layer", "--format", "json")
    assert code == 1, stderr
    report = json.loads(stdout)
    by_pair = {}
    for entry in report["outputs"]:
        by_pair.setdefault(entry["pair"], []).append(entry["passed"])
    assert by_pair["tf~onnx"] == [True, True]  # the loss is on the torch side, and the report shows it
    assert not any(by_pair["tf~torch"]) and not any(by_pair["onnx~torch"])
    first = report["first_divergence"]
    assert first["onnx_node"] == node
    assert first["tf_op"] == node  # tf2onnx keeps the TF op name for the MatMul it converts
    assert first["torch_node"].startswith("matmul") and first["max_abs_err"] > 0.01

    code, text, _ = parity(capsys, source, tmp_path / "bad", "--per-layer")
    assert code == 1
    assert f"first divergence: ONNX node {node!r} (MatMul)" in text
    assert "FAIL" in text and "parity FAILED (2 of 2 comparisons) on tf~torch" in text
    assert "reported, not in the verdict: onnx~torch, tf~onnx (onnx~torch over tolerance)" in text


def test_json_and_junit_reports(converted, capsys, tmp_path):
    source, out = converted("multi_io")
    code, _, _ = parity(capsys, source, out, "--format", "json", "--output", tmp_path / "r" / "parity.json",
                        "--atol", "probs=1e-3", "--rtol", "1e-3", "--seed", "7")
    assert code == 0
    report = json.loads((tmp_path / "r" / "parity.json").read_text())
    assert set(report) == {"passed", "atol", "rtol", "iterations", "seed", "pairs", "outputs", "first_divergence",
                           "verdict_pairs", "atol_scale", "warnings", "inputs", "notes"} and report["notes"] == []
    assert (report["atol"], report["rtol"], report["seed"], report["iterations"]) == (1e-6, 1e-3, 7, 1)
    atols = {o["name"]: o["atol"] for o in report["outputs"]}
    assert atols["probs"] == 1e-3 and atols["score"] == pytest.approx(max(1e-6, 1e-3 * report["outputs"][-1]["scale"]))
    documented = {"name", "pair", "passed", "max_abs_err", "max_rel_err", "mean_abs_err", "mismatched", "total",
                  "worst_index"}
    assert all(documented <= set(entry) for entry in report["outputs"])
    assert report["first_divergence"] is None
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["parity.json"]  # no temporary left behind

    bad = tmp_path / "bad"
    corrupt_matmul_weight(out, bad)
    code, _, _ = parity(capsys, source, bad, "--format", "junit", "--output", tmp_path / "junit.xml")
    assert code == 1
    root = ET.parse(tmp_path / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert sorted((c.get("name"), c.get("classname")) for c in cases) == sorted(
        (o, f"parity.{p}") for o in ("probs", "score") for p in ("tf~torch", "tf~onnx", "onnx~torch"))
    failed = {(c.get("name"), c.get("classname")) for c in cases if c.find("failure") is not None}
    assert {pair for _, pair in failed} == {"parity.tf~torch"}  # onnx~torch is reported, not in the verdict
    assert root.find("testsuite").get("failures") == str(len(failed)) == "2"


def test_inputs_file_in_either_layout_gives_the_same_numbers(converted, capsys, tmp_path):
    source, out = converted("cnn")
    image = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype(np.float32)
    np.savez(tmp_path / "tf.npz", image=image)
    np.savez(tmp_path / "torch.npz", image=image.transpose(0, 3, 1, 2))
    reports = []
    for path, layout in ((tmp_path / "tf.npz", "tf"), (tmp_path / "torch.npz", "torch")):
        code, stdout, stderr = parity(capsys, source, out, "--inputs", path, "--inputs-layout", layout,
                                      "--format", "json")
        assert code == 0, stderr
        reports.append(json.loads(stdout))
    assert reports[0] == reports[1]
    assert reports[0]["outputs"][0]["total"] == 3 * 10 and reports[0]["seed"] is None


def _one_line_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("tf2torch parity: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs_exit_2_with_one_line(converted, capsys, tmp_path):
    source, out = converted("multi_io")
    np.savez(tmp_path / "missing.npz", features=np.zeros((2, 6), np.float32))
    _one_line_error(*parity(capsys, source, out, "--inputs", tmp_path / "missing.npz")[::2],
                    "missing.npz", "no array for input 'tokens'")
    np.savez(tmp_path / "shape.npz", features=np.zeros((2, 7), np.float32), tokens=np.zeros((2, 5), np.int64))
    _one_line_error(*parity(capsys, source, out, "--inputs", tmp_path / "shape.npz")[::2],
                    "input 'features' has shape (2, 7), expected (?, 6)")
    np.savez(tmp_path / "text.npz", features=np.zeros((2, 6), np.float32), tokens=np.array(["a b", "c"]))
    _one_line_error(*parity(capsys, source, out, "--inputs", tmp_path / "text.npz")[::2],
                    "input 'tokens' is a string tensor")
    _one_line_error(*parity(capsys, source, out, "--range", "nope=0:3")[::2], "--range names unknown input(s) nope")
    _one_line_error(*parity(capsys, source, out, "--atol", "nope=1e-3")[::2], "unknown output(s) nope")

    cnn_source, cnn_out = converted("cnn")
    np.savez(tmp_path / "nchw.npz", image=np.zeros((1, 3, 32, 32), np.float32))
    _one_line_error(*parity(capsys, cnn_source, cnn_out, "--inputs", tmp_path / "nchw.npz")[::2],
                    "expected (?, 32, 32, 3) in the TF layout (NHWC)", "--inputs-layout torch")


def test_string_signature_is_refused_with_one_line(capsys, tmp_path):
    """Convert refuses tf.string inputs, so CONVERTED is a manifest describing that signature."""
    source = model_dir("parity_string") / "saved_model"
    out = tmp_path / "out"
    out.mkdir()
    spec = {"layout": None, "tf_layout": None}
    (out / "manifest.json").write_text(json.dumps({
        "format": 1, "source": {"path": str(source), "kind": "saved_model", "signature": "serving_default"},
        "inputs": [dict(spec, name="text", tf_name="text", dtype="string", shape=[None], tf_shape=[None]),
                   dict(spec, name="x", tf_name="x", dtype="float32", shape=[None, 4], tf_shape=[None, 4])],
        "outputs": [dict(spec, name="y", tf_name="y", dtype="float32", shape=[None, 4], tf_shape=[None, 4])]}))
    _one_line_error(*parity(capsys, source, out)[::2], "input 'text' is a string tensor")
    np.savez(tmp_path / "in.npz", text=np.array(["ab", "c"]), x=np.zeros((2, 4), np.float32))
    _one_line_error(*parity(capsys, source, out, "--inputs", tmp_path / "in.npz")[::2],
                    "input 'text' is a string tensor")


def test_converted_dir_without_manifest_exits_2_from_the_console(tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"")
    source = model_dir("mlp") / "saved_model"
    proc = tf2torch("parity", source, tmp_path)
    _one_line_error(proc.returncode, proc.stderr, f"{tmp_path}: no manifest.json",
                    "pass a directory written by 'tf2torch convert'")
    assert proc.stdout == ""


def test_python_api_returns_a_report(converted):
    import checks.parity

    source, out = converted("multi_io")
    report = checks.parity.compare(source, out, onnx=False, atol={"score": 1e-6}, batch_size=4)
    assert report.passed and report.pairs == ["tf~torch"]
    assert [o.name for o in report.outputs] == ["probs", "score"] and report.outputs[1].atol == 1e-6
    assert report.outputs[0].atol == pytest.approx(max(1e-6, 1e-3 * report.outputs[0].scale))
    assert report.outputs[0].stats.total == 4 * 3
    assert "parity PASSED" in str(report)


def test_pytest_plugin_fails_a_users_test_with_the_table(converted, tmp_path):
    source, out = converted("multi_io")
    bad = tmp_path / "bad"
    corrupt_matmul_weight(out, bad)
    (tmp_path / "test_user.py").write_text(
        "def test_good(tf2torch_parity):\n"
        f"    tf2torch_parity({str(source)!r}, {str(out)!r})\n\n"
        "def test_bad(tf2torch_parity):\n"
        f"    tf2torch_parity({str(source)!r}, {str(bad)!r}, per_layer=True)\n")
    proc = user_pytest(tmp_path / "test_user.py", env_with_root())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout
    assert "output  pair" in proc.stdout and "parity FAILED (2 of 2 comparisons)" in proc.stdout
    assert "first divergence: ONNX node" in proc.stdout


def test_port_output_is_checked_against_keras_and_a_perturbed_weight_fails(capsys, tmp_path):
    """OUT written by 'tf2torch port': its module in eval mode is the torch witness; no ONNX pairs exist."""
    from safetensors.numpy import load_file, save_file

    source = model_dir("cnn") / "model.keras"
    out = tmp_path / "port"
    proc = tf2torch("port", source, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    code, _, stderr = parity(capsys, source, out)  # a port output is code: imported only when asked
    assert code == 2 and "--trust-model-py" in stderr
    code, stdout, stderr = parity(capsys, source, out, "--trust-model-py", "--format", "json", "--output",
                                  tmp_path / "ok.json")
    assert code == 0, stdout + stderr
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["passed"] and report["pairs"] == ["tf~torch"] and report["verdict_pairs"] == ["tf~torch"]
    assert [o["pair"] for o in report["outputs"]] == ["tf~torch"] and report["outputs"][0]["total"] > 0
    assert any("port output" in n and "tf~onnx" in n for n in report["notes"])
    assert "tf~onnx and onnx~torch do not exist" in stdout

    manifest = json.loads((out / "manifest.json").read_text())
    key = [w["torch"] for w in manifest["weights"] if w["torch"].endswith(".weight")][-1]
    weights = load_file(str(out / "weights.safetensors"))
    weights[key] = weights[key] + 0.5 * np.abs(weights[key]).max()
    save_file(weights, str(out / "weights.safetensors"))
    code, stdout, stderr = parity(capsys, source, f"port:{out}")
    assert code == 1, stdout + stderr
    assert "parity FAILED" in stdout and "tf~torch" in stdout

    code, _, stderr = parity(capsys, source, out, "--per-layer", "--trust-model-py")
    assert code == 2 and "no model.onnx" not in stderr and "port" in stderr
