"""Parity defaults a user can trust: inputs the graph implies, scaled tolerances, flat outputs, CLI spans.

Fast tests on small ONNX graphs built here; the end-to-end acceptance on keras.applications models
(realistic default inputs pass, a planted one-weight corruption fails and is localised) is slow-marked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from checks.parity.implied import infer
from checks.parity.inputs import InputOptions, generate, plan
from checks.parity.numeric import Tolerances, flat_share, output_scale
from checks.parity.specs import TensorSpec, load_manifest
from fixtures.models import model_dir
from migrate.cli import build_parser, main
from migrate.core.compare import Tolerance


def _affine_model(path: Path, ops: list[tuple[str, list[float]]], channels: int = 3) -> None:
    """image[N,C,H,W] -> Transpose-free chain of ``ops`` with constant right operands -> Relu."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, current = [], [], "image"
    for i, (op, values) in enumerate(ops):
        shape = [] if len(values) == 1 else [len(values), 1, 1]
        inits.append(helper.make_tensor(f"c{i}", TensorProto.FLOAT, shape, values))
        nodes.append(helper.make_node(op, [current, f"c{i}"], [f"t{i}"]))
        current = f"t{i}"
    nodes.append(helper.make_node("Relu", [current], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                         [None, channels, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph), str(path))


IMAGE = TensorSpec("image", "image", "float32", (None, 3, 8, 8), (None, 8, 8, 3), "NCHW", "NHWC")


@pytest.mark.parametrize("ops, high", [([("Mul", [1 / 255])], 255.0),
                                       ([("Mul", [1 / 127.5]), ("Add", [-1.0])], 255.0),
                                       ([("Div", [255.0])], 255.0)])
def test_rescaling_at_the_input_gives_pixel_values(tmp_path, ops, high):
    _affine_model(tmp_path / "m.onnx", ops)
    hint = infer(tmp_path / "m.onnx", (IMAGE,))["image"]
    assert (hint.kind, hint.low) == ("uniform", 0.0) and hint.high == pytest.approx(high)
    image = generate((IMAGE,), InputOptions(batch_size=4), {"image": hint})[0]["image"]
    assert image.min() >= 0 and image.max() > 0.9 * high and image.max() <= high


def test_normalization_at_the_input_gives_its_statistics(tmp_path):
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    _affine_model(tmp_path / "m.onnx", [("Sub", mean), ("Div", std)])
    hint = infer(tmp_path / "m.onnx", (IMAGE,))["image"]
    assert hint.kind == "normal"
    np.testing.assert_allclose(hint.low, mean) and np.testing.assert_allclose(hint.high, std)
    image = generate((IMAGE,), InputOptions(batch_size=64), {"image": hint})[0]["image"]  # NHWC: channel last
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), mean, rtol=0.05)
    np.testing.assert_allclose(image.reshape(-1, 3).std(0), std, rtol=0.1)


def test_plain_image_gets_pixels_and_plain_vector_a_standard_normal(tmp_path):
    _affine_model(tmp_path / "m.onnx", [])
    assert infer(tmp_path / "m.onnx", (IMAGE,))["image"].high == 255.0
    vector = TensorSpec("image", "image", "float32", (None, 3, 8, 8), (None, 3, 8, 8), None, None)
    assert infer(tmp_path / "m.onnx", (vector,)) == {}  # 8 channels last: not an image
    rows = plan((vector,), InputOptions(), {})
    assert rows == [{"name": "image", "values": "normal(mean 0, std 1)", "reason": "default"}]


def test_mask_inputs_are_prefixes(tmp_path):
    _affine_model(tmp_path / "m.onnx", [])
    specs = (TensorSpec("padding_mask", "padding_mask", "int32", (None, None), (None, None)),
             TensorSpec("keep", "keep", "bool", (None, None), (None, None)))
    hints = infer(tmp_path / "m.onnx", specs)
    assert {h.kind for h in hints.values()} == {"prefix_mask"}
    batch = generate(specs, InputOptions(batch_size=32, dim_size=9), hints)[0]
    for name in ("padding_mask", "keep"):
        mask = batch[name].astype(int)
        assert mask[:, 0].all()  # at least one valid position per row
        assert (np.diff(mask, axis=1) <= 0).all()  # ones, then zeros
        assert len(set(mask.sum(1))) > 3  # lengths vary
    assert batch["padding_mask"].dtype == np.int32 and batch["keep"].dtype == np.bool_


