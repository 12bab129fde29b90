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


def assert_parity(source: str | Path, converted: str | Path, **options: Any) -> Any:
    """Run :func:`checks.parity.compare` and fail the current test with the report's table on a mismatch."""
    from checks.parity.api import compare
    from migrate.core.errors import Tf2TorchError

    try:
        report = compare(source, converted, **options)
    except Tf2TorchError as exc:
        pytest.fail(f"tf2torch parity could not run: {exc}", pytrace=False)
    if not report.passed:
        pytest.fail(f"tf2torch parity: {source} vs {converted}\n{report.to_text()}", pytrace=False)
    return report


@pytest.fixture
def tf2torch_parity() -> Callable[..., Any]:
    """``tf2torch_parity(source, converted, **options) -> Report``; fails the test unless parity holds."""
    return assert_parity


def assert_train_parity(source: str | Path, ported: str | Path, **options: Any) -> Any:
    """Run :func:`checks.parity.api.compare_train` (``--train``) and fail the test with its table on a mismatch."""
    from checks.parity.api import compare_train
    from migrate.core.errors import Tf2TorchError

    options.setdefault("trust_model_py", True)  # the test names the port output it trains: that is asking
    try:
        report = compare_train(source, ported, **options)
    except Tf2TorchError as exc:
        pytest.fail(f"tf2torch parity --train could not run: {exc}", pytrace=False)
    if not report.passed:
        pytest.fail(f"tf2torch parity --train: {source} vs {ported}\n{report.to_text()}", pytrace=False)
    return report


@pytest.fixture
def tf2torch_train_parity() -> Callable[..., Any]:
    """``tf2torch_train_parity(source, ported, steps=3, ...) -> TrainReport``; fails unless a training step matches."""
    return assert_train_parity
