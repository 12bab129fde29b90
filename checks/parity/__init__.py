"""Numeric parity between a TensorFlow model and its tf2torch conversion.

``checks.parity.compare(source, converted, **options) -> Report`` runs TensorFlow (child process),
torch (``model.pt2``) and ONNX Runtime (``model.onnx``) on the same inputs and compares every output.
Importing this package is cheap: numpy, torch and onnxruntime load only when a comparison runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Report", "compare"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from checks.parity import api

        return getattr(api, name)
    raise AttributeError(f"module 'checks.parity' has no attribute {name!r}")
