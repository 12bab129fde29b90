"""Issue 10: every None dim of the TF signature stays dynamic in model.pt2, tied dims share one symbol.

Fast part: hand-built ONNX graphs (no TensorFlow) through ``export_program``: which dims the graph ties,
a dim the graph fixes (a warning naming input, dim and reason), ``static_dims``. Slow part: the
transformer fixtures (BERT-style encoder, GPT-style decoder, encoder-decoder, ViT) converted from real
TensorFlow and matched against it at batches 1 and 3 and lengths 1, 7 and the model's maximum.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from migrate.conversion.onnx2torch_compat import onnx2torch

onnx2torch()
import torch

import migrate
from migrate.conversion.export import export_program, parse_static_dims
from migrate.conversion.to_torch import onnx_to_torch, prepare
from migrate.core.errors import InputError
from tests.conftest import assert_close, tf_predict


def _model(nodes: list, inputs: list, outputs: list[str], inits: tuple = ()) -> torch.fx.GraphModule:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                   for o in outputs], initializer=list(inits))
    return onnx_to_torch(prepare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


def _spec(name: str, shape: list[int | None], dtype: str = "float32") -> dict:
    return {"name": name, "tf_name": name, "dtype": dtype, "shape": shape, "layout": None, "tf_layout": None}


def _attention_like() -> tuple[torch.fx.GraphModule, list[dict]]:
    """q[N,L,4] + mask[N,L] (tied by broadcasting), scores q @ kv^T with kv[N,S,4] (S untied)."""
    n = helper.make_node
    nodes = [n("Unsqueeze", ["mask", "axis"], ["m3"]), n("Add", ["q", "m3"], ["qm"]),
             n("Transpose", ["kv"], ["kvt"], perm=[0, 2, 1]), n("MatMul", ["qm", "kvt"], ["scores"])]
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", "L", 4]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "L"]),
              helper.make_tensor_value_info("kv", TensorProto.FLOAT, ["N", "S", 4])]
    gm = _model(nodes, inputs, ["scores"], [numpy_helper.from_array(np.array([-1], np.int64), "axis")])
    return gm, [_spec("q", [None, None, 4]), _spec("mask", [None, None]), _spec("kv", [None, None, 4])]


def test_tied_dims_share_one_symbol_and_untied_stay_apart() -> None:
    gm, specs = _attention_like()
    exported = export_program(gm, specs)
    assert exported.warnings == []
    assert exported.dims == {"batch": [["q", 0], ["mask", 0], ["kv", 0]], "seq": [["q", 1], ["mask", 1]],
                             "seq_2": [["kv", 1]]}
    shapes = [n.meta["val"].shape for n in exported.program.graph.nodes if n.op == "placeholder"]
    assert str(shapes[0][1]) == str(shapes[1][1]) != str(shapes[2][1])
    module = exported.program.module()
    for length, other in ((1, 1), (7, 3), (21, 16)):  # sizes never traced, 1 included
        q, mask, kv = torch.randn(2, length, 4), torch.randn(2, length), torch.randn(2, other, 4)
        torch.testing.assert_close(module(q, mask, kv), (q + mask[..., None]) @ kv.transpose(1, 2))
    with pytest.raises(Exception, match="size"):
        module(torch.randn(2, 5, 4), torch.randn(2, 6), torch.randn(2, 3, 4))


def _fixed_by_reshape() -> tuple[torch.fx.GraphModule, list[dict]]:
    """x[N,T,4] reshaped to a constant [-1, 32]: the graph only works for T == 8."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4])]
    gm = _model(nodes, inputs, ["y"], [numpy_helper.from_array(np.array([-1, 32], np.int64), "shape")])
    return gm, [_spec("x", [None, None, 4])]


def test_a_dim_the_graph_fixes_is_fixed_with_a_warning_naming_input_dim_and_reason() -> None:
    gm, specs = _fixed_by_reshape()
    exported = export_program(gm, specs)
    assert exported.inputs[0]["shape"] == [None, 8, 4]
    assert exported.dims == {"batch": [["x", 0]]}
    (warning,) = exported.warnings
    assert "'x' dim 1 is fixed to 8" in warning and "constant 8" in warning and "--static-dims x:1=SIZE" in warning
    module = exported.program.module()
    assert module(torch.randn(3, 8, 4)).shape == (3, 32)


