"""The CNN / attention / keras.applications / tf.Module zoo against TensorFlow.

Per fixture: SavedModel -> ONNX in the TF worker (child process) -> onnx_to_torch, then the eager
GraphModule, the ``torch.export`` program (dynamic batch) and ``torch.compile(fullgraph=True)`` are
each compared with TF's own outputs (worker ``predict``) at batch 1 and 3, for a few fast fixtures and on every
opset 13-18. The rest of the zoo (keras.applications included) is checked once, with the same comparisons,
in tests/test_zoo.py's sweep. Measured errors are printed (``pytest -s``) and recorded in docs/ops.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from migrate.conversion.onnx2torch_compat import onnx2torch

onnx2torch()
import torch

from migrate.conversion.export import export_program
from migrate.conversion.to_torch import onnx_to_torch, prepare
from migrate.tf.client import run_worker
from tests.conftest import (
    DEFAULT_TOLERANCE,
    ZOO_TOLERANCE,
    assert_close,
    tf_predict,
    to_tf_layout,
    to_torch_layout,
    zoo_inputs,
)

FAST = ["cnn_separable", "cnn_conv1d_causal", "attn_decoder"]

def _export(source: Path, tmp_path: Path, opset: int) -> tuple[onnx.ModelProto, dict]:
    onnx_path, sig_path = tmp_path / f"m{opset}.onnx", tmp_path / f"sig{opset}.json"
    run_worker("export", {"source": str(source), "signature": "serving_default", "opset": opset,
                          "keep_layout": False, "onnx": str(onnx_path), "signature_json": str(sig_path)})
    return onnx.load(str(onnx_path)), json.loads(sig_path.read_text())


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def check_fixture(source: Path, tmp_path: Path, name: str, opset: int, modes: tuple[str, ...]) -> dict[str, float]:
    """Convert and compare every mode in ``modes`` (eager/export/compile) with TF; return max abs errors."""
    model, info = _export(source, tmp_path, opset)
    in_specs = {s["tf_name"]: s for s in info["inputs"]}  # ONNX keeps the TF key; "name" may be made readable
    out_specs = {s["name"]: s for s in info["outputs"]}
    input_order = [i.name for i in model.graph.input]
    output_order = [o.name for o in model.graph.output]
    assert sorted(input_order) == sorted(in_specs), "ONNX inputs must be exactly the signature's inputs"
    batches = [zoo_inputs(name, info["inputs"], batch) for batch in (1, 3)]
    expected = tf_predict(source, batches)
    for out_name, array in expected[1].items():  # a collapsed model would make the comparison vacuous
        spread = float(np.abs(array - array[:1]).max())
        assert spread > 1e-3 * float(np.abs(array).max()), f"{name}/{out_name}: output does not depend on the input"
    gm = onnx_to_torch(prepare(model))

    def torch_args(feeds: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(to_torch_layout(feeds[n], in_specs[n])) for n in input_order)

    runners = {}
    if "eager" in modes:
        runners["eager"] = gm
    if "export" in modes:
        runners["export"] = export_program(gm, [in_specs[n] for n in input_order]).program.module()
    if "compile" in modes:
        torch._dynamo.reset()
        runners["compile"] = torch.compile(gm, fullgraph=True, backend="eager")
    atol, rtol = ZOO_TOLERANCE.get(name, DEFAULT_TOLERANCE)
    errors = {}
    for how, module in runners.items():
        for feeds, want in zip(batches, expected):
            with torch.no_grad():
                got = _as_list(module(*torch_args(feeds)))
            for out_name, tensor in zip(output_order, got):
                batch = len(next(iter(feeds.values())))
                what = f"{name}/{out_name} opset {opset} {how} batch {batch}"
                actual = to_tf_layout(tensor.numpy(), out_specs[out_name])
                errors[what] = assert_close(actual, want[out_name], atol=atol, rtol=rtol, what=what)
    if name in ZOO_TOLERANCE:
        errors.update(_float64_check(gm, name, batches[1], expected[1], torch_args, output_order, out_specs))
    print("\n" + "\n".join(f"max abs err {v:.3g}  {k}" for k, v in errors.items()))
    return errors


def _float64_check(gm, name, feeds, want, torch_args, output_order, out_specs) -> dict[str, float]:
    """The relaxed tolerance is only fair if torch float32 is as close to the exact function as TF is.

    The converted graph run in float64 stands in for the exact function; torch's float32 error from
    it must be within 3x TensorFlow's own float32 error from it.
    """
    errors = {}
    with torch.no_grad():
        exact = _as_list(copy.deepcopy(gm).double()(*(a.double() for a in torch_args(feeds))))
        single = _as_list(gm(*torch_args(feeds)))
    for out_name, e64, e32 in zip(output_order, exact, single):
        e64 = to_tf_layout(e64.numpy(), out_specs[out_name])
        torch_err = float(np.abs(to_tf_layout(e32.numpy(), out_specs[out_name]) - e64).max())
        tf_err = float(np.abs(want[out_name] - e64).max())
        errors[f"{name}/{out_name} torch32 vs float64"] = torch_err
        errors[f"{name}/{out_name} tf32 vs float64"] = tf_err
        assert torch_err <= 3 * tf_err + 1e-6, f"{name}/{out_name}: torch is further from float64 than TF"
    return errors


@pytest.mark.parametrize("name", FAST)
def test_fast_fixtures_match_tensorflow(fixture_model, tmp_path, name):
    check_fixture(fixture_model(name) / "saved_model", tmp_path, name, 17, ("eager", "export", "compile"))


@pytest.mark.slow
@pytest.mark.parametrize("opset", [13, 14, 15, 16, 18])
@pytest.mark.parametrize("name", ["cnn_separable", "attn_decoder", "app_mobilenetv3small"])
def test_every_opset_13_to_18_converts(fixture_model, tmp_path, name, opset):
    check_fixture(fixture_model(name) / "saved_model", tmp_path, name, opset, ("eager", "export"))


@pytest.mark.slow
def test_convnext_exports_without_leftover_function_calls(fixture_model, tmp_path):
    """ConvNeXt's grouped convs sit in XLA-marked nested functions; the ONNX must hold plain Conv nodes."""
    model, _info = _export(fixture_model("app_convnexttiny") / "saved_model", tmp_path, 17)
    ops = {n.op_type for n in model.graph.node}
    assert "StatefulPartitionedCall" not in ops and "PartitionedCall" not in ops
    grouped = [n for n in model.graph.node if n.op_type == "Conv"
               and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(grouped) == 18  # one 7x7 depthwise conv per ConvNeXt-Tiny block (3 + 3 + 9 + 3)
    assert [i.name for i in model.graph.input] == ["keras_tensor"]  # captured constants are not inputs
    assert "Erf" in ops  # GELU's Erfc exported as 1 - Erf
