"""The parity report and its three renderings: a text table, JSON (DESIGN.md's keys) and JUnit XML."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.core.compare import Stats

FORMATS = ("text", "json", "junit")


def _finite(value: float) -> float | None:
    """JSON has no Inf/NaN (an overflowing difference); such a statistic is reported as null."""
    return value if math.isfinite(value) else None


@dataclass
class OutputResult:
    """One output compared between one pair of witnesses (``actual~expected``, the right side is the reference).

    ``gating`` pairs decide the verdict; the others are reported only. ``scale`` is the reference's
    largest finite |value|, which the default atol is relative to.
    """

    name: str
    pair: str
    stats: Stats
    atol: float
    rtol: float
    scale: float = 0.0
    gating: bool = True
    #: For a random output: how it was compared (one line) and the numbers (ops, draws, Δmean/Δstd, bounds);
    #: its max_abs/mean_abs are then |Δmean| of the per-element sample means, max_rel that over their scale.
    how: str | None = None
    random: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {"name": self.name, "pair": self.pair, "passed": s.passed, "max_abs_err": _finite(s.max_abs_err),
                "max_rel_err": _finite(s.max_rel_err), "mean_abs_err": _finite(s.mean_abs_err),
                "mismatched": s.mismatched,
                "total": s.total, "worst_index": s.worst_index, "message": s.message,
                "atol": self.atol, "rtol": self.rtol, "scale": _finite(self.scale), "gating": self.gating,
                "compared": "distribution" if self.random else "values", "how": self.how,
                "random": None if self.random is None else {k: _finite(v) if isinstance(v, float) else v
                                                            for k, v in self.random.items()}}


@dataclass
class Report:
    """Everything a parity run found; ``str(report)`` is the table the CLI prints.

    ``atol``/``rtol`` are the global settings: ``atol`` is the floor of the scaled default (or the user's
    value) and ``atol_scale`` the factor on each output's scale (0 when the user set ``atol``); the values
    each output was held to are in its ``OutputResult``.
    """

    atol: float
    rtol: float
    iterations: int
    seed: int | None
    pairs: list[str]
    outputs: list[OutputResult] = field(default_factory=list)
    first_divergence: dict[str, Any] | None = None
    per_layer: bool = False
    verdict_pairs: list[str] = field(default_factory=lambda: ["tf~torch"])
    atol_scale: float = 0.0
    warnings: list[str] = field(default_factory=list)
    inputs: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)  # localize.trace, for --report/--node-data
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.stats.passed for o in self.outputs if o.gating)

    def failures(self) -> list[OutputResult]:
        """Failed comparisons that decide the verdict."""
        return [o for o in self.outputs if o.gating and not o.stats.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "atol": self.atol, "rtol": self.rtol, "iterations": self.iterations,
                "seed": self.seed, "pairs": list(self.pairs), "outputs": [o.to_dict() for o in self.outputs],
                "first_divergence": self.first_divergence, "verdict_pairs": list(self.verdict_pairs),
                "atol_scale": self.atol_scale, "warnings": list(self.warnings), "inputs": list(self.inputs),
                "notes": list(self.notes), **({"layers": self.trace} if self.trace else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_text(self) -> str:
        return format_text(self)

    def to_junit(self) -> str:
        return format_junit(self)

    def render(self, fmt: str) -> str:
        return {"text": self.to_text, "json": self.to_json, "junit": self.to_junit}[fmt]()

    def to_html(self) -> str:
        """The self-contained page of ``--report`` (``checks.parity.html``)."""
        from checks.parity import html
        from checks.parity.node_data import ratio

        gating = [o for o in self.outputs if o.gating]
        trace = [{"name": e["tf_op"] or e["onnx_node"], "error": e["relative_err"],
                  "tolerance": e["rounding_bound"], "diverges": e["diverges"],
                  "detail": f"ONNX {e['onnx_op']} {e['onnx_node']}, torch {e['torch_node']}, "
                            f"{ratio(e):.3g}x its tolerance"} for e in self.trace]
        return html.render({
            "title": "tf2torch parity", "passed": self.passed,
            "summary": f"{len(gating) - len(self.failures())} of {len(gating)} comparisons on "
                       f"{', '.join(self.verdict_pairs)} within |actual - expected| <= atol + rtol*|expected|; "
                       f"{self.iterations} batch(es), seed {self.seed}",
            "inputs": self.inputs, "versions": self.versions, "warnings": self.warnings, "notes": self.notes,
            "outputs": [o.to_dict() for o in self.outputs], "trace": trace,
            "trace_label": "relative error max|torch - ONNX Runtime| / max|ONNX Runtime| of every ONNX node's "
                           "output, named by the TensorFlow op it came from; tolerance: float32 rounding at its "
                           "depth (checks.parity.localize)"})

    def __str__(self) -> str:
        return self.to_text()


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def format_text(report: Report) -> str:
    """A fixed-width table, one row per output and pair, then the verdict and any localisation."""
    header = ["output", "pair", "result", "max_abs", "max_rel", "mean_abs", "mismatched", "worst_index", "atol"]
    rows = []
    for o in report.outputs:
        s = o.stats
        result = ("ok" if s.passed else "FAIL") if o.gating else ("(ok)" if s.passed else "(fail)")
        rows.append([o.name, o.pair, result,
                     _num(s.max_abs_err), _num(s.max_rel_err), _num(s.mean_abs_err),
                     f"{s.mismatched}/{s.total} ({100 * s.share:.1f}%)",
                     "-" if s.worst_index is None else "[" + ", ".join(map(str, s.worst_index)) + "]",
                     _num(o.atol)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    for o in report.outputs:
        if o.how:  # a random output: how it was compared, and what failed (the message repeats the numbers)
            failed = f"; FAIL: {o.stats.message.split(': ', 1)[0]}" if o.stats.message else ""
            lines.append(f"{o.name} ({o.pair}): {o.how}{failed}")
        elif o.stats.message:
            lines.append(f"{o.name} ({o.pair}): {o.stats.message}")
    gating = [o for o in report.outputs if o.gating]
    verdict = "PASSED" if report.passed else f"FAILED ({len(report.failures())} of {len(gating)} comparisons)"
    atol = (f"atol=max({report.atol:g}, {report.atol_scale:g}*scale)" if report.atol_scale
            else f"atol={report.atol:g}")
    lines.append(f"parity {verdict} on {', '.join(report.verdict_pairs)}: |actual - expected| <= atol + "
                 f"rtol*|expected| with {atol}, rtol={report.rtol:g}; {report.iterations} batch(es), "
                 f"seed {report.seed}")
    others = sorted({o.pair for o in report.outputs if not o.gating})
    if others:
        failed = sorted({o.pair for o in report.outputs if not o.gating and not o.stats.passed})
        lines.append(f"reported, not in the verdict: {', '.join(others)}"
                     + (f" ({', '.join(failed)} over tolerance)" if failed else "") + " (add with --pairs)")
    if report.inputs:
        lines.append("inputs: " + "; ".join(f"{i['name']} {i['values']} ({i['reason']})" for i in report.inputs))
    lines.extend(f"warning: {w}" for w in report.warnings)
    lines.extend(f"note: {n}" for n in report.notes)
    lines.extend(_divergence_lines(report))
    return "\n".join(lines) + "\n"


def _divergence_lines(report: Report) -> list[str]:
    if not report.per_layer or report.passed:
        return []
    d = report.first_divergence
    if d is None:
        if all(o.stats.passed for o in report.outputs if o.pair == "onnx~torch"):
            return [("per-layer: ONNX Runtime and torch agree node by node, so the difference arose in the "
                     "TensorFlow -> ONNX export (tf2onnx), not on the torch side")]
        return [("per-layer: no ONNX node's torch counterpart differs by more than float32 rounding explains; "
                 "the difference builds up over many nodes (if it is rounding, loosen the tolerance)")]
    return [f"first divergence: ONNX node {d['onnx_node']!r} ({d.get('onnx_op', '?')})",
            f"  torch node: {d['torch_node']}",
            f"  TensorFlow op: {d['tf_op']}",
            (f"  max abs err there: {_num(d['max_abs_err'])}, {_num(d['relative_err'])} of the value's scale "
             f"(float32 rounding at depth {d['depth']} explains up to {_num(d['rounding_bound'])}; "
             f"its inputs differ by at most {_num(d['inherited_err'])}: the error starts here)")]


def format_junit(report: Report) -> str:
    """JUnit XML: one testsuite, one testcase per output and pair; failures carry the numbers."""
    from xml.etree import ElementTree as ET

    failures = len(report.failures())
    suite = ET.Element("testsuite", name="tf2torch.parity", tests=str(len(report.outputs)),
                       failures=str(failures), errors="0", skipped="0")
    for o in report.outputs:
        case = ET.SubElement(suite, "testcase", classname=f"parity.{o.pair}", name=o.name)
        s = o.stats
        summary = (f"{o.how}\n" if o.how else "") + (f"max_abs_err={_num(s.max_abs_err)} max_rel_err={_num(s.max_rel_err)} "
                   f"mean_abs_err={_num(s.mean_abs_err)} mismatched={s.mismatched}/{s.total} "
                   f"worst_index={s.worst_index} atol={o.atol:g} rtol={o.rtol:g}")
        if o.gating and not s.passed:
            failure = ET.SubElement(case, "failure", message=s.message or f"{s.mismatched} of {s.total} elements "
                                                                           "over tolerance", type="ParityMismatch")
            failure.text = summary + ("\n" + "\n".join(_divergence_lines(report)) if report.per_layer else "")
        else:
            ET.SubElement(case, "system-out").text = summary
    root = ET.Element("testsuites", name="tf2torch parity", tests=str(len(report.outputs)), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_atomic(path: str | Path, text: str, flag: str = "--output") -> None:
    """Write through a temporary sibling and rename, so a reader never sees half a report; a path that cannot
    be written is one line naming ``flag`` and the path the user gave."""
    from migrate.core.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a directory; name a file for the report")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path}: is read-only; the report was not written")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot be written there ({exc.strerror or exc}); the report was not "
                         "written") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
