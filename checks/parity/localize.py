"""``--per-layer``: find the first ONNX node whose torch counterpart computes something else.

ONNX Runtime runs ``model.onnx`` with every node output exposed; torch runs ``model.pt2`` under an fx
Interpreter that records every value. onnx2torch makes one submodule per ONNX node, named after it, and
torch.export keeps that name in each aten node's ``nn_module_stack``, so the aten nodes of one ONNX node
form a group. Walking ONNX nodes in topological order, the first whose output differs from every
torch value of its group by more than float32 rounding explains, while its inputs agree, is where the
two diverge; tf2onnx names ONNX nodes after the TensorFlow ops they came from.

"More than rounding explains", per node output, with errors relative to the value's scale
(``max|torch - onnx| / max|onnx|``):
- above ``ROUNDING_ULPS * eps32 * (depth + 1)``, ``depth`` being the node's longest path from the graph
  inputs: to first order each floating-point op adds at most a few units of roundoff relative to
  the scale of what it computes, and these add up along a path (Higham's forward error bound for a
  chain of operations), so two float32 implementations of the same d ops stay within ~d*eps of each
  other; ROUNDING_ULPS covers reductions (a dot product's error grows with sqrt of its length);
- and ``GROWTH`` times above the largest relative error among its inputs: a node that only carries its
  inputs' difference forward did not introduce it.
A wrong weight or op breaks both by orders of magnitude; rounding in a deep net breaks neither.
"""

from __future__ import annotations

import math
import re
from typing import Any

from checks.parity.runners import load_program, onnx_feeds, onnx_session
from checks.parity.specs import Manifest
from migrate.core.compare import relative_error


def torch_module_name(node: Any) -> str:
    """The submodule name onnx2torch gives an ONNX node (dots are not allowed in torch names)."""
    return (f"{node.domain}/" + (node.name.replace(".", "/") or node.op_type)).lstrip("/")


def tf_op_name(onnx_node_name: str) -> str:
    """tf2onnx keeps the TF op name and appends ``__N`` to nodes it adds; drop that suffix."""
    return re.sub(r"(__\d+)+$", "", onnx_node_name)


def onnx_values(manifest: Manifest, batches: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """Run model.onnx with every top-level node output made a graph output; return (model, values per batch)."""
    import numpy as np
    import onnx

    model = onnx.load(str(manifest.onnx))
    present = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for out in node.output:
            if out and out not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=out))
                present.add(out)
    session = onnx_session(manifest.onnx, model)
    names = [o.name for o in session.get_outputs()]
    values = []
    for batch in batches:
        arrays = session.run(names, onnx_feeds(manifest, batch))
        values.append({n: v for n, v in zip(names, arrays) if isinstance(v, np.ndarray)})
    return model, values


