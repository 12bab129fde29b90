"""Parity building blocks without models: the tolerance rule, layouts, input generation, report formats."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from checks.parity.inputs import FALLBACK_INT_RANGE, InputOptions, generate, infer_index_ranges
from checks.parity.numeric import Tolerances
from checks.parity.report import OutputResult, Report
from checks.parity.specs import TensorSpec
from migrate.core.compare import NOISE, Stats, Tolerance, compare, tolerance
from migrate.core.errors import InputError


def test_tolerance_rule_is_atol_plus_rtol_times_expected():
    expected = np.array([0.0, 100.0, -100.0], dtype=np.float32)
    # bounds: 1e-3 + 1e-2*|e| -> 0.001, 1.001, 1.001
    inside = compare(expected + np.array([0.0009, 1.0, -1.0], dtype=np.float32), expected, Tolerance(1e-3, 1e-2))
    assert inside.passed and inside.mismatched == 0
    outside = compare(expected + np.array([0.002, 0.5, -1.5], dtype=np.float32), expected, Tolerance(1e-3, 1e-2))
    assert not outside.passed
    assert (outside.mismatched, outside.total) == (2, 3)
    assert outside.worst_index == [0]  # 0.002 is twice its bound; 1.5 is 1.5 times its bound
    assert outside.max_abs_err == pytest.approx(1.5)
    assert outside.max_rel_err == pytest.approx(0.015)
    assert outside.mean_abs_err == pytest.approx((0.002 + 0.5 + 1.5) / 3, rel=1e-4)


def test_nan_and_inf_positions_must_agree():
    e = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert compare(e.copy(), e, Tolerance(1e-5, 1e-4)).passed
    swapped = np.array([np.nan, -np.inf, -np.inf, 1.0])
    stats = compare(swapped, e, Tolerance(1e-5, 1e-4))
    assert (stats.passed, stats.mismatched, stats.worst_index) == (False, 1, [1])
    finite_for_nan = compare(np.array([0.0, np.inf, -np.inf, 1.0]), e, Tolerance(1e9, 1e9))
    assert not finite_for_nan.passed and finite_for_nan.worst_index == [0]


def test_integers_and_bools_are_exact_whatever_the_tolerance():
    assert not compare(np.array([1, 2, 4]), np.array([1, 2, 3]), Tolerance(10.0, 10.0)).passed
    assert compare(np.array([1, 2, 3]), np.array([1, 2, 3]), Tolerance(0.0, 0.0)).passed
    stats = compare(np.array([[True, False]]), np.array([[True, True]]), Tolerance(1.0, 1.0))
    assert (stats.mismatched, stats.worst_index) == (1, [0, 1])


def test_shape_and_dtype_mismatch_fail_with_a_message():
    stats = compare(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32), Tolerance(1.0, 1.0))
    assert not stats.passed and stats.message == "shape (2, 3) differs from the reference's (2, 4)"
    stats = compare(np.zeros(3, np.float64), np.zeros(3, np.float32), Tolerance(1.0, 1.0))
    assert not stats.passed and "dtype float64" in stats.message


def test_merge_accumulates_batches():
    e = np.zeros(4, np.float32)
    total = Stats()
    total.merge(compare(e + 1e-6, e, Tolerance(1e-5, 0)))
    total.merge(compare(np.array([0, 0, 1, 0], np.float32), e, Tolerance(1e-5, 0)))
    assert (total.passed, total.mismatched, total.total, total.worst_index) == (False, 1, 8, [2])
    assert total.mean_abs_err == pytest.approx((4e-6 + 1.0) / 8)


def test_per_output_tolerances_override_global_and_dtype_defaults():
    tol = Tolerances(atol=1e-3, per_output_atol={"logits": 0.5}, per_output_rtol={"probs": 0.0})
    assert tol.for_output("logits", "float32") == Tolerance(0.5, 1e-4)
    assert tol.for_output("probs", "float32") == Tolerance(1e-3, 0.0)
    assert Tolerances().for_output("x", "float16") == Tolerance(1e-3, 1e-2)


def test_one_tolerance_formula_adds_both_sides_own_error():
    # atol = max(floor, sum factor*scale) + NOISE * (own error of torch + own error of the reference)
    tol = tolerance((1e-3, 15.0), (1e-6, 1.0), floor=1e-6, rtol=1e-4, noise=6.75e-5)
    assert tol.atol == pytest.approx(1.5001e-2 + NOISE * 6.75e-5) and tol.rtol == 1e-4
    assert tolerance((1e-3, 0.0), floor=1e-6).atol == 1e-6
    assert tolerance((1e-3, float("inf")), floor=1e-6).atol == 1e-6  # an overflowing scale adds nothing
    # a LayerNorm over one channel: torch gives beta exactly, Keras eager beta + 6.75e-5; without the
    # reference's own error that is a divergence, with it it is not
    beta, keras = np.full(4, 0.25, np.float32), np.full(4, 0.25 + 6.75e-5, np.float32)
    assert not compare(beta, keras, tolerance((1e-5, 1.0), rtol=1e-4)).passed
    assert compare(beta, keras, tolerance((1e-5, 1.0), rtol=1e-4, noise=6.75e-5)).passed


def test_layout_permutation_roundtrip():
    spec = TensorSpec("image", "image", "float32", (None, 3, 32, 16), (None, 32, 16, 3), "NCHW", "NHWC")
    tf_array = np.arange(2 * 32 * 16 * 3).reshape(2, 32, 16, 3)
    torch_array = spec.to_torch_layout(tf_array)
    assert torch_array.shape == (2, 3, 32, 16)
    assert torch_array[1, 2, 5, 7] == tf_array[1, 5, 7, 2]
    assert np.array_equal(spec.to_tf_layout(torch_array), tf_array)
    assert spec.tf_dims() == (None, 32, 16, 3)


def _gather_model(path):
    import onnx
    from onnx import TensorProto, helper

    table = helper.make_tensor("table", TensorProto.FLOAT, [7, 2], [0.0] * 14)
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "ids64"], ["emb"]),
             helper.make_node("Shape", ["pos"], ["pos_shape"]),  # shape only: says nothing about pos's values
             helper.make_node("Gather", ["pos_shape", "zero"], ["n"]),
             helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, [None, 5]),
         helper.make_tensor_value_info("pos", TensorProto.INT64, [None, 5])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("nf", TensorProto.FLOAT, None)],
        [table, helper.make_tensor("zero", TensorProto.INT64, [], [0])])
    onnx.save(helper.make_model(graph), str(path))


def test_integer_range_comes_from_the_embedding_table(tmp_path):
    _gather_model(tmp_path / "m.onnx")
    specs = (TensorSpec("ids", "ids", "int32", (None, 5), (None, 5)),
             TensorSpec("pos", "pos", "int64", (None, 5), (None, 5)))
    ranges = infer_index_ranges(tmp_path / "m.onnx", specs)
    assert ranges == {"ids": (0, 7)}
    batch = generate(specs, InputOptions(batch_size=64), ranges)[0]
    assert batch["ids"].dtype == np.int32 and batch["ids"].min() == 0 and batch["ids"].max() == 6
    assert batch["pos"].max() == FALLBACK_INT_RANGE[1] - 1
    user = generate(specs, InputOptions(batch_size=64, ranges={"pos": (100, 103)}), ranges)[0]
    assert sorted(np.unique(user["pos"])) == [100, 101, 102]


def test_generation_is_seeded_and_dtype_aware():
    specs = (TensorSpec("img", "img", "float32", (None, 3, 4, 4), (None, 4, 4, 3), "NCHW", "NHWC"),
             TensorSpec("mask", "mask", "bool", (None, None), (None, None)))
    a = generate(specs, InputOptions(seed=3, iterations=2, batch_size=5, dim_size=6))
    b = generate(specs, InputOptions(seed=3, iterations=2, batch_size=5, dim_size=6))
    assert len(a) == 2 and np.array_equal(a[1]["img"], b[1]["img"]) and not np.array_equal(a[0]["img"], a[1]["img"])
    assert a[0]["img"].shape == (5, 4, 4, 3) and a[0]["img"].dtype == np.float32  # TF layout
    assert a[0]["mask"].shape == (5, 6) and a[0]["mask"].dtype == np.bool_
    uniform = generate(specs[:1], InputOptions(float_range=(2.0, 3.0)))[0]["img"]
    assert uniform.min() >= 2.0 and uniform.max() < 3.0


def test_string_inputs_cannot_be_generated():
    with pytest.raises(InputError, match="input 'text' is a string tensor"):
        generate((TensorSpec("text", "text", "string", (None,), (None,)),), InputOptions())


def _report():
    ok = compare(np.ones(3, np.float32), np.ones(3, np.float32), Tolerance(1e-5, 1e-4))
    bad = compare(np.array([1, 2], np.float32), np.array([1, 3], np.float32), Tolerance(1e-5, 1e-4))
    report = Report(atol=1e-5, rtol=1e-4, iterations=1, seed=0, pairs=["tf~torch", "tf~onnx"])
    report.outputs = [OutputResult("a", "tf~torch", ok, 1e-5, 1e-4), OutputResult("a", "tf~onnx", ok, 1e-5, 1e-4),
                      OutputResult("b", "tf~torch", bad, 1e-5, 1e-4), OutputResult("b", "tf~onnx", ok, 1e-5, 1e-4)]
    return report


def test_report_formats():
    report = _report()
    assert not report.passed
    data = json.loads(report.to_json())
    assert list(data) == ["passed", "atol", "rtol", "iterations", "seed", "pairs", "outputs", "first_divergence",
                          "verdict_pairs", "atol_scale", "warnings", "inputs", "notes"]
    assert data["outputs"][2] == {"name": "b", "pair": "tf~torch", "passed": False, "max_abs_err": 1.0,
                                  "max_rel_err": pytest.approx(1 / 3), "mean_abs_err": 0.5, "mismatched": 1,
                                  "total": 2, "worst_index": [1], "message": None, "atol": 1e-5, "rtol": 1e-4,
                                  "scale": 0.0, "gating": True,
                                  "compared": "values", "how": None, "random": None}
    root = ET.fromstring(report.to_junit())
    cases = root.findall("./testsuite/testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("parity.tf~torch", "a"), ("parity.tf~onnx", "a"), ("parity.tf~torch", "b"), ("parity.tf~onnx", "b")]
    assert [c.find("failure") is not None for c in cases] == [False, False, True, False]
    text = report.to_text()
    assert text.splitlines()[0].split() == ["output", "pair", "result", "max_abs", "max_rel", "mean_abs",
                                           "mismatched", "worst_index", "atol"]
    assert "b       tf~torch  FAIL" in text and "1/2 (50.0%)" in text and "parity FAILED (1 of 4" in text


def test_importing_checks_parity_and_its_plugin_loads_no_heavy_library():
    code = ("import sys, checks, checks.parity, checks.parity.cli, checks.parity.pytest_plugin; "
            "heavy = [m for m in ('torch', 'tensorflow', 'onnxruntime', 'onnx', 'numpy') if m in sys.modules]; "
            "print(heavy); assert callable(checks.parity.compare)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_flat_warning_names_the_input_to_vary_and_the_option():
    from checks.parity.api import _flat_warning

    drawn = [{"name": "tokens", "values": "integers[0, 12)", "reason": "indexes a table of 12 rows"},
             {"name": "features", "values": "normal(mean 0, std 1)", "reason": "default"}]
    warning = _flat_warning("probs", 1.0, drawn)
    assert "output 'probs' is too flat" in warning and "100%" in warning
    assert "vary features (normal(mean 0, std 1)) with --range features=LOW:HIGH" in warning
    assert "--inputs FILE.npz" in warning