def test_a_model_shorter_than_the_example_length_still_exports_with_its_maximum() -> None:
    """x[N,T,4] + table[:T] with a 4-row table: the example length 8 cannot run, a shorter one is tried."""
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]), n("Gather", ["s", "one"], ["t"]), n("Slice", ["table", "zero", "t", "zero"], ["rows"]),
             n("Add", ["x", "rows"], ["y"])]
    inits = [numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "table"),
             numpy_helper.from_array(np.array([1], np.int64), "one"), numpy_helper.from_array(np.array([0], np.int64), "zero")]
    gm = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4])], ["y"], inits)
    exported = export_program(gm, [_spec("x", [None, None, 4])])
    assert exported.warnings == [] and exported.dim_ranges == {"batch": [1, None], "seq": [1, 4]}
    module = exported.program.module()
    for length in (1, 4):
        x = torch.randn(2, length, 4)
        torch.testing.assert_close(module(x), x + torch.arange(16.0).reshape(4, 4)[:length])


def test_static_dims_fix_what_the_user_chooses_and_tied_dims_follow_silently() -> None:
    gm, specs = _attention_like()
    exported = export_program(gm, specs, static_dims=parse_static_dims(["q:1=5"]))
    assert [s["shape"] for s in exported.inputs] == [[None, 5, 4], [None, 5], [None, None, 4]]
    assert exported.warnings == []
    assert exported.dims == {"batch": [["q", 0], ["mask", 0], ["kv", 0]], "seq": [["kv", 1]]}
    module = exported.program.module()
    assert module(torch.randn(1, 5, 4), torch.randn(1, 5), torch.randn(1, 9, 4)).shape == (1, 5, 9)


@pytest.mark.parametrize("items,message", [
    (["q1=5"], "expected NAME:DIM=SIZE"), (["q:1"], "expected NAME:DIM=SIZE"), (["q:1=0"], "positive integer"),
    (["q:x=3"], "expected NAME:DIM=SIZE"), ({"q:1": "many"}, "positive integer")])
def test_static_dims_syntax_errors_are_input_errors(items, message) -> None:
    with pytest.raises(InputError, match=message):
        parse_static_dims(items)


@pytest.mark.parametrize("item,message", [("nope:1=3", "no input 'nope'; inputs: q, mask, kv"),
                                          ("q:3=3", "'q' has 3 dims"), ("q:2=3", "already fixed to 4")])
def test_static_dims_naming_what_does_not_exist_are_input_errors(item, message) -> None:
    gm, specs = _attention_like()
    with pytest.raises(InputError, match=message):
        export_program(gm, specs, static_dims=parse_static_dims([item]))


# ---- real transformers from TensorFlow ---------------------------------------------------------

#: fixture -> (the dims the manifest must record, the maximum length of each sequence dim; None: unbounded).
TRANSFORMERS = {
    "tx_bert_encoder": ({"batch": [["token_ids", 0], ["segment_ids", 0], ["padding_mask", 0]],
                         "seq": [["token_ids", 1], ["segment_ids", 1], ["padding_mask", 1]]}, {"seq": 16}),
    "tx_gpt_decoder": ({"batch": [["token_ids", 0], ["padding_mask", 0]], "seq": [["token_ids", 1], ["padding_mask", 1]]},
                       {"seq": 16}),
    "tx_gpt_rotary": ({"batch": [["token_ids", 0]], "seq": [["token_ids", 1]]}, {"seq": None}),
    "tx_encoder_decoder": ({"batch": [["encoder_ids", 0], ["encoder_padding_mask", 0], ["decoder_ids", 0]],
                            "seq": [["encoder_ids", 1], ["encoder_padding_mask", 1]], "seq_2": [["decoder_ids", 1]]},
                           {"seq": 16, "seq_2": 16}),
    "tx_vit": ({"batch": [["image", 0]]}, {}),
}


