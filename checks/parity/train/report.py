"""The training-parity report: text table, JSON (DESIGN.md's ``train`` block) and JUnit XML."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from migrate.core.compare import Stats, Tolerance, compare


@dataclass
class Check:
    """One compared quantity: a forward output or layer, the loss, a gradient, a weight or a statistic."""

    kind: str  # "output" | "layer" | "loss" | "regularization" | "gradient" | "weight" | "buffer"
    name: str
    max_abs_err: float
    atol: float
    passed: bool
    keras: str | None = None
    layer: str | None = None
    message: str | None = None
    rtol: float = 0.0
    stats: dict[str, Any] | None = None  # forward checks: DESIGN.md's per-output statistics
    noise: float = 0.0  # both sides' own measured rounding error, inside atol (migrate.core.compare)
    detail: str | None = None  # the torch module and its model.py line (layers), for the HTML report


def check(kind: str, name: str, actual: Any, expected: Any, tol: Tolerance, keras: str | None = None,
          layer: str | None = None, message: str | None = None, stats: bool = False) -> Check:
    """One quantity compared by ``migrate.core.compare`` (float64, dtypes may differ); ``stats``: keep
    DESIGN.md's per-output numbers too (forward checks)."""
    result = compare(actual, expected, tol, strict_dtype=False)
    return Check(kind, name, result.max_abs_err, tol.atol, result.passed, keras, layer,
                 message or result.message, tol.rtol, forward_stats(result) if stats else None, tol.noise)


def forward_stats(stats: Stats) -> dict[str, Any]:
    """DESIGN.md's per-output numbers for one forward comparison."""
    return {"max_rel_err": stats.max_rel_err, "mean_abs_err": stats.mean_abs_err, "mismatched": stats.mismatched,
            "total": stats.total, "worst_index": stats.worst_index}


