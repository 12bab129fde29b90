"""Shared test helpers: TF reference outputs (child process) and layout mapping.

TensorFlow never loads in the pytest process: references come from the TF worker's ``predict``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _share_cores() -> None:
    """Each pytest-xdist worker, and the TF workers and CLI runs it starts, use its share of the cores.

    torch's OpenMP threads and TensorFlow's thread pools spin while they wait: two workers whose children each
    take every core slowed a pair of ported-ConvNeXt/DenseNet train-parity runs from 37 s to 52 s on 2 cores.
    The variables are read when torch and TF start, so they go in the environment children inherit; a value the
    user set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, (os.cpu_count() or 1) // workers)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(var, str(threads))
    if "torch" in sys.modules:  # imported before this file (a plugin): too late for OMP_NUM_THREADS
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_cores()

from fixtures.models import model_dir
from migrate.tf.client import run_worker

#: TF layout -> torch layout permutation for the layouts the manifest can name.
PERMS = {("NHWC", "NCHW"): (0, 3, 1, 2)}


def random_tf_inputs(specs: list[dict[str, Any]], batch: int, seed: int = 0, other: int = 8) -> dict[str, np.ndarray]:
    """Inputs in the TF layout for manifest/signature specs; ints in [0, 10) (fixture vocabularies are >= 10)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = [(batch if i == 0 else other) if d is None else d for i, d in enumerate(spec["tf_shape"])]
        if spec["dtype"].startswith("float"):
            feeds[spec["tf_name"]] = rng.standard_normal(shape).astype(spec["dtype"])
        elif spec["dtype"] == "bool":
            feeds[spec["tf_name"]] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[spec["tf_name"]] = rng.integers(0, 10, shape).astype(spec["dtype"])
    return feeds


def to_torch_layout(array: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Transpose a TF-layout array into the converted model's layout (per the manifest entry)."""
    if spec.get("layout") and spec.get("tf_layout") and spec["layout"] != spec["tf_layout"]:
        return np.ascontiguousarray(array.transpose(PERMS[(spec["tf_layout"], spec["layout"])]))
    return array


def to_tf_layout(array: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`to_torch_layout`."""
    if spec.get("layout") and spec.get("tf_layout") and spec["layout"] != spec["tf_layout"]:
        return np.ascontiguousarray(array.transpose(np.argsort(PERMS[(spec["tf_layout"], spec["layout"])])))
    return array


def tf_predict(source: Path, batches: list[dict[str, np.ndarray]], signature: str = "serving_default",
               custom_objects: Any = None) -> list[dict[str, np.ndarray]]:
    """Run the TF model on each batch in the TF worker (child process) and return its outputs.

    A .keras/.h5 source runs as the Keras model itself, ``model(x, training=False)``, not through the
    SavedModel export the converter makes from it (an independent reference)."""
    from migrate.tf.custom_objects import specs

    with tempfile.TemporaryDirectory() as tmp:
        ins, outs = [], []
        for i, feeds in enumerate(batches):
            ins.append(str(Path(tmp, f"in{i}.npz")))
            outs.append(str(Path(tmp, f"out{i}.npz")))
            np.savez(ins[-1], **feeds)
        run_worker("predict", {"source": str(source), "signature": signature, "inputs": ins, "outputs": outs,
                               "custom_objects": specs(custom_objects)})
        results = []
        for path in outs:
            with np.load(path) as data:
                results.append({k: data[k] for k in data.files})
        return results


def assert_close(actual: np.ndarray, expected: np.ndarray, atol: float = 1e-5, rtol: float = 1e-4, what: str = "") -> float:
    """``migrate.core.compare`` with a fixed atol/rtol (dtypes may differ); returns the max abs error for reporting."""
    from migrate.core.compare import Tolerance, compare

    stats = compare(actual, expected, Tolerance(atol, rtol), strict_dtype=False)
    assert stats.passed, (f"{what}: {stats.message or ''} max abs err {stats.max_abs_err:.3g} "
                          f"(worst at {stats.worst_index}, {stats.mismatched}/{stats.total} over)")
    return stats.max_abs_err


#: Per-model (atol, rtol) where float32 rounding, amplified by calibrated BatchNorm in deep nets, exceeds the
#: default; TF itself is as far from the exact (float64) function as torch is (tests/test_zoo.py checks
#: that). Measured values and the reasoning: docs/ops.md.
ZOO_TOLERANCE: dict[str, tuple[float, float]] = {
    "app_resnet50": (3e-3, 1e-4),  # logits up to ~15; measured 1.0e-3
    "app_efficientnetb0": (3e-2, 1e-4),  # logits up to ~260; measured 1.5e-2
    "app_densenet121": (2e-4, 1e-4),  # logits up to ~4; measured 6.8e-5
}
DEFAULT_TOLERANCE = (1e-5, 1e-4)


def zoo_inputs(name: str, specs: list[dict[str, Any]], batch: int, other: int = 7) -> dict[str, np.ndarray]:
    """Random TF-layout inputs; keras.applications models get images in [0, 255] as they expect."""
    from fixtures.models._calibrate import IMAGE_MAX

    feeds = random_tf_inputs(specs, batch, seed=batch, other=other)
    if name.startswith("app_"):
        rng = np.random.default_rng(batch)
        feeds = {k: rng.uniform(0, IMAGE_MAX, v.shape).astype(v.dtype) for k, v in feeds.items()}
    return feeds


@pytest.fixture(scope="session")
def fixture_model():
    """``fixture_model(name)`` -> directory of the built fixture (cached across runs by builder content)."""
    return model_dir


@pytest.fixture(scope="module")
def port_once(tmp_path_factory):
    """``port_once(fixture, file="model.keras", custom_objects=None)`` -> (source, OUT): ported through the CLI
    once per test module."""
    from tests.cli_helpers import tf2torch

    done: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(fixture: str, file: str = "model.keras", custom_objects: str | None = None) -> tuple[Path, Path]:
        if (fixture, file) not in done:
            source = model_dir(fixture) / file
            out = tmp_path_factory.mktemp("port") / f"{fixture}-{Path(file).stem}"
            objects = ["--custom-objects", custom_objects] if custom_objects else []
            proc = tf2torch("port", source, "-o", out, "-q", *objects)
            assert proc.returncode == 0, proc.stderr
            done[(fixture, file)] = (source, out)
        return done[(fixture, file)]

    return get


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """``converted(name, **options)`` -> (SavedModel path, CONVERTED dir) from ``migrate.convert``, once per session
    for each fixture and options; tests read CONVERTED and copy it to change it."""
    import migrate

    done: dict[tuple, tuple[Path, Path]] = {}

    def get(name: str, **options: Any) -> tuple[Path, Path]:
        key = (name, tuple(sorted(options.items())))
        if key not in done:
            source = model_dir(name) / "saved_model"
            out = tmp_path_factory.mktemp(f"converted-{name}") / "out"
            migrate.convert(source, out, **options)
            done[key] = (source, out)
        return done[key]

    return get
