"""tf2torch conversion: TensorFlow/Keras saved models to PyTorch.

``migrate.convert``/``migrate.load`` (an inference program) and ``migrate.port``/``migrate.load_port``
(readable, trainable source) are imported lazily so that ``import migrate`` (and the ``tf2torch`` CLI for
linting) stays cheap and never imports torch or TensorFlow.
"""

from typing import Any

_CONVERT = ("convert", "load", "ConversionResult")
_PORT = ("port", "load_port", "PortResult")
_TRANSFER = ("transfer", "TransferResult")
__all__ = ["ConversionResult", "PortResult", "TransferResult", "convert", "load", "load_port", "port", "transfer"]


def __getattr__(name: str) -> Any:
    if name in _CONVERT:
        from migrate.conversion import api

        return getattr(api, name)
    if name in _PORT:
        from migrate.porting import api as port_api

        return getattr(port_api, name)
    if name in _TRANSFER:
        from migrate.transferring import api as transfer_api

        return getattr(transfer_api, name)
    raise AttributeError(f"module 'migrate' has no attribute {name!r}")
