"""Element-wise comparison of two arrays under ``|actual - expected| <= atol + rtol * |expected|``.

Non-finite values must sit at the same positions with the same value (NaN with NaN, +Inf with +Inf);
integer and bool tensors must be equal. Statistics are over the positions where both sides are finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
#: Looser defaults where float32's would flag rounding noise; used unless the user sets a tolerance.
DTYPE_DEFAULTS = {"float16": (1e-3, 1e-2), "bfloat16": (1e-2, 1e-1)}


@dataclass
class Tolerances:
    """Global tolerances (None: the dtype's default) and per-output overrides."""

    atol: float | None = None
    rtol: float | None = None
    per_output_atol: dict[str, float] = field(default_factory=dict)
    per_output_rtol: dict[str, float] = field(default_factory=dict)

    def for_output(self, name: str, dtype: str) -> tuple[float, float]:
        base_atol, base_rtol = DTYPE_DEFAULTS.get(dtype, (DEFAULT_ATOL, DEFAULT_RTOL))
        atol = self.per_output_atol.get(name, base_atol if self.atol is None else self.atol)
        rtol = self.per_output_rtol.get(name, base_rtol if self.rtol is None else self.rtol)
        return float(atol), float(rtol)


@dataclass
class Stats:
    """How far one array is from another; ``merge`` folds several batches together."""

    passed: bool = True
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    mean_abs_err: float = 0.0
    mismatched: int = 0
    total: int = 0
    worst_index: list[int] | None = None
    message: str | None = None
    _abs_sum: float = 0.0
    _finite: int = 0
    _worst_score: float = -1.0

    def merge(self, other: Stats) -> Stats:
        if other.message and not self.message:
            self.message = other.message
        if other._worst_score > self._worst_score:
            self._worst_score, self.worst_index = other._worst_score, other.worst_index
        self.passed = self.passed and other.passed
        self.max_abs_err = max(self.max_abs_err, other.max_abs_err)
        self.max_rel_err = max(self.max_rel_err, other.max_rel_err)
        self.mismatched += other.mismatched
        self.total += other.total
        self._abs_sum += other._abs_sum
        self._finite += other._finite
        self.mean_abs_err = self._abs_sum / self._finite if self._finite else 0.0
        return self

    @property
    def share(self) -> float:
        return self.mismatched / self.total if self.total else 0.0


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def compare_arrays(actual: Any, expected: Any, atol: float, rtol: float) -> Stats:
    """Compare ``actual`` against the reference ``expected``; shape or dtype differences fail outright."""
    import numpy as np

    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        return Stats(passed=False, mismatched=e.size, total=e.size, _worst_score=float("inf"),
                     message=f"shape {_shape(a.shape)} differs from the reference's {_shape(e.shape)}")
    if a.dtype != e.dtype:
        return Stats(passed=False, mismatched=e.size, total=e.size, _worst_score=float("inf"),
                     message=f"dtype {a.dtype} differs from the reference's {e.dtype}")
    if e.size == 0:
        return Stats()
    exact = e.dtype.kind in "biu"
    if exact:
        mismatch = a != e
        finite = np.ones(e.shape, dtype=bool)
        af, ef = a.astype(np.float64), e.astype(np.float64)
        atol = rtol = 0.0
    else:
        af, ef = a.astype(np.float64) if a.dtype.kind != "c" else a, e.astype(np.float64) if e.dtype.kind != "c" else e
        fa, fe = np.isfinite(af), np.isfinite(ef)
        finite = fa & fe
        both_nan = np.isnan(af) & np.isnan(ef)
        with np.errstate(invalid="ignore"):
            same_nonfinite = ~fa & ~fe & (both_nan | (af == ef))
        mismatch = ~finite & ~same_nonfinite
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(finite, np.abs(af - ef), 0.0)
        tol = atol + rtol * np.where(finite, np.abs(ef), 0.0)
    if not exact:
        mismatch = mismatch | (finite & (diff > tol))
    finite_diff = diff[finite]
    nonzero = finite & (np.abs(ef) > 0)
    rel = diff[nonzero] / np.abs(ef[nonzero]) if nonzero.any() else np.zeros(0)
    nonfinite_bad = mismatch & ~finite
    if nonfinite_bad.any():
        flat, score = int(np.flatnonzero(nonfinite_bad)[0]), float("inf")
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(tol > 0, diff / np.where(tol > 0, tol, 1.0), np.where(diff > 0, np.inf, 0.0))
        flat = int(np.argmax(ratio))
        score = float(ratio.flat[flat])
    count = int(mismatch.sum())
    return Stats(passed=count == 0, max_abs_err=float(finite_diff.max()) if finite_diff.size else 0.0,
                 max_rel_err=float(rel.max()) if rel.size else 0.0,
                 mean_abs_err=float(finite_diff.mean()) if finite_diff.size else 0.0,
                 mismatched=count, total=int(e.size),
                 worst_index=[int(i) for i in np.unravel_index(flat, e.shape)],
                 _abs_sum=float(finite_diff.sum()), _finite=int(finite_diff.size), _worst_score=score)
