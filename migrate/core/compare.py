"""The one numeric comparison in tf2torch: is ``actual`` the reference ``expected``, within a stated tolerance?

Every check (``tf2torch parity``, training parity, ``--keras-backend``, port's own verification, the tests)
holds an element to

    |actual - expected| <= atol + rtol * |expected|
    atol = max(floor, sum_k factor_k * scale_k) + NOISE * (own_actual + own_reference)

* ``scale_k`` are magnitudes of the reference (its largest finite ``|value|``, or for a weight after an
  optimizer step the size of the step), so the bound follows what is compared and not its units;
* ``own_actual``/``own_reference`` are each side's own rounding error on that quantity, measured where it
  can be (torch: the same computation in float64; Keras: eager against ``tf.function``). Two float32
  implementations of the same maths differ by about their own errors; a wrong weight or op by far more.

Non-finite values must sit at the same positions with the same value (NaN with NaN, +Inf with +Inf);
integer and bool arrays must be equal. Statistics are over the positions where both sides are finite.

Random outputs (a VAE's sample) cannot match draw for draw: :func:`compare_samples` holds the per-element
sample mean and std of K draws to the same bound plus ``SAMPLE_SIGMAS`` standard errors of each statistic.
Imports numpy only, lazily: ``migrate`` and ``checks`` both use this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: How many times each side's own measured rounding error the bound allows: Keras' float32 error differs
#: from torch's (other kernels, other summation order); measured on the keras.applications fixtures, Keras -
#: torch reaches 9x torch's own error (EfficientNetB0, docs/parity.md).
NOISE = 10.0


@dataclass(frozen=True)
class Tolerance:
    """``atol``/``rtol`` for one comparison, made by :func:`tolerance`."""

    atol: float
    rtol: float = 0.0
    noise: float = 0.0  # own_actual + own_reference, already included in atol

    def bound(self, expected: Any) -> Any:
        """Per-element allowed |difference|."""
        import numpy as np

        return self.atol + self.rtol * np.abs(np.asarray(expected, np.float64))


def tolerance(*terms: tuple[float, float], floor: float = 0.0, rtol: float = 0.0, noise: float = 0.0) -> Tolerance:
    """``atol = max(floor, sum(factor * scale)) + NOISE * noise`` (module docstring); non-finite scales count 0."""
    scaled = sum(factor * scale for factor, scale in terms if math.isfinite(scale))
    own = noise if math.isfinite(noise) else 0.0
    return Tolerance(float(max(floor, scaled) + NOISE * own), float(rtol), float(own))


def scale_of(*arrays: Any) -> float:
    """Largest finite |value| over the float arrays (0 for empty, integer or non-finite ones)."""
    import numpy as np

    scale = 0.0
    for array in arrays:
        a = np.asarray(array)
        if a.dtype.kind not in "fc" or a.size == 0:
            continue
        finite = np.abs(a[np.isfinite(a)])
        if finite.size:
            scale = max(scale, float(finite.max()))
    return scale


def max_abs_error(actual: Any, expected: Any) -> float:
    """``max|actual - expected|`` in float64 (0 for empty arrays, inf when the shapes differ)."""
    import numpy as np

    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        return float("inf")
    if not a.size:
        return 0.0
    return float(np.abs(a.astype(np.float64) - e.astype(np.float64)).max())


def relative_error(actual: Any, expected: Any) -> float:
    """``max|actual - expected| / max|expected|`` over finite positions; inf where shapes, NaNs or kinds differ."""
    import numpy as np

    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return float("inf")
    if expected.dtype.kind not in "fc":
        return 0.0 if np.array_equal(actual, expected) else float("inf")
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    finite = np.isfinite(e) & np.isfinite(a)
    if not np.array_equal(np.isnan(a), np.isnan(e)) or not np.array_equal(a[~finite & ~np.isnan(e)],
                                                                            e[~finite & ~np.isnan(e)]):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = float(np.abs(e[finite]).max())
    diff = float(np.abs(a[finite] - e[finite]).max())
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


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


def compare(actual: Any, expected: Any, tol: Tolerance, *, strict_dtype: bool = True) -> Stats:
    """Compare ``actual`` against the reference ``expected``; a shape (or, if ``strict_dtype``, dtype)
    difference fails outright. Floats are compared in float64."""
    import numpy as np

    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        return Stats(passed=False, mismatched=e.size, total=e.size, _worst_score=float("inf"),
                     max_abs_err=float("inf"),
                     message=f"shape {_shape(a.shape)} differs from the reference's {_shape(e.shape)}")
    if strict_dtype and a.dtype != e.dtype:
        return Stats(passed=False, mismatched=e.size, total=e.size, _worst_score=float("inf"),
                     message=f"dtype {a.dtype} differs from the reference's {e.dtype}")
    if e.size == 0:
        return Stats()
    atol, rtol = tol.atol, tol.rtol
    exact = e.dtype.kind in "biu" and a.dtype.kind in "biu"
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
        bound = atol + rtol * np.where(finite, np.abs(ef), 0.0)
    if not exact:
        mismatch = mismatch | (finite & (diff > bound))
    finite_diff = diff[finite]
    nonzero = finite & (np.abs(ef) > 0)
    rel = diff[nonzero] / np.abs(ef[nonzero]) if nonzero.any() else np.zeros(0)
    nonfinite_bad = mismatch & ~finite
    if nonfinite_bad.any():
        flat, score = int(np.flatnonzero(nonfinite_bad)[0]), float("inf")
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(bound > 0, diff / np.where(bound > 0, bound, 1.0), np.where(diff > 0, np.inf, 0.0))
        flat = int(np.argmax(ratio))
        score = float(ratio.flat[flat])
    count = int(mismatch.sum())
    return Stats(passed=count == 0, max_abs_err=float(finite_diff.max()) if finite_diff.size else 0.0,
                 max_rel_err=float(rel.max()) if rel.size else 0.0,
                 mean_abs_err=float(finite_diff.mean()) if finite_diff.size else 0.0,
                 mismatched=count, total=int(e.size),
                 worst_index=[int(i) for i in np.unravel_index(flat, e.shape)],
                 _abs_sum=float(finite_diff.sum()), _finite=int(finite_diff.size), _worst_score=score)


#: How many standard errors a sample statistic may be off before two random outputs differ (docs/parity.md).
SAMPLE_SIGMAS = 6.0


@dataclass(frozen=True)
class SampleStats:
    """What :func:`compare_samples` measured: per-element sample means and standard deviations over ``draws``."""

    stats: Stats
    draws: int
    max_mean_diff: float
    mean_bound: float  # the bound at the element where |Δmean| / bound is largest
    max_std_diff: float
    std_bound: float

    def describe(self, ops: list[str] | tuple[str, ...] = ()) -> str:
        kinds = f" ({', '.join(ops)})" if ops else ""
        return (f"random{kinds}, compared mean and std of {self.draws} draws per element: "
                f"max |Δmean| = {self.max_mean_diff:.3g}, bound {self.mean_bound:.3g}; "
                f"max |Δstd| = {self.max_std_diff:.3g}, bound {self.std_bound:.3g}")

    def to_dict(self) -> dict[str, Any]:
        return {"compared": "per-element sample mean and std", "draws": self.draws, "sigmas": SAMPLE_SIGMAS,
                "max_abs_mean_diff": self.max_mean_diff, "mean_bound": self.mean_bound,
                "max_abs_std_diff": self.max_std_diff, "std_bound": self.std_bound}


def compare_samples(actual: Any, expected: Any, tol: Tolerance) -> SampleStats:
    """Two random outputs, ``K`` draws each stacked on axis 0 (same inputs every draw): the same distribution?

    Draws cannot match one for one, so per element the sample means and standard deviations are compared,
    each within ``SAMPLE_SIGMAS`` standard errors plus the usual float tolerance (``tol``, the bound of
    :func:`compare` on the reference's statistic)::

        |mean_a - mean_e| <= SAMPLE_SIGMAS * sqrt(var_a / K + var_e / K) + tol.bound(mean_e)
        |std_a - std_e|   <= SAMPLE_SIGMAS * sqrt(var_a / (2K) + var_e / (2K)) + tol.bound(std_e)

    (the standard error of a sample std is about std / sqrt(2K)). An element fails when either does; a
    wrong mean, scale or a constant output fails, a fair draw fails with probability ~1e-9 per element.
    """
    import numpy as np

    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape[1:] != e.shape[1:] or a.ndim == 0 or e.ndim == 0:
        stats = Stats(passed=False, total=int(np.prod(e.shape[1:])) if e.ndim else 1, max_abs_err=float("inf"),
                      message=f"draws of shape {_shape(a.shape[1:])} differ from the reference's {_shape(e.shape[1:])}")
        stats.mismatched = stats.total
        return SampleStats(stats, min(len(a), len(e)), float("inf"), 0.0, float("inf"), 0.0)
    k_a, k_e = a.shape[0], e.shape[0]
    a, e = a.astype(np.float64), e.astype(np.float64)
    mean_a, mean_e = a.mean(0), e.mean(0)
    var_a, var_e = a.var(0, ddof=1) if k_a > 1 else np.zeros_like(mean_a), e.var(0, ddof=1) if k_e > 1 else 0 * mean_e
    std_a, std_e = np.sqrt(var_a), np.sqrt(var_e)
    with np.errstate(invalid="ignore"):
        mean_bound = SAMPLE_SIGMAS * np.sqrt(var_a / k_a + var_e / k_e) + tol.bound(mean_e)
        std_bound = SAMPLE_SIGMAS * np.sqrt(var_a / (2 * k_a) + var_e / (2 * k_e)) + tol.bound(std_e)
        d_mean, d_std = np.abs(mean_a - mean_e), np.abs(std_a - std_e)
        bad = ~(d_mean <= mean_bound) | ~(d_std <= std_bound)  # NaN fails
        score = np.maximum(d_mean / np.maximum(mean_bound, 1e-300), d_std / np.maximum(std_bound, 1e-300))
    worst_mean = int(np.nanargmax(d_mean / np.maximum(mean_bound, 1e-300))) if d_mean.size else 0
    worst_std = int(np.nanargmax(d_std / np.maximum(std_bound, 1e-300))) if d_std.size else 0
    flat = int(np.nanargmax(np.where(np.isnan(score), np.inf, score))) if score.size else 0
    count = int(bad.sum())
    stats = Stats(passed=count == 0, max_abs_err=float(np.nanmax(d_mean)) if d_mean.size else 0.0,
                  max_rel_err=relative_error(mean_a, mean_e) if d_mean.size else 0.0,
                  mean_abs_err=float(np.nanmean(d_mean)) if d_mean.size else 0.0, mismatched=count,
                  total=int(mean_e.size), worst_index=[int(i) for i in np.unravel_index(flat, mean_e.shape)],
                  _abs_sum=float(np.nansum(d_mean)), _finite=int(mean_e.size),
                  _worst_score=float(score.flat[flat]) if score.size else 0.0)
    result = SampleStats(stats, min(k_a, k_e), float(np.nanmax(d_mean)) if d_mean.size else 0.0,
                         float(mean_bound.flat[worst_mean]) if d_mean.size else 0.0,
                         float(np.nanmax(d_std)) if d_std.size else 0.0,
                         float(std_bound.flat[worst_std]) if d_std.size else 0.0)
    if count:
        stats.message = (f"{count} of {stats.total} elements' sample mean or std differ beyond "
                         f"{SAMPLE_SIGMAS:g} standard errors: {result.describe()}")
    return result