def _feeds(manifest: dict, batch: int, lengths: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """TF-layout inputs with each dim's size from its symbol; masks are 1s with a padded tail."""
    rng = np.random.default_rng(seed)
    size = {(name, dim): lengths.get(symbol, batch) for symbol, members in manifest["dims"].items()
            for name, dim in members}
    feeds = {}
    for spec in manifest["inputs"]:
        shape = [size.get((spec["name"], i), d) for i, d in enumerate(spec["tf_shape"])]
        if spec["dtype"].startswith("float"):
            feeds[spec["tf_name"]] = rng.standard_normal(shape).astype(spec["dtype"])
        elif "mask" in spec["name"]:
            keep = rng.integers(1, shape[1] + 1, (shape[0], 1))
            feeds[spec["tf_name"]] = (np.arange(shape[1])[None] < keep).astype(spec["dtype"])
        else:
            feeds[spec["tf_name"]] = rng.integers(0, 10, shape).astype(spec["dtype"])
    return feeds


def _cases(maxima: dict[str, int | None]) -> list[dict[str, int]]:
    """Lengths 1, 7 and the maximum (24 when unbounded) for every sequence symbol, rotated so untied ones differ."""
    symbols = sorted(maxima)
    if not symbols:
        return [{}]
    return [{s: [1, 7, maxima[s] or 24][(k + j) % 3] for j, s in enumerate(symbols)} for k in range(3)]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformer_keeps_every_none_dim_dynamic_and_matches_tf(fixture_model, tmp_path, name) -> None:
    dims, maxima = TRANSFORMERS[name]
    source = fixture_model(name) / "saved_model"
    result = migrate.convert(source, tmp_path / "out")
    manifest = result.manifest
    assert manifest["warnings"] == [] and manifest["dims"] == dims
    assert all(manifest["dim_ranges"][s] == [1, m] for s, m in maxima.items())
    assert all(d is None for s in manifest["inputs"] for d, t in zip(s["shape"], s["tf_shape"]) if t is None)
    _assert_one_symbol_per_group(result.paths["pt2"], manifest)
    batches = [_feeds(manifest, batch, lengths, seed=batch * 10 + k)
               for batch in (1, 3) for k, lengths in enumerate(_cases(maxima))]
    expected = tf_predict(source, batches)
    names = [s["name"] for s in manifest["inputs"]]
    for feeds, want in zip(batches, expected):
        args = [torch.from_numpy(_torch_layout(feeds[s["tf_name"]], s)) for s in manifest["inputs"]]
        with torch.no_grad():
            by_position = _tuple(result.module(*args))
            by_keyword = _tuple(result.module(**dict(reversed(list(zip(names, args))))))
        shapes = {s["name"]: feeds[s["tf_name"]].shape for s in manifest["inputs"]}
        for spec, got, again in zip(manifest["outputs"], by_position, by_keyword):
            assert torch.equal(got, again)
            assert_close(got.numpy(), want[spec["tf_name"]], what=f"{name}/{spec['name']} {shapes}")


def _assert_one_symbol_per_group(pt2, manifest: dict) -> None:
    """In the saved program itself: the members of a manifest dims group share one symbol, groups differ."""
    program = torch.export.load(str(pt2))
    placeholders = {n.name: n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder"}
    shapes = dict(zip([s["name"] for s in manifest["inputs"]],
                      [placeholders[n] for n in program.graph_signature.user_inputs]))
    symbols = [{str(shapes[name][dim]) for name, dim in members} for members in manifest["dims"].values()]
    assert all(len(group) == 1 for group in symbols) and len(set().union(*symbols)) == len(symbols)


def _torch_layout(array: np.ndarray, spec: dict) -> np.ndarray:
    if spec.get("layout") == "NCHW" and spec.get("tf_layout") == "NHWC":
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    return array


def _tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def test_static_dims_typo_exits_2_before_anything_runs(tmp_path, capsys) -> None:
    from migrate.cli import main

    source = tmp_path / "saved_model"
    source.mkdir()
    (source / "saved_model.pb").write_bytes(b"")
    assert main(["convert", str(source), "-o", str(tmp_path / "out"), "--static-dims", "token_ids=128"]) == 2
    assert "--static-dims token_ids=128: expected NAME:DIM=SIZE" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_static_dims_through_the_api(fixture_model, tmp_path) -> None:
    result = migrate.convert(fixture_model("tx_gpt_decoder") / "saved_model", tmp_path / "out",
                             static_dims=["token_ids:1=7"])
    assert [s["shape"] for s in result.manifest["inputs"]] == [[None, 7], [None, 7]]  # the tied mask follows
    assert result.manifest["dims"] == {"batch": [["token_ids", 0], ["padding_mask", 0]]}
    assert result.manifest["warnings"] == []
    assert result.module(torch.zeros(2, 7, dtype=torch.int32), torch.ones(2, 7, dtype=torch.int32)).shape == (2, 7, 40)
    with pytest.raises(Exception, match="7"):
        result.module(torch.zeros(2, 8, dtype=torch.int32), torch.ones(2, 8, dtype=torch.int32))