@dataclass
class TrainReport:
    steps: int
    optimizer: dict[str, Any]
    loss: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_divergence: dict[str, Any] | None = None
    title: str = "training parity"
    seed: int | None = None
    atol: float = 1e-5  # the forward floor: each output's atol is this times max(1, its scale)
    rtol: float = 1e-4
    pair: str = "tf~torch"  # Keras on TensorFlow is the reference, torch the side under test
    inputs: list[dict[str, str]] = field(default_factory=list)  # name, values, reason (for the HTML report)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def _of(self, kind: str) -> list[Check]:
        return [c for c in self.checks if c.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        grads = {c.name: c for c in self._of("gradient")}
        params = []
        for w in self._of("weight"):
            g = grads.get(w.name)
            params.append({"keras": w.keras, "torch": w.name, "layer": w.layer,
                           "grad_max_abs_err": None if g is None else g.max_abs_err,
                           "weight_max_abs_err": w.max_abs_err, "grad_atol": None if g is None else g.atol,
                           "weight_atol": w.atol, "passed": w.passed and (g is None or g.passed),
                           "message": (g.message if g is not None and g.message else w.message)})
        outputs = [{"name": c.name, "pair": self.pair, "passed": c.passed,
                    "max_abs_err": c.max_abs_err if c.max_abs_err != float("inf") else None,
                    **(c.stats or {"max_rel_err": None, "mean_abs_err": None, "mismatched": None, "total": None,
                                   "worst_index": None}),
                    "message": c.message, "kind": c.kind, "atol": c.atol, "rtol": c.rtol}
                   for c in self.checks if c.kind in ("output", "layer")]
        return {"passed": self.passed, "atol": self.atol, "rtol": self.rtol, "iterations": 1, "seed": self.seed,
                "pairs": [self.pair], "outputs": outputs, "first_divergence": self.first_divergence,
                "train": {"steps": self.steps, "optimizer": self.optimizer, "loss": self.loss,
                          "parameters": params,
                          "buffers": [{"keras": b.keras, "torch": b.name, "layer": b.layer,
                                       "max_abs_err": b.max_abs_err, "atol": b.atol, "passed": b.passed}
                                      for b in self._of("buffer")],
                          "first_divergence": self.first_divergence, "notes": list(self.notes)}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_text(self) -> str:
        header = ["stage", "name", "keras", "result", "max_abs", "atol"]
        rows = [[c.kind, c.name, c.keras or "-", "ok" if c.passed else "FAIL", f"{c.max_abs_err:.3g}",
                 f"{c.atol:.3g}"] for c in self.checks]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        lines += [f"{c.kind} {c.name}: {c.message}" for c in self.checks if c.message]
        opt = self.optimizer
        if self.steps:
            lines.append(f"optimizer: Keras {opt['keras']} -> torch {opt['torch']}"
                         + ("" if opt["exact"] else " (not exact: " + "; ".join(opt.get("notes", [])) + ")"))
            lines.append(f"loss: Keras {self.loss['keras']:.6g}, torch {self.loss['torch']:.6g}")
        failed = [c for c in self.checks if not c.passed]
        verdict = "PASSED" if self.passed else f"FAILED ({len(failed)} of {len(self.checks)} comparisons)"
        lines.append(f"{self.title} {verdict}" + (f" after {self.steps} step(s)" if self.steps else ""))
        d = self.first_divergence
        if d:
            where = d.get("torch") or d.get("name")
            layer = f" (Keras layer {d['layer']!r})" if d.get("layer") else ""
            lines.append(f"first divergence: {d['stage']} {where}{layer}: {d['explanation']}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_junit(self) -> str:
        from xml.etree import ElementTree as ET

        failures = sum(not c.passed for c in self.checks)
        suite = ET.Element("testsuite", name="tf2torch.parity.train", tests=str(len(self.checks)),
                           failures=str(failures), errors="0", skipped="0")
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname=f"parity.train.{c.kind}", name=c.name)
            summary = f"max_abs_err={c.max_abs_err:.3g} atol={c.atol:.3g} keras={c.keras}"
            if c.passed:
                ET.SubElement(case, "system-out").text = summary
            else:
                ET.SubElement(case, "failure", message=c.message or f"{c.kind} differs from Keras",
                              type="TrainParityMismatch").text = summary
        root = ET.Element("testsuites", name="tf2torch parity --train", tests=str(len(self.checks)),
                          failures=str(failures))
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def render(self, fmt: str) -> str:
        return {"text": self.to_text, "json": self.to_json, "junit": self.to_junit}[fmt]()

    def to_html(self) -> str:
        """The self-contained page of ``--report`` (``checks.parity.html``)."""
        from checks.parity import html

        data = self.to_dict()
        grads = {c.name: c for c in self._of("gradient")}
        params = [{"name": p["torch"], "keras": p["keras"], "grad_err": p["grad_max_abs_err"],
                   "grad_atol": p["grad_atol"], "weight_err": p["weight_max_abs_err"], "weight_atol": p["weight_atol"],
                   "passed": p["passed"], "detail": f"Keras {p['keras']}" + (
                       f"; {grads[p['torch']].message}" if p["torch"] in grads and grads[p["torch"]].message else "")}
                  for p in data["train"]["parameters"]]
        trace = [{"name": c.layer or (f"{c.name} (output)" if c.kind == "output" else c.name), "error": c.max_abs_err, "tolerance": c.atol,
                  "diverges": not c.passed, "detail": c.detail or ""}
                 for c in self.checks if c.kind in ("layer", "output")]
        d = self.first_divergence
        return html.render({
            "title": f"tf2torch {self.title}", "passed": self.passed,
            "summary": f"{sum(c.passed for c in self.checks)} of {len(self.checks)} comparisons within tolerance"
                       + (f" after {self.steps} step(s)" if self.steps else "")
                       + (f"; first divergence: {d['stage']} {d.get('torch') or d['name']}: {d['explanation']}"
                          if d else ""),
            "inputs": self.inputs, "versions": self.versions, "notes": self.notes, "warnings": [],
            "outputs": [o for o in data["outputs"] if o["kind"] == "output"], "trace": trace,
            "trace_label": "max |torch - Keras| of every compared layer's training-mode output, then the model "
                           "outputs; tolerance: atol = max(floor, factor*scale) + 10*(both sides' own rounding "
                           "error) (migrate.core.compare)", "parameters": params})

    def __str__(self) -> str:
        return self.to_text()
