"""Weight transforms from Keras layouts to torch layouts, applied at port time and named in the manifest.

A transform is a tuple of steps; each step is ``(name, args)``, printed as ``name(args)`` in
``manifest.json`` (``permute(3,2,0,1)``, ``flatten_order(4,4,8)``, ``gate_reorder(zrh->rzh)``); :func:`parse`
reads that text back, so a manifest alone says how to map any Keras weight onto the module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Step = tuple[str, tuple[Any, ...]]


def _permute(w: np.ndarray, *axes: int) -> np.ndarray:
    return np.transpose(w, axes)


def _flatten_order(w: np.ndarray, *spatial_then_c: int) -> np.ndarray:
    """Rows of a (features, out) matrix from Keras' flatten order (*spatial, C) to torch's (C, *spatial)."""
    out = w.shape[-1]
    rank = len(spatial_then_c)
    w = w.reshape(*spatial_then_c, out)
    w = np.transpose(w, (rank - 1, *range(rank - 1), rank))
    return w.reshape(-1, out)


def _gate_reorder(w: np.ndarray, order: str) -> np.ndarray:
    """Reorder gate blocks along the last axis: ``"zrh->rzh"`` (Keras GRU -> torch), one letter per gate."""
    src, dst = order.split("->")
    blocks = np.split(w, len(src), axis=-1)
    return np.concatenate([blocks[src.index(g)] for g in dst], axis=-1)


def _split(w: np.ndarray, index: int, parts: int, axis: int = 0) -> np.ndarray:
    return np.split(w, parts, axis=axis)[index]


def _reshape(w: np.ndarray, *shape: int) -> np.ndarray:
    return w.reshape(shape)


STEPS: dict[str, Callable[..., np.ndarray]] = {
    "permute": _permute, "flatten_order": _flatten_order, "gate_reorder": _gate_reorder, "split": _split,
    "reshape": _reshape,
}


def apply(steps: tuple[Step, ...], array: np.ndarray) -> np.ndarray:
    for name, args in steps:
        array = STEPS[name](array, *args)
    return np.array(array, order="C")  # ascontiguousarray would turn a 0-d scalar into shape (1,)


def describe(steps: tuple[Step, ...]) -> str | None:
    """``permute(3,2,0,1); flatten_order(4,4,8)``, or None for a copy."""
    if not steps:
        return None
    return "; ".join(f"{name}({','.join(str(a) for a in args)})" for name, args in steps)


def parse(text: str | None) -> tuple[Step, ...]:
    """Inverse of :func:`describe`."""
    steps = []
    for part in (text or "").split("; "):
        if part:
            name, args = part[:-1].split("(", 1)
            steps.append((name, tuple(int(a) if a.lstrip("-").isdigit() else a for a in args.split(",") if a)))
    return tuple(steps)
