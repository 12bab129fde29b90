"""The whole fixture zoo, once, through the public pipeline (``migrate.convert``).

Each model: converts; ``model.pt2`` loads in a process with only torch; matches TF at batch 1 and 3
(when its batch is dynamic); runs under ``torch.compile(fullgraph=True)`` with no graph break. In the
same sweep, the unoptimized onnx2torch graph of the ``model.onnx`` that convert wrote matches TF too
(a converter bug shows apart from a pass bug), and the fx passes leave no value-reading module and
change no output (``model.pt2`` equals that graph). Tolerances are atol 1e-5 / rtol 1e-4 except the deep
keras.applications nets in ZOO_TOLERANCE, whose float32 rounding is as large in TF as in torch (the
float64 cross-check below; measured errors: docs/ops.md).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import migrate
from fixtures.models import SAVED_MODELS
from tests.conftest import (
    DEFAULT_TOLERANCE,
    ZOO_TOLERANCE,
    assert_close,
    tf_predict,
    to_tf_layout,
    to_torch_layout,
    zoo_inputs,
)
from tests.test_convert import CASES, run_plain_torch
from tests.test_fx_passes import _leaves, _remaining_readers

#: Built on purpose to be refused (a tf.string input) - see tests/test_parity.py.
NOT_CONVERTIBLE = {"parity_string"}
#: Covered with every source kind and layout in tests/test_convert.py.
COVERED = {name for name, _, _ in CASES}
ZOO = [name for name in SAVED_MODELS if name not in NOT_CONVERTIBLE | COVERED]
#: Non-batch dynamic sizes other than 7: at 7 this model's pooled map is 1 wide, a size torch.export
#: specialises away (docs/convert.md, "Sizes of 1 inside the graph").
OTHER_SIZE = {"dyn_conv_pool": 9}


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_converts_matches_and_compiles(fixture_model, tmp_path, name):
    source = fixture_model(name) / "saved_model"
    result = migrate.convert(source, tmp_path / "out")
    manifest = result.manifest
    dynamic_batch = all(s["tf_shape"] and s["tf_shape"][0] is None for s in manifest["inputs"])
    sizes = (1, 3) if dynamic_batch else tuple(sorted({s["tf_shape"][0] for s in manifest["inputs"]}))
    batches = [zoo_inputs(name, manifest["inputs"], batch, other=OTHER_SIZE.get(name, 7)) for batch in sizes]
    expected = tf_predict(source, batches)
    for spec in manifest["outputs"]:  # a collapsed model would make every comparison vacuous
        if len(sizes) > 1:
            array = expected[-1][spec["tf_name"]]
            spread = float(np.abs(array - array[:1]).max())
            assert spread > 1e-3 * float(np.abs(array).max()), f"{name}/{spec['name']}: output ignores the input"
    torch_batches = [{s["name"]: to_torch_layout(f[s["tf_name"]], s) for s in manifest["inputs"]} for f in batches]
    actual = run_plain_torch(result.paths["pt2"], [s["name"] for s in manifest["inputs"]], torch_batches, tmp_path,
                             compile_too=True)
    atol, rtol = ZOO_TOLERANCE.get(name, DEFAULT_TOLERANCE)
    for size, want, got in zip(sizes, expected, actual):
        for spec, array in zip(manifest["outputs"], got):
            assert_close(to_tf_layout(array, spec), want[spec["tf_name"]], atol=atol, rtol=rtol,
                         what=f"{name}/{spec['name']} batch {size}")
    _check_unoptimized_graph(name, result.paths["onnx"], manifest, batches, expected, actual)


def _check_unoptimized_graph(name: str, onnx_path: Path, manifest: dict[str, Any], batches: list[dict],
                             expected: list[dict], actual: list[list[np.ndarray]]) -> None:
    """onnx2torch's graph of model.onnx, before the passes: matches TF; the passes (run here on a copy) leave no
    value reader; model.pt2 gives its outputs (1e-6, float order only); the float64 check for ZOO_TOLERANCE."""
    import onnx
    import torch

    from migrate.conversion.passes.driver import optimize
    from migrate.conversion.to_torch import onnx_to_torch, prepare

    model = onnx.load(str(onnx_path))
    gm = onnx_to_torch(prepare(model))
    by_tf = {s["tf_name"]: s for s in manifest["inputs"]}  # the ONNX inputs keep TF's names and order

    def args(feeds: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(to_torch_layout(feeds[i.name], by_tf[i.name])) for i in model.graph.input)

    atol, rtol = ZOO_TOLERANCE.get(name, DEFAULT_TOLERANCE)
    with torch.no_grad():
        for feeds, want, got in zip(batches, expected, actual):
            eager = _leaves(gm(*args(feeds)))
            for spec, tensor, exported in zip(manifest["outputs"], eager, got, strict=True):
                what = f"{name}/{spec['name']} batch {len(tensor)}"
                assert_close(to_tf_layout(tensor.numpy(), spec), want[spec["tf_name"]], atol=atol, rtol=rtol,
                             what=f"{what} (onnx2torch, before the passes)")
                np.testing.assert_allclose(exported, tensor.numpy().astype(exported.dtype), rtol=0,
                                           atol=1e-6 * max(1.0, float(np.abs(exported).max(initial=0))),
                                           err_msg=f"{what}: model.pt2 differs from the graph before the passes")
        optimized = optimize(copy.deepcopy(gm), args(batches[-1]))
    assert _remaining_readers(optimized) == [], f"{name}: the passes left modules that read tensor values"
    if name in ZOO_TOLERANCE:
        _float64_check(name, gm, args(batches[-1]), expected[-1], manifest["outputs"])


def _float64_check(name: str, gm: Any, inputs: tuple, want: dict[str, np.ndarray], specs: list[dict]) -> None:
    """The relaxed tolerance is only fair if torch float32 is as close to the exact function as TF is: the
    converted graph in float64 stands in for the exact function, and torch's float32 error from it must be
    within 3x TensorFlow's own float32 error from it."""
    import torch

    with torch.no_grad():
        exact = _leaves(copy.deepcopy(gm).double()(*(a.double() for a in inputs)))
        single = _leaves(gm(*inputs))
    for spec, e64, e32 in zip(specs, exact, single, strict=True):
        e64 = to_tf_layout(e64.numpy(), spec)
        torch_err = float(np.abs(to_tf_layout(e32.numpy(), spec) - e64).max())
        tf_err = float(np.abs(want[spec["tf_name"]] - e64).max())
        assert torch_err <= 3 * tf_err + 1e-6, f"{name}/{spec['name']}: torch {torch_err:.3g} is further from " \
                                               f"float64 than TF {tf_err:.3g}"