def torch_values(manifest: Manifest, batches: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """Run model.pt2 node by node; return (graph module, {fx node name: tensor} per batch)."""
    import torch
    from torch.fx import Interpreter

    module = load_program(manifest).module()
    values: list[dict[str, Any]] = []

    class Recorder(Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                values[-1][n.name] = result.detach()
            return result

    with torch.no_grad():
        for batch in batches:
            values.append({})
            Recorder(module).run(*[torch.from_numpy(spec.to_torch_layout(batch[spec.name]).copy())
                                   for spec in manifest.inputs])
    return module, values


def _groups(module: Any, names: set[str]) -> dict[str, list[Any]]:
    """ONNX module name -> its aten nodes (in graph order), from each node's nn_module_stack."""
    groups: dict[str, list[Any]] = {}
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        owner = next((fqn for fqn, _ in stack.values() if fqn in names), None)
        if owner is not None:
            groups.setdefault(owner, []).append(node)
    return groups


#: Units of float32 roundoff per op allowed along a path (see the module docstring).
ROUNDING_ULPS = 16
#: How much larger than its inputs' a node's relative error must be for the node to be blamed.
GROWTH = 10.0
_EPS32 = 1.1920929e-07


def _depths(model: Any) -> dict[str, int]:
    """Tensor name -> longest path (in nodes) from a graph input; initializers and inputs are 0."""
    depth: dict[str, int] = {}
    for node in model.graph.node:  # ONNX requires topological order
        d = 1 + max((depth.get(i, 0) for i in node.input if i), default=0)
        for out in node.output:
            depth[out] = d
    return depth


def trace(manifest: Manifest, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ONNX node output with a torch counterpart, in topological order, worst over the batches.

    Each entry: ``onnx_node``, ``onnx_op``, ``tf_op``, ``torch_node`` (``name (target)``), ``torch_nodes``
    (every model.pt2 node of its group), ``max_abs_err``, ``relative_err`` (of the value's scale),
    ``rounding_bound``, ``inherited_err``, ``depth`` and ``diverges`` (the module docstring's rule).
    """
    import numpy as np

    model, ort_batches = onnx_values(manifest, batches)
    module, torch_batches = torch_values(manifest, batches)
    by_module = {torch_module_name(n): n for n in model.graph.node}
    groups = _groups(module, set(by_module))
    exported: dict[str, list[Any]] = {}
    for name, members in groups.items():
        member_set = set(members)
        exported[name] = [n for n in members if not n.users or any(u not in member_set for u in n.users)]
    depths = _depths(model)
    entries: dict[str, dict[str, Any]] = {}
    for ort_values, recorded in zip(ort_batches, torch_batches):
        errors: dict[str, float] = {}
        for onnx_node in model.graph.node:
            group = torch_module_name(onnx_node)
            candidates = [n for n in exported.get(group, []) if n.name in recorded]
            inherited = max((errors.get(i, 0.0) for i in onnx_node.input if i), default=0.0)
            for out in onnx_node.output:
                expected = ort_values.get(out)
                if expected is None:
                    continue
                best = _best_match(candidates, recorded, expected)
                if best is None:
                    errors[out] = inherited  # no torch counterpart: assume it carries its inputs' error
                    continue
                rel, node = best
                errors[out] = rel
                bound = ROUNDING_ULPS * _EPS32 * (depths.get(out, 0) + 1)
                diff = np.abs(recorded[node.name].cpu().numpy().astype(np.float64) - expected.astype(np.float64))
                entry = {"onnx_node": onnx_node.name or group, "onnx_op": onnx_node.op_type,
                         "tf_op": tf_op_name(onnx_node.name), "torch_node": f"{node.name} ({node.target})",
                         "torch_nodes": [n.name for n in groups.get(group, [])],
                         "max_abs_err": float(np.nanmax(diff)) if diff.size else 0.0,
                         "relative_err": rel if math.isfinite(rel) else None, "rounding_bound": bound,
                         "inherited_err": inherited if math.isfinite(inherited) else None,
                         "depth": depths.get(out, 0), "diverges": rel > bound and rel > GROWTH * inherited}
                old = entries.get(out)
                if old is None or (entry["diverges"], _num(rel)) > (old["diverges"], _num(old["relative_err"])):
                    entries[out] = entry
    return list(entries.values())


def _num(value: float | None) -> float:
    return float("inf") if value is None else value


def first_divergence(manifest: Manifest, batches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first ONNX node (topological order) whose torch value differs beyond rounding while its inputs agree
    (None when no node qualifies)."""
    return first_in(trace(manifest, batches))


def first_in(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first diverging entry of a :func:`trace`, without the per-group node list."""
    entry = next((e for e in entries if e["diverges"]), None)
    return None if entry is None else {k: v for k, v in entry.items() if k not in ("torch_nodes", "diverges")}


def _best_match(candidates: list[Any], recorded: dict[str, Any], expected: Any) -> tuple[float, Any] | None:
    """The torch value closest to ONNX's among those of the same shape and kind (None if none is comparable)."""
    best: tuple[float, Any] | None = None
    for candidate in candidates:
        actual = recorded[candidate.name].cpu().numpy()
        if actual.shape != expected.shape or actual.dtype.kind != expected.dtype.kind:
            continue
        rel = relative_error(actual.astype(expected.dtype), expected)
        if best is None or rel < best[0]:
            best = (rel, candidate)
    return best
