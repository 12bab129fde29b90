"""``--per-layer``: find the first ONNX node whose torch counterpart computes something else.

ONNX Runtime runs ``model.onnx`` with every node output exposed; torch runs ``model.pt2`` under an fx
Interpreter that records every value. onnx2torch makes one submodule per ONNX node, named after it, and
torch.export keeps that name in each aten node's ``nn_module_stack``, so the aten nodes of one ONNX node
form a group. Walking ONNX nodes in topological order, the first whose output has no matching torch
value is where the two diverge; tf2onnx names ONNX nodes after the TensorFlow ops they came from.
"""

from __future__ import annotations

import re
from typing import Any

from checks.parity.numeric import Stats, compare_arrays
from checks.parity.runners import load_program, onnx_feeds, onnx_session
from checks.parity.specs import Manifest


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


def first_divergence(manifest: Manifest, batches: list[dict[str, Any]], atol: float,
                     rtol: float) -> dict[str, Any] | None:
    """The first ONNX node (topological order) whose output no torch value of its group matches, or None.

    Batches are tried in order; the first one with a diverging node decides.
    """
    model, ort_batches = onnx_values(manifest, batches)
    module, torch_batches = torch_values(manifest, batches)
    by_module = {torch_module_name(n): n for n in model.graph.node}
    groups = _groups(module, set(by_module))
    exported: dict[str, list[Any]] = {}
    for name, members in groups.items():
        member_set = set(members)
        exported[name] = [n for n in members if not n.users or any(u not in member_set for u in n.users)]
    for ort_values, recorded in zip(ort_batches, torch_batches):
        for onnx_node in model.graph.node:
            candidates = [n for n in exported.get(torch_module_name(onnx_node), []) if n.name in recorded]
            for out in onnx_node.output:
                expected = ort_values.get(out)
                if expected is None:
                    continue
                best = _best_match(candidates, recorded, expected, atol, rtol)
                if best is not None and not best[0].passed:
                    stats, node = best
                    return {"onnx_node": onnx_node.name or torch_module_name(onnx_node),
                            "onnx_op": onnx_node.op_type, "tf_op": tf_op_name(onnx_node.name),
                            "torch_node": f"{node.name} ({node.target})", "max_abs_err": stats.max_abs_err}
    return None


def _best_match(candidates: list[Any], recorded: dict[str, Any], expected: Any, atol: float,
                rtol: float) -> tuple[Stats, Any] | None:
    """The torch value closest to ONNX's among those of the same shape and kind (None if none is comparable)."""
    best: tuple[Stats, Any] | None = None
    for candidate in candidates:
        actual = recorded[candidate.name].cpu().numpy()
        if actual.shape != expected.shape or actual.dtype.kind != expected.dtype.kind:
            continue
        stats = compare_arrays(actual.astype(expected.dtype), expected, atol, rtol)
        if best is None or (stats.mismatched, stats.max_abs_err) < (best[0].mismatched, best[0].max_abs_err):
            best = (stats, candidate)
    return best
