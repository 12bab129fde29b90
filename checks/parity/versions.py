"""The versions a parity report names for the parent side (forward and --train reports alike)."""

from __future__ import annotations


def runtime_versions() -> dict[str, str]:
    """Versions of what ran the parent side of the check."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tf2torch", "numpy", "torch", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
