"""Guarantee: the load check never refuses tf2torch's own output (docs/guarantees.md).

Models with dynamic sizes make torch 2.13 write ``max``/``min``/``//`` into guard code and ``Max``/``FloorDiv``
into shape expressions. Each fixture here converts through the CLI (whose final step loads the staged
model.pt2 through the check), loads again with ``migrate.load``, and matches TensorFlow at three sizes of
every dynamic dim (untied dims get different sizes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import migrate
from migrate.core.artifacts import read_manifest
from tests.conftest import assert_close, tf_predict
from tests.safety_helpers import program_of, tf2torch

#: Fixture -> the three sizes each dynamic (non-batch) dim takes, and whether its guards use max/min.
ROUND_TRIPS = {
    "dyn_conv_same_strided": ((9, 16, 23), True),  # strided 'same' Conv2D and Conv1D
    "dyn_conv_valid_reshape": ((5, 12, 31), True),  # 'valid' Conv1D + Reshape((-1,))
    "dyn_conv_pool": ((8, 13, 22), True),  # strided 'valid' Conv2D + MaxPooling2D
    "dyn_pool_same_strided": ((9, 16, 23), True),  # AveragePooling2D / MaxPooling1D 'same' with stride
    "tx_encoder_decoder": ((5, 11, 16), False),  # two untied lengths
    "dyn_audio_frontend": ((9, 16, 41), True),  # strided Conv1D front end on a dynamic length
    "dyn_speech_cnn": ((40, 57, 101), False),  # strided 'same' Conv2D on a dynamic time axis: pad_same, guards use // and %
}


def _feeds(manifest: dict, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Torch-layout inputs by name: batch 3, each symbol's dims at its size; ids in the vocabulary, masks padded."""
    rng = np.random.default_rng(seed)
    size = {(name, dim): sizes.get(symbol, 3) for symbol, members in manifest["dims"].items()
            for name, dim in members}
    feeds = {}
    for spec in manifest["inputs"]:
        shape = [size.get((spec["name"], i), d) for i, d in enumerate(spec["shape"])]
        if spec["dtype"].startswith("float"):
            feeds[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
        elif "mask" in spec["name"]:
            keep = rng.integers(1, shape[1] + 1, (shape[0], 1))
            feeds[spec["name"]] = (np.arange(shape[1])[None] < keep).astype(spec["dtype"])
        else:
            feeds[spec["name"]] = rng.integers(0, 40, shape).astype(spec["dtype"])
    return feeds


def _nchw(spec: dict) -> bool:
    return spec.get("layout") == "NCHW" and spec.get("tf_layout") == "NHWC"


def _tf_feeds(manifest: dict, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {s["tf_name"]: np.ascontiguousarray(feeds[s["name"]].transpose(0, 2, 3, 1)) if _nchw(s)
            else feeds[s["name"]] for s in manifest["inputs"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_dynamic_fixture_converts_loads_and_matches_tf_at_three_sizes(fixture_model, tmp_path, name):
    sizes, uses_max = ROUND_TRIPS[name]
    source = fixture_model(name) / "saved_model"
    out = tmp_path / "out"
    proc = tf2torch("convert", source, "-o", out, tmpdir=tmp_path / "tmp")
    assert proc.returncode == 0 and "converted" in proc.stderr, proc.stderr
    guards = program_of(out / "model.pt2")["guards_code"]
    assert uses_max == any("max(" in g or "min(" in g for g in guards), guards
    module = migrate.load(out)
    manifest = read_manifest(out)
    symbols = sorted(s for s in manifest["dims"] if not s.startswith("batch"))
    cases = [{s: sizes[(k + j) % 3] for j, s in enumerate(symbols)} for k in range(3)]
    batches = [_feeds(manifest, case, seed=k) for k, case in enumerate(cases)]
    for feeds, want in zip(batches, tf_predict(source, [_tf_feeds(manifest, f) for f in batches])):
        with torch.no_grad():
            got = module(*[torch.from_numpy(feeds[s["name"]]) for s in manifest["inputs"]])
        got = list(got) if isinstance(got, (list, tuple)) else [got]
        shapes = {k: v.shape for k, v in feeds.items()}
        for spec, value in zip(manifest["outputs"], got):
            expected = want[spec["tf_name"]]
            expected = expected.transpose(0, 3, 1, 2) if _nchw(spec) else expected
            assert_close(value.numpy(), expected, atol=1e-4, what=f"{name}/{spec['name']} {shapes}")
