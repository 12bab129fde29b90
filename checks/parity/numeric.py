"""Element-wise comparison of two arrays under ``|actual - expected| <= atol + rtol * |expected|``.

Non-finite values must sit at the same positions with the same value (NaN with NaN, +Inf with +Inf);
integer and bool tensors must be equal. Statistics are over the positions where both sides are finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Default tolerances, relative to the output's scale (its largest finite |value| in the TF reference):
#: ``atol = max(DEFAULT_ATOL, DEFAULT_ATOL_SCALE * scale)`` and ``rtol``. float32 keeps ~7 digits, but
#: intermediate values of a deep net can be far larger than its output, and their rounding reaches the
#: output: TF and ONNX Runtime (both float32) differ by 2.8e-4 of the logits' scale on keras.applications
#: ResNet50 with pixel inputs. A wrong weight or op moves outputs by 1e-2 of their scale and more.
#: An explicit --atol/--rtol is used as given.
DEFAULT_ATOL_SCALE = 1e-3
DEFAULT_ATOL = 1e-6  # floor, for outputs whose scale is tiny or zero
DEFAULT_RTOL = 1e-4
#: dtype -> (atol floor, atol scale factor, rtol) where float32's would flag rounding noise.
DTYPE_DEFAULTS = {"float16": (1e-3, 1e-2, 1e-2), "bfloat16": (1e-2, 1e-1, 1e-1)}
#: An output is "too flat" when a constant (its mean) would pass the tolerance on this share of elements.
FLAT_SHARE = 0.5


@dataclass
class Tolerances:
    """Global tolerances (None: scaled defaults) and per-output overrides."""

    atol: float | None = None
    rtol: float | None = None
    per_output_atol: dict[str, float] = field(default_factory=dict)
    per_output_rtol: dict[str, float] = field(default_factory=dict)

    def atol_scale(self, name: str, dtype: str) -> float:
        """The factor on the output scale that gives the default atol (0 when the user set atol)."""
        if name in self.per_output_atol or self.atol is not None:
            return 0.0
        return DTYPE_DEFAULTS.get(dtype, (DEFAULT_ATOL, DEFAULT_ATOL_SCALE, DEFAULT_RTOL))[1]

    def for_output(self, name: str, dtype: str, scale: float = 0.0) -> tuple[float, float]:
        floor, factor, base_rtol = DTYPE_DEFAULTS.get(dtype, (DEFAULT_ATOL, DEFAULT_ATOL_SCALE, DEFAULT_RTOL))
        default_atol = max(floor, factor * scale) if math.isfinite(scale) else floor
        atol = self.per_output_atol.get(name, default_atol if self.atol is None else self.atol)
        rtol = self.per_output_rtol.get(name, base_rtol if self.rtol is None else self.rtol)
        return float(atol), float(rtol)


def output_scale(arrays: list[Any]) -> float:
    """Largest finite |value| over the reference's batches (0 for empty, integer or non-finite outputs)."""
    import numpy as np

    scale = 0.0
    for array in arrays:
        a = np.asarray(array)
        if a.dtype.kind not in "fc" or a.size == 0:
            continue
        finite = np.abs(a[np.isfinite(a)]) if a.dtype.kind == "f" else np.abs(a).ravel()
        if finite.size:
            scale = max(scale, float(finite.max()))
    return scale


def flat_share(arrays: list[Any], atol: float, rtol: float) -> float:
    """Share of elements a constant would match: the larger of "the overall mean" and "the mean over the batch".

    Near 1 means the check cannot tell a right output from a wrong one: a softmax over many classes that
    comes out near uniform, an output that hardly depends on the inputs.
    """
    import numpy as np

    floats = [np.asarray(a, np.float64) for a in arrays if np.asarray(a).dtype.kind == "f" and np.asarray(a).size]
    if not floats:
        return 0.0
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in floats])
    if not finite.size:
        return 0.0
    overall = float(finite.mean())
    passed = total = 0
    for a in floats:
        ok = np.isfinite(a)
        tol = atol + rtol * np.abs(a)
        baselines = [np.full(a.shape, overall)]
        if a.ndim and a.shape[0] > 1:
            baselines.append(np.broadcast_to(np.nanmean(np.where(ok, a, np.nan), axis=0, keepdims=True), a.shape))
        passed += max(int((ok & (np.abs(b - a) <= tol)).sum()) for b in baselines)
        total += a.size
    return passed / total if total else 0.0


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
