"""The forward check's default tolerances and its "too flat" test; the comparison itself (one formula for
every check) is ``migrate.core.compare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrate.core.compare import Tolerance, scale_of, tolerance

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

    def for_output(self, name: str, dtype: str, scale: float = 0.0, noise: float = 0.0) -> Tolerance:
        """``migrate.core.compare.tolerance`` with this dtype's floor and factor on ``scale``; a user's atol
        is used as given (no scale, no noise term)."""
        floor, factor, base_rtol = DTYPE_DEFAULTS.get(dtype, (DEFAULT_ATOL, DEFAULT_ATOL_SCALE, DEFAULT_RTOL))
        rtol = self.per_output_rtol.get(name, base_rtol if self.rtol is None else self.rtol)
        user = self.per_output_atol.get(name, self.atol)
        if user is not None:
            return Tolerance(float(user), float(rtol))
        return tolerance((factor, scale), floor=floor, rtol=rtol, noise=noise)


def output_scale(arrays: list[Any]) -> float:
    """Largest finite |value| over the reference's batches (0 for empty, integer or non-finite outputs)."""
    return scale_of(*arrays)


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
