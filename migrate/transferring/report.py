"""The transfer report: matched pairs with their transforms; Keras weights and torch tensors left over, and units
whose output differs from the Keras layer's, each with the nearest candidate (like missing/unexpected keys)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Pair:
    layer: str  # the Keras layer
    keras_kind: str  # the reference (ported) unit's class
    torch: str  # the user's submodule
    torch_kind: str
    rule: str  # which pairing rule fitted (migrate.transferring.rules)
    weights: list[dict[str, Any]]  # {"keras", "torch", "transform", "pack"?}
    max_abs_err: float  # the unit's output against the Keras layer's (through the reference module)
    atol: float


@dataclass
class TransferReport:
    source: str
    module: str
    pairs: list[Pair] = field(default_factory=list)
    keras_left: list[dict[str, Any]] = field(default_factory=list)
    torch_left: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    decided: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    outputs_max_abs_err: list[float] = field(default_factory=list)
    outputs_match: bool = False

    @property
    def complete(self) -> bool:
        """Every Keras weight and every torch tensor found its place."""
        return not self.keras_left and not self.torch_left

    @property
    def passed(self) -> bool:
        return self.complete and not self.mismatches and self.outputs_match

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float) -> float | None:
            return x if x != float("inf") else None

        pairs = [dict(asdict(p), max_abs_err=finite(p.max_abs_err)) for p in self.pairs]
        return {"source": self.source, "module": self.module, "complete": self.complete, "passed": self.passed,
                "pairs": pairs, "keras_left": self.keras_left, "torch_left": self.torch_left,
                "mismatches": [dict(m, max_abs_err=finite(m["max_abs_err"])) for m in self.mismatches],
                "decided_by_numbers": self.decided, "ambiguous": self.ambiguous,
                "outputs": {"match": self.outputs_match,
                            "max_abs_err": [finite(e) for e in self.outputs_max_abs_err]}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_text(self) -> str:
        lines = [f"transfer {self.source} -> {self.module}"]
        for p in self.pairs:
            flag = "" if p.max_abs_err <= p.atol else f"  OUTPUT DIFFERS by {p.max_abs_err:.3g}"
            lines.append(f"  {p.layer:<24} -> {p.torch or '(model)'} [{p.torch_kind}]{flag}")
            for w in p.weights:
                pack = f" block {w['pack'][0]} of {w['pack'][1]}" if w.get("pack") else ""
                lines.append(f"      {w['keras'] or '-':<40} -> {w['torch']}{pack}  {w['transform'] or 'copy'}")
        for k in self.keras_left:
            lines.append(f"keras weight left over: {k['keras']} (layer {k['layer']}); nearest torch unit: {k['nearest']}")
        for t in self.torch_left:
            lines.append(f"torch tensor left over: {t['torch']} {t['shape']}"
                         + (f" ({t['note']})" if t.get("note") else f"; nearest Keras weight: {t['nearest']}"))
        for m in self.mismatches:
            lines.append(f"mismatch: Keras layer {m['layer']} -> {m['torch']}: output differs by {m['max_abs_err']:.3g} "
                         f"(atol {m['atol']:.3g}); nearest other candidate: {m['nearest']}")
        lines += [f"decided: {d}" for d in self.decided]
        lines += [f"ambiguous: {a}" for a in self.ambiguous]
        errs = ", ".join(f"{e:.3g}" for e in self.outputs_max_abs_err)
        lines.append(f"outputs vs Keras: max abs err {errs} ({'match' if self.outputs_match else 'DIFFER'})")
        verdict = "COMPLETE" if self.complete else "INCOMPLETE"
        lines.append(f"transfer {verdict}: {len(self.pairs)} layers paired, {len(self.keras_left)} Keras weights and "
                     f"{len(self.torch_left)} torch tensors left over, {len(self.mismatches)} output mismatches"
                     + ("" if self.mismatches or self.outputs_match else "; run 'tf2torch parity' to find the cause"))
        return "\n".join(lines) + "\n"
