"""``compare(source, converted, **options) -> Report``: the parity check as a Python call.

Order matters for the messages: TensorFlow runs first, so inputs it rejects are the user's error
(exit 2); a converted model that then fails on those same inputs is a conversion failure (exit 1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from checks.parity import implied
from checks.parity.inputs import InputOptions, generate, load_npz, plan
from checks.parity.numeric import DEFAULT_ATOL, DEFAULT_RTOL, FLAT_SHARE, Tolerances, flat_share, output_scale
from checks.parity.report import OutputResult, Report
from checks.parity.specs import Manifest, load_manifest
from checks.parity.versions import runtime_versions
from migrate.core import compare as comparison
from migrate.core.errors import InputError
from migrate.core.requirements import CONVERT, PARITY, require

__all__ = ["PAIRS", "Report", "compare", "compare_train"]

#: (actual, expected) witnesses per pair; the right-hand side is the reference.
PAIRS = {"tf~torch": ("torch", "tf"), "tf~onnx": ("onnx", "tf"), "onnx~torch": ("torch", "onnx")}
#: The pair that decides the verdict unless the user asks for more: is the converted model the TF model?
DEFAULT_VERDICT = ("tf~torch",)
#: Draws per witness of a random output (the manifest's ``random_outputs``): the first batch run this many times,
#: compared by per-element sample mean and std (``migrate.core.compare.compare_samples``, docs/parity.md).
RANDOM_DRAWS = 200


def compare(source: str | Path, converted: str | Path, *, signature: str | None = None,
            atol: float | dict[str, float] | None = None, rtol: float | dict[str, float] | None = None,
            seed: int = 0, iterations: int = 1, batch_size: int = 2, dim_size: int = 8,
            float_range: tuple[float, float] | None = None, ranges: dict[str, tuple[float, float]] | None = None,
            inputs: str | Path | None = None, inputs_layout: str = "tf", onnx: bool = True,
            per_layer: bool = False, pairs: list[str] | tuple[str, ...] | None = None,
            custom_objects: Any = None, trust_model_py: bool = False, debug: bool = False,
            trace: bool = False) -> Report:
    """Run TF (child process), torch (model.pt2) and, unless ``onnx=False``, ONNX Runtime; compare every output.

    ``converted`` may be a ``tf2torch port`` output: its module (``migrate.load_port``, eval mode) is the
    torch witness, and with no model.onnx only ``tf~torch`` exists (the report's ``notes`` say so). A port
    output is code: it is imported only with ``trust_model_py=True`` or ``converted="port:DIR"``, never
    because its manifest says "port". ``model.pt2`` is first loaded and run in a confined child process.

    ``atol``/``rtol`` take a number (all outputs) or ``{output: value}`` (with key ``"*"`` for the rest);
    unset, atol is relative to each output's scale (``checks.parity.numeric``). ``ranges`` maps input
    names to half-open ``(low, high)`` ranges; other inputs follow what the graph implies
    (``checks.parity.implied``). ``inputs`` is an .npz with one array per input, in the TF layout unless
    ``inputs_layout="torch"``. ``pairs`` decide the verdict (default ``tf~torch``); the others are
    reported. ``custom_objects``: a Keras SOURCE's custom classes, as for ``migrate.convert``. ``trace``:
    also record every layer's error along the graph (``report.trace``, for ``--report``/``--node-data``).
    Raises ``migrate.core.errors.InputError`` (exit 2) for bad inputs; a mismatch is not an
    exception, it is ``report.passed == False``.
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
    if str(converted).startswith("port:"):
        converted, trust_model_py = str(converted)[len("port:"):], True
    manifest = load_manifest(converted)
    notes = []
    if not trust_model_py:
        runners.refuse_untrusted_port(manifest)
    else:
        if per_layer:
            raise InputError("--per-layer walks model.onnx node by node; a 'tf2torch port' output has none")
        if any("onnx" in p for p in pairs or ()):
            raise InputError(f"--pairs {','.join(pairs or ())}: a 'tf2torch port' output has no model.onnx; "
                             "only tf~torch exists")
        onnx = False
        notes.append(f"{manifest.directory} is a port output (model.py): torch is its module in eval mode; "
                     "tf~onnx and onnx~torch do not exist (no model.onnx)")
    verdict = _verdict_pairs(pairs, onnx)
    tolerances = _tolerances(atol, rtol)
    known = {s.name for s in manifest.outputs}
    unknown = sorted((set(tolerances.per_output_atol) | set(tolerances.per_output_rtol)) - known)
    if unknown:
        raise InputError(f"tolerance given for unknown output(s) {', '.join(unknown)}; "
                         f"outputs are: {', '.join(sorted(known))}")
    drawn: list[dict[str, str]] = []
    if inputs is not None:
        batches = load_npz(inputs, manifest.inputs, inputs_layout)
    else:
        options = InputOptions(seed=seed, iterations=iterations, batch_size=batch_size, dim_size=dim_size,
                               float_range=float_range, ranges=dict(ranges or {}))
        # a Keras source's own layers say it best (and see what the export pruned: a loss's labels); else the
        # exported graph (table sizes, the first affine map), else the input's shape (an image, a mask)
        hints = {**implied.infer(manifest.onnx, manifest.inputs),
                 **implied.from_keras(source, manifest.inputs, custom_objects, debug)}
        batches = generate(manifest.inputs, options, hints)
        drawn = plan(manifest.inputs, options, hints)

    try:
        tf_raw = runners.run_tf(source, manifest, batches, signature=signature, custom_objects=custom_objects,
                                debug=debug)
    except InputError as exc:
        raise _tf_rejected(exc, source, manifest, drawn) from exc
    results: dict[str, list[dict[str, Any]]] = {
        "tf": [{s.name: s.to_torch_layout(out[s.name]) for s in manifest.outputs} for out in tf_raw]}
    if onnx:
        results["onnx"] = runners.run_onnx(manifest, batches)
    results["torch"] = runners.run_torch(manifest, batches, trust_model_py)

    random = {name: ops for name, ops in manifest.random_outputs.items() if name in known}
    samples = _draw(source, manifest, batches[0], random, results, signature, custom_objects, trust_model_py,
                    debug) if random else {}

    compared = [p for p, (a, e) in PAIRS.items() if a in results and e in results]
    report = Report(atol=DEFAULT_ATOL if tolerances.atol is None else tolerances.atol,
                    rtol=DEFAULT_RTOL if tolerances.rtol is None else tolerances.rtol,
                    iterations=len(batches), seed=None if inputs is not None else seed, pairs=compared,
                    per_layer=per_layer, verdict_pairs=list(verdict), inputs=drawn,
                    atol_scale=tolerances.atol_scale("*", "float32"), notes=notes)
    for spec in manifest.outputs:
        reference = [batch[spec.name] for batch in results["tf"]]
        scale = output_scale(reference)
        tol = tolerances.for_output(spec.name, spec.dtype, scale)
        out_atol, out_rtol = tol.atol, tol.rtol
        for pair in compared:
            actual, expected = PAIRS[pair]
            if spec.name in random:  # values cannot match draw for draw: compare the distribution
                sampled = comparison.compare_samples(samples[actual][spec.name], samples[expected][spec.name], tol)
                report.outputs.append(OutputResult(spec.name, pair, sampled.stats, out_atol, out_rtol, scale,
                                                   pair in verdict, how=sampled.describe(random[spec.name]),
                                                   random={"ops": random[spec.name], **sampled.to_dict()}))
                continue
            stats = comparison.Stats()
            for a_batch, e_batch in zip(results[actual], results[expected]):
                stats.merge(comparison.compare(a_batch[spec.name], e_batch[spec.name], tol))
            report.outputs.append(OutputResult(spec.name, pair, stats, out_atol, out_rtol, scale, pair in verdict))
        share = flat_share(reference, out_atol, out_rtol)
        if share >= FLAT_SHARE and spec.name not in random:
            report.warnings.append(_flat_warning(spec.name, share, drawn))
    report.versions = {**(manifest.versions or {}), **runtime_versions()}
    if (trace or per_layer and not report.passed) and manifest.kind != "port":
        from checks.parity import localize

        entries = localize.trace(manifest, batches)
        report.trace = entries if trace else []
        if per_layer and not report.passed:
            report.first_divergence = localize.first_in(entries)
    elif trace:
        report.notes.append("the error along the graph needs model.onnx and model.pt2 (a convert output); for a "
                            "port, 'parity --train --report' shows every layer")
    return report


def _draw(source: str | Path, manifest: Manifest, batch: dict[str, Any], random: dict[str, list[str]],
          witnesses: dict[str, Any], signature: str | None, custom_objects: Any, trust_model_py: bool,
          debug: bool) -> dict[str, dict[str, Any]]:
    """``RANDOM_DRAWS`` outputs of each witness on one batch: witness -> random output -> draws stacked on axis 0
    (the torch layout)."""
    import numpy as np

    from checks.parity import runners

    draws = [batch] * RANDOM_DRAWS
    runs = {"tf": [{s.name: s.to_torch_layout(out[s.name]) for s in manifest.outputs if s.name in random}
                   for out in runners.run_tf(source, manifest, draws, signature=signature,
                                             custom_objects=custom_objects, debug=debug)]}
    if "onnx" in witnesses:
        runs["onnx"] = runners.run_onnx(manifest, draws)
    runs["torch"] = runners.run_torch(manifest, draws, trust_model_py)
    return {w: {name: np.stack([np.asarray(out[name]) for out in outs]) for name in random} for w, outs in runs.items()}


def _flat_warning(output: str, share: float, drawn: list[dict[str, str]]) -> str:
    """Too flat: name the inputs to vary (the ones drawn by default first) and the option that does it."""
    defaults = [d for d in drawn if d["reason"] == "default"] or drawn
    vary = (f"vary {', '.join(d['name'] + ' (' + d['values'] + ')' for d in defaults[:3])} with --range "
            f"{defaults[0]['name']}=LOW:HIGH" if defaults else "give realistic inputs with --range NAME=LOW:HIGH")
    return (f"output {output!r} is too flat for this check to mean much: a constant (its mean) would pass on "
            f"{100 * share:.0f}% of its elements (e.g. a softmax over many classes that is near uniform, or an "
            f"output that hardly depends on these inputs); {vary}, or pass real arrays with --inputs FILE.npz")


def compare_train(source: str | Path, converted: str | Path, **options: Any) -> Any:
    """``--train``: a Keras training step against the ported module's (``checks.parity.train.api``)."""
    require("parity", ("numpy", "torch", "safetensors"))
    from checks.parity.train.api import compare_train as run

    return run(source, converted, **options)


def _verdict_pairs(pairs: list[str] | tuple[str, ...] | None, onnx: bool) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(pairs)) if pairs else DEFAULT_VERDICT
    unknown = [p for p in chosen if p not in PAIRS]
    if unknown:
        raise InputError(f"--pairs: unknown pair(s) {', '.join(unknown)}; choose from {', '.join(PAIRS)}")
    if not onnx and any("onnx" in p for p in chosen):
        raise InputError(f"--pairs {','.join(chosen)} needs ONNX Runtime; drop --no-onnx")
    return chosen


