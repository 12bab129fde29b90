"""``compare(source, converted, **options) -> Report``: the parity check as a Python call.

Order matters for the messages: TensorFlow runs first, so inputs it rejects are the user's error
(exit 2); a converted model that then fails on those same inputs is a conversion failure (exit 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from checks.parity.numeric import DEFAULT_ATOL, DEFAULT_RTOL, Stats, Tolerances, compare_arrays
from checks.parity.inputs import InputOptions, generate, infer_index_ranges, load_npz
from checks.parity.report import OutputResult, Report
from checks.parity.specs import load_manifest
from migrate.errors import InputError
from migrate.requirements import CONVERT, PARITY, require

__all__ = ["Report", "compare"]

#: (actual, expected) witnesses per pair; the right-hand side is the reference.
_PAIRS = {"tf~torch": ("torch", "tf"), "tf~onnx": ("onnx", "tf"), "onnx~torch": ("torch", "onnx")}


def compare(source: str | Path, converted: str | Path, *, signature: str | None = None,
            atol: float | dict[str, float] | None = None, rtol: float | dict[str, float] | None = None,
            seed: int = 0, iterations: int = 1, batch_size: int = 2, dim_size: int = 8,
            float_range: tuple[float, float] | None = None, ranges: dict[str, tuple[float, float]] | None = None,
            inputs: str | Path | None = None, inputs_layout: str = "tf", onnx: bool = True,
            per_layer: bool = False, debug: bool = False) -> Report:
    """Run TF (child process), torch (model.pt2) and, unless ``onnx=False``, ONNX Runtime; compare every output.

    ``atol``/``rtol`` take a number (all outputs) or ``{output: value}`` (with key ``"*"`` for the rest).
    ``ranges`` maps input names to half-open ``(low, high)`` ranges. ``inputs`` is an .npz with one array
    per input, in the TF layout unless ``inputs_layout="torch"``. Raises ``migrate.errors.InputError``
    (exit 2) for bad inputs; a mismatch is not an exception, it is ``report.passed == False``.
    """
    require("parity", PARITY if onnx else CONVERT)
    from checks.parity import runners

    if per_layer and not onnx:
        raise InputError("--per-layer compares ONNX Runtime's intermediate values with torch's; drop --no-onnx")
    if inputs_layout not in ("tf", "torch"):
        raise InputError(f"--inputs-layout must be 'tf' or 'torch', not {inputs_layout!r}")
    for label, value in (("--iterations", iterations), ("--batch-size", batch_size), ("--dim-size", dim_size)):
        if value < 1:
            raise InputError(f"{label} must be at least 1, got {value}")
    tolerances = _tolerances(atol, rtol)
    manifest = load_manifest(converted)
    known = {s.name for s in manifest.outputs}
    unknown = sorted((set(tolerances.per_output_atol) | set(tolerances.per_output_rtol)) - known)
    if unknown:
        raise InputError(f"tolerance given for unknown output(s) {', '.join(unknown)}; "
                         f"outputs are: {', '.join(sorted(known))}")
    if inputs is not None:
        batches = load_npz(inputs, manifest.inputs, inputs_layout)
    else:
        options = InputOptions(seed=seed, iterations=iterations, batch_size=batch_size, dim_size=dim_size,
                               float_range=float_range, ranges=dict(ranges or {}))
        batches = generate(manifest.inputs, options, infer_index_ranges(manifest.onnx, manifest.inputs))

    try:
        tf_raw = runners.run_tf(source, manifest, batches, signature=signature, debug=debug)
    except InputError as exc:
        if inputs is not None or not any(s.dtype.startswith(("int", "uint")) for s in manifest.inputs):
            raise
        raise InputError(f"{exc}; if an integer input indexes a table, pass --range NAME=LOW:HIGH") from exc
    results: dict[str, list[dict[str, Any]]] = {
        "tf": [{s.name: s.to_torch_layout(out[s.name]) for s in manifest.outputs} for out in tf_raw]}
    if onnx:
        results["onnx"] = runners.run_onnx(manifest, batches)
    results["torch"] = runners.run_torch(manifest, batches)

    pairs = [p for p, (a, e) in _PAIRS.items() if a in results and e in results]
    report = Report(atol=DEFAULT_ATOL if tolerances.atol is None else tolerances.atol,
                    rtol=DEFAULT_RTOL if tolerances.rtol is None else tolerances.rtol,
                    iterations=len(batches), seed=None if inputs is not None else seed, pairs=pairs,
                    per_layer=per_layer)
    for spec in manifest.outputs:
        out_atol, out_rtol = tolerances.for_output(spec.name, spec.dtype)
        for pair in pairs:
            actual, expected = _PAIRS[pair]
            stats = Stats()
            for a_batch, e_batch in zip(results[actual], results[expected]):
                stats.merge(compare_arrays(a_batch[spec.name], e_batch[spec.name], out_atol, out_rtol))
            report.outputs.append(OutputResult(spec.name, pair, stats, out_atol, out_rtol))
    if per_layer and not report.passed:
        from checks.parity.localize import first_divergence

        failing = report.failures()  # localise with the tightest tolerance that flagged a failure
        report.first_divergence = first_divergence(manifest, batches, min(o.atol for o in failing),
                                                   min(o.rtol for o in failing))
    return report


def _tolerances(atol: Any, rtol: Any) -> Tolerances:
    tol = Tolerances()
    for label, value, attr, per in (("atol", atol, "atol", tol.per_output_atol),
                                    ("rtol", rtol, "rtol", tol.per_output_rtol)):
        items = value.items() if isinstance(value, dict) else ([("*", value)] if value is not None else [])
        for name, number in items:
            try:
                number = float(number)
            except (TypeError, ValueError):
                raise InputError(f"--{label} {name}={number!r} is not a number") from None
            if not number >= 0:
                raise InputError(f"--{label} must be a non-negative number, got {number}")
            if name in ("*", None):
                setattr(tol, attr, number)
            else:
                per[name] = number
    return tol
