"""pytest plugin (entry point ``pytest11``): the ``tf2torch_parity`` fixture for a three-line CI test.

    def test_converted_model_matches(tf2torch_parity):
        tf2torch_parity("model/saved_model", "converted/", atol=1e-4)

On a mismatch the test fails with the parity table (and the per-layer localisation if asked for);
bad inputs fail it with the one-line error, and a ``model.pt2`` that would run code when loaded is
refused before loading (``migrate.conversion.pt2_check``, docs/guarantees.md). ``tf2torch_train_parity`` does the
same for a training step of a ``tf2torch port`` output (``parity --train``). Importing this module loads neither
torch nor TensorFlow, since pytest imports every installed plugin on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def _assert(label: str, run: Callable[..., Any], source: str | Path, target: str | Path, **options: Any) -> Any:
    """Run one parity check and fail the current test with its one-line error or its table."""
    from migrate.core.errors import Tf2TorchError

    try:
        report = run(source, target, **options)
    except Tf2TorchError as exc:
        pytest.fail(f"{label} could not run: {exc}", pytrace=False)
    if not report.passed:
        pytest.fail(f"{label}: {source} vs {target}\n{report.to_text()}", pytrace=False)
    return report


def assert_parity(source: str | Path, converted: str | Path, **options: Any) -> Any:
    """Run :func:`checks.parity.compare` and fail the current test with the report's table on a mismatch."""
    from checks.parity.api import compare

    return _assert("tf2torch parity", compare, source, converted, **options)


@pytest.fixture
def tf2torch_parity() -> Callable[..., Any]:
    """``tf2torch_parity(source, converted, **options) -> Report``; fails the test unless parity holds."""
    return assert_parity


def assert_train_parity(source: str | Path, ported: str | Path, **options: Any) -> Any:
    """Run :func:`checks.parity.api.compare_train` (``--train``) and fail the test with its table on a mismatch.
    The test names the port output it trains, which is asking for its model.py to be imported."""
    from checks.parity.api import compare_train

    options.setdefault("trust_model_py", True)
    return _assert("tf2torch parity --train", compare_train, source, ported, **options)


@pytest.fixture
def tf2torch_train_parity() -> Callable[..., Any]:
    """``tf2torch_train_parity(source, ported, steps=3, ...) -> TrainReport``; fails unless a training step matches."""
    return assert_train_parity
