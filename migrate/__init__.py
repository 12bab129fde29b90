"""tf2torch conversion: TensorFlow/Keras saved models to PyTorch.

``migrate.convert`` and ``migrate.load`` are imported lazily so that ``import migrate`` (and the
``tf2torch`` CLI for linting) stays cheap and never imports torch or TensorFlow.
"""

from typing import Any

__all__ = ["convert", "load", "ConversionResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from migrate import api

        return getattr(api, name)
    raise AttributeError(f"module 'migrate' has no attribute {name!r}")
