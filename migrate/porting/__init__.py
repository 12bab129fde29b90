"""``tf2torch port`` (``migrate.port``): a Keras model becomes readable, trainable PyTorch source with its weights.

``port`` and ``load_port`` are imported lazily so that ``import migrate.porting`` needs neither torch nor Keras.
"""

from typing import Any

__all__ = ["PortResult", "load_port", "port"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from migrate.porting import api

        return getattr(api, name)
    raise AttributeError(f"module 'migrate.porting' has no attribute {name!r}")