def test_default_atol_is_relative_to_the_output_scale():
    tol = Tolerances()
    assert (tol.for_output("logits", "float32", 15.0).atol, tol.for_output("logits", "float32", 15.0).rtol) == (
        pytest.approx(1.5e-2), 1e-4)
    assert tol.for_output("probs", "float32", 0.0) == Tolerance(1e-6, 1e-4)  # floor
    assert tol.atol_scale("logits", "float32") == 1e-3
    explicit = Tolerances(atol=1e-5, per_output_rtol={"logits": 1e-3})
    assert explicit.for_output("logits", "float32", 15.0) == Tolerance(1e-5, 1e-3)  # as given, not scaled
    assert explicit.atol_scale("logits", "float32") == 0.0
    assert output_scale([np.array([1.0, -20.0, np.inf]), np.array([3.0])]) == 20.0


def test_flat_outputs_are_recognised():
    rng = np.random.default_rng(0)
    uniform_softmax = np.full((4, 1000), 1e-3) + rng.normal(0, 1e-9, (4, 1000))
    assert flat_share([uniform_softmax], 1e-6, 1e-4) > 0.99
    constant = np.tile(rng.normal(size=(1, 10)), (4, 1))  # ignores its inputs
    assert flat_share([constant], 1e-6, 1e-4) == 1.0
    logits = rng.normal(0, 5, (4, 10))
    assert flat_share([logits], 5e-4, 1e-4) < 0.1


@pytest.mark.parametrize("span, expected", [("-1:1", (-1.0, 1.0)), ("-.5:2.5e1", (-0.5, 25.0)),
                                            ("-1e-3:-1e-4", (-1e-3, -1e-4))])
def test_negative_spans_need_no_equals_sign(span, expected):
    argv = ["parity", "src", "out", "--float-range", span, "--range", f"x={span}", "--pairs", "tf~torch,tf~onnx"]
    args = build_parser(argv).parse_args(argv)
    assert args.float_range == expected and args.ranges == [("x", expected)]
    assert args.pairs == ["tf~torch", "tf~onnx"]


# --- end to end: real conversions ---------------------------------------------------------------


def _parity(capsys, *args) -> tuple[int, dict, str]:
    code = main(["parity", *map(str, args), "--format", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def test_mismatched_source_and_converted_is_one_clear_line(converted, capsys):
    _, out = converted("multi_io")
    other = model_dir("cnn") / "saved_model"
    code, _, err = _parity(capsys, other, out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"SOURCE {other} does not match CONVERTED {out}" in err and "it was converted from" in err
    assert "tf2torch-parity-" not in err and ".npz" not in err and "--range" not in err


def corrupt_one_weight(out: Path, target: Path, op: str) -> str:
    """Copy OUT to ``target`` with one weight of an ``op`` node scaled in model.pt2; return the node's name.

    Nodes from the middle of the net on are tried until the change reaches the output on parity's default
    inputs (a weight behind a saturated hard-sigmoid or a dead ReLU would not); the weight is the node's largest.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    shutil.copytree(out, target)
    model = onnx.load(str(target / "model.onnx"))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = [(n.name, initializers[n.input[1]]) for n in model.graph.node
             if n.op_type == op and len(n.input) > 1 and n.input[1] in initializers]
    program = torch.export.load(str(target / "model.pt2"))
    manifest = load_manifest(out)
    batch = generate(manifest.inputs, InputOptions(), infer(manifest.onnx, manifest.inputs))[0]  # parity's own
    image = [torch.from_numpy(spec.to_torch_layout(batch[spec.name]).copy()) for spec in manifest.inputs]
    with torch.no_grad():
        before = program.module()(*image)
        tensors = [*program.state_dict.values(), *program.constants.values()]
        for name, weight in nodes[len(nodes) // 2:]:
            tensor = next((t for t in tensors if tuple(t.shape) == weight.shape
                           and np.array_equal(t.detach().numpy(), weight)), None)
            if tensor is None:
                continue
            flat, index = tensor.view(-1), int(np.abs(weight).argmax())
            flat[index] *= 4.0
            if float((program.module()(*image) - before).abs().max()) > 1e-2:
                torch.export.save(program, str(target / "model.pt2"))
                return name
            flat[index] /= 4.0
    raise AssertionError(f"no {op} weight of model.onnx found in model.pt2 that changes the output")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["app_mobilenetv3small", "app_resnet50"])
def test_keras_applications_pass_with_defaults_and_a_corrupted_weight_is_named(converted, capsys, tmp_path, name):
    source, out = converted(name)
    code, report, err = _parity(capsys, source, out)
    assert code == 0, (report, err)
    assert report["verdict_pairs"] == ["tf~torch"] and report["warnings"] == []
    assert report["inputs"][0]["values"] == "uniform[0, 255)"
    node = corrupt_one_weight(out, tmp_path / "bad", "Conv")
    code, report, err = _parity(capsys, source, tmp_path / "bad", "--per-layer")
    assert code == 1, err
    assert not any(o["passed"] for o in report["outputs"] if o["pair"] == "tf~torch")
    assert report["first_divergence"]["onnx_node"] == node, report["first_divergence"]
