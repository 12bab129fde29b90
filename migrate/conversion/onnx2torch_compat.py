"""Import onnx2torch safely, with tf2torch's own converters registered beside it.

onnx2torch imports torchvision at import time, but only its NMS and RoiAlign converters use it.
Where torchvision cannot be imported (no wheel for this torch build, or a CUDA wheel beside a CPU
torch fails with ``operator torchvision::nms does not exist``) a stand-in module is used while onnx2torch imports so
everything else converts, and those two ops raise a clear error when run.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_TORCHVISION_ERROR: str | None = None


def _torchvision_stub(reason: str) -> types.ModuleType:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"this model uses NonMaxSuppression/RoiAlign, which need torchvision, "
                           f"but torchvision cannot be imported here ({reason}); install a torchvision "
                           f"built for torch {importlib.import_module('torch').__version__}")

    module = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = unavailable
    module.ops = ops
    module.__tf2torch_stub__ = True
    return module


@contextmanager
def _torchvision_for_import() -> Iterator[None]:
    """Let onnx2torch import where torchvision cannot: a stand-in sits in ``sys.modules`` only while
    onnx2torch imports (its modules keep their reference) and is removed after, so the user's process never
    sees it; a real, importable torchvision is used as it is."""
    global _TORCHVISION_ERROR
    if "torchvision" in sys.modules or "onnx2torch" in sys.modules:
        yield
        return
    try:
        importlib.import_module("torchvision")
    except Exception as exc:  # ImportError, or RuntimeError from a wheel built for another torch
        _TORCHVISION_ERROR = f"{type(exc).__name__}: {exc}".splitlines()[0]
    else:
        yield
        return
    broken = [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]
    for name in broken:  # half-imported modules of the failed import
        del sys.modules[name]
    stub = _torchvision_stub(_TORCHVISION_ERROR)
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, stub.ops
    try:
        yield
    finally:
        for name in ("torchvision", "torchvision.ops"):
            if sys.modules.get(name) in (stub, stub.ops):
                del sys.modules[name]


def onnx2torch() -> types.ModuleType:
    """Return the onnx2torch module with tf2torch's converters registered (idempotent)."""
    with _torchvision_for_import():
        module = importlib.import_module("onnx2torch")
        importlib.import_module("migrate.conversion.converters")
    return module
