"""Issue 10: model.pt2 takes its inputs in the TF signature's order, named by the TF input names.

Fast part: an ONNX graph whose inputs are in another order than the signature, with names that are not
Python identifiers. Slow part: the BERT-style fixture, whose Keras input order (token_ids, segment_ids,
padding_mask) is not the signature's alphabetical one, run by position in a process with only torch and by
keyword through ``migrate.load``, against TensorFlow.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from migrate.conversion.onnx2torch_compat import onnx2torch

onnx2torch()
import torch

import migrate
from migrate.conversion.api import _identifier, _signature_order
from migrate.conversion.export import TFSignature, export_program
from migrate.conversion.to_torch import onnx_to_torch, prepare
from tests.conftest import assert_close, random_tf_inputs, tf_predict
from tests.test_convert import run_plain_torch


def _spec(name: str) -> dict:
    return {"name": name, "tf_name": name, "dtype": "float32", "shape": [None, 3], "layout": None, "tf_layout": None}


def _graph() -> tuple:
    """ONNX inputs in alphabetical order (as tf2onnx writes a signature's); out = 2 * a-mask - b."""
    nodes = [helper.make_node("Add", ["a-mask", "a-mask"], ["twice"]), helper.make_node("Sub", ["twice", "b"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3])
                                           for n in ("a-mask", "b")],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, onnx_to_torch(prepare(model))


@pytest.mark.parametrize("name,ident", [("input_ids", "input_ids"), ("a-mask", "a_mask"), ("input:0", "input"),
                                        ("1st", "_1st"), ("class", "class_"), ("image rgb", "image_rgb")])
def test_input_names_become_identifiers(name, ident) -> None:
    assert _identifier(name) == ident and ident.isidentifier()


def test_inputs_follow_the_signature_order_and_carry_its_names() -> None:
    model, gm = _graph()
    specs = _signature_order(gm, [_spec("b"), _spec("a-mask")], model.graph.input)  # TF order: b first
    assert [(s["name"], s["tf_name"]) for s in specs] == [("b", "b"), ("a_mask", "a-mask")]
    program = export_program(gm, specs).program
    module = program.module()
    assert list(inspect.signature(module.forward).parameters) == ["b", "a_mask"]
    b, a = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(module(b, a), 2 * a - b)
    keywords = TFSignature(module, [s["name"] for s in specs])
    torch.testing.assert_close(keywords(a_mask=a, b=b), 2 * a - b)
    torch.testing.assert_close(keywords(b, a_mask=a), 2 * a - b)


@pytest.mark.parametrize("args,kwargs,message", [
    ((), {"b": 1}, "missing input"), ((), {"b": 1, "a_mask": 2, "c": 3}, "unexpected input 'c'"),
    ((1,), {"b": 1, "a_mask": 2}, "given by position and by keyword"), ((1, 2, 3), {"b": 1}, "takes 2 inputs")])
def test_keyword_call_errors_name_the_inputs(args, kwargs, message) -> None:
    with pytest.raises(TypeError, match=message):
        TFSignature(torch.nn.Identity(), ["b", "a_mask"])(*args, **kwargs)


@pytest.mark.slow
def test_converted_model_takes_tf_order_by_position_and_keywords(fixture_model, tmp_path) -> None:
    source = fixture_model("tx_bert_encoder") / "saved_model"
    result = migrate.convert(source, tmp_path / "out")
    manifest = json.loads(result.paths["manifest"].read_text())
    names = [s["name"] for s in manifest["inputs"]]
    assert names == ["token_ids", "segment_ids", "padding_mask"]  # Keras order, not the signature's sorted one
    program = torch.export.load(str(result.paths["pt2"])).module()
    assert list(inspect.signature(program.forward).parameters) == names
    batches = [random_tf_inputs(manifest["inputs"], batch, seed=batch, other=5) for batch in (1, 3)]
    expected = tf_predict(source, batches)
    plain = run_plain_torch(result.paths["pt2"], names, [{s["name"]: f[s["tf_name"]] for s in manifest["inputs"]}
                                                         for f in batches], tmp_path)
    for feeds, want, got in zip(batches, expected, plain):
        keywords = {n: torch.from_numpy(feeds[n]) for n in reversed(names)}
        with torch.no_grad():
            by_keyword = migrate.load(result.out)(**keywords)
        for spec, array, again in zip(manifest["outputs"], got, by_keyword):
            assert_close(array, want[spec["tf_name"]], what=spec["name"])
            np.testing.assert_array_equal(again.numpy(), array)