#: The TF worker names its scratch .npz files in messages; the user never saw them, so they are dropped.
_SCRATCH = re.compile(r"\S*tf2torch-parity-[^/\s]*/\S+?:\s*")


def _tf_rejected(exc: InputError, source: str | Path, manifest: Manifest, drawn: list[dict[str, str]]) -> InputError:
    """TensorFlow refused the inputs: say whether SOURCE and CONVERTED belong together, with the right hint;
    for generated inputs (``drawn``), which input (named in the error, else all) and how to give valid ones."""
    detail = _SCRATCH.sub("", str(exc))
    recorded = manifest.source_path
    if recorded and Path(recorded).resolve() != Path(source).resolve():
        return InputError(f"SOURCE {source} does not match CONVERTED {manifest.directory}: it was converted from "
                          f"{recorded}, and TensorFlow rejected its inputs here ({detail}); pass that model as "
                          f"SOURCE, or re-run 'tf2torch convert {source} -o {manifest.directory} --force'")
    if "missing input" in detail or "no output" in detail:
        return InputError(f"SOURCE {source} does not take the inputs CONVERTED {manifest.directory} was converted "
                          f"with ({detail}); the model changed since: re-run 'tf2torch convert'")
    if drawn:
        named = [d for d in drawn if re.search(rf"\b{re.escape(d['name'])}s?\b", detail, re.IGNORECASE)] or drawn
        inputs = "; ".join(f"{d['name']} was drawn as {d['values']} ({d['reason']})" for d in named)
        return InputError(f"{detail}; the inputs were generated: {inputs}; give the values the model accepts with "
                          f"--range {named[0]['name']}=LOW:HIGH, or real arrays with --inputs FILE.npz")
    return InputError(detail)


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
