"""Say clearly which optional packages a command needs, instead of failing later on an ImportError.

The base install (the linter) has only libcst; conversion and parity need the ``convert`` extra.
"""

from __future__ import annotations

from importlib import metadata
from importlib.util import find_spec

from migrate.core.errors import InputError

CONVERT = ("numpy", "torch", "onnx", "onnx2torch")
PARITY = (*CONVERT, "onnxruntime")


def require(command: str, modules: tuple[str, ...]) -> None:
    """Raise InputError (exit 2) naming the missing modules and the install line that brings them."""
    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise InputError(f"tf2torch {command} needs packages that are not installed ({', '.join(missing)}); "
                         "install them with: pip install -c constraints.txt 'tf2torch[convert]'")


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (recorded in manifests), or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
