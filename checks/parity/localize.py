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


def onnx_values(manifest: Manifest, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Run model.onnx with every top-level node output made a graph output; return (model, values)."""
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
    values = session.run(names, onnx_feeds(manifest, batch))
    return model, {n: v for n, v in zip(names, values) if isinstance(v, np.ndarray)}


def torch_values(manifest: Manifest, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Run model.pt2 node by node; return (graph module, {fx node name: tensor})."""
    import torch
    from torch.fx import Interpreter

    module = load_program(manifest).module()
    recorded: dict[str, Any] = {}

    class Recorder(Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                recorded[n.name] = result.detach()
            return result

    inputs = [torch.from_numpy(spec.to_torch_layout(batch[spec.name]).copy()) for spec in manifest.inputs]
    with torch.no_grad():
        Recorder(module).run(*inputs)
    return module, recorded


def _groups(module: Any, names: set[str]) -> dict[str, list[Any]]:
    """ONNX module name -> its aten nodes (in graph order), from each node's nn_module_stack."""
    groups: dict[str, list[Any]] = {}
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        owner = next((fqn for fqn, _ in stack.values() if fqn in names), None)
        if owner is not None:
            groups.setdefault(owner, []).append(node)
    return groups


def first_divergence(manifest: Manifest, batch: dict[str, Any], atol: float, rtol: float) -> dict[str, Any] | None:
    """The first ONNX node (topological order) whose output no torch value of its group matches, or None."""
    model, ort_values = onnx_values(manifest, batch)
    module, recorded = torch_values(manifest, batch)
    by_module = {torch_module_name(n): n for n in model.graph.node}
    groups = _groups(module, set(by_module))
    for onnx_node in model.graph.node:
        members = groups.get(torch_module_name(onnx_node), [])
        member_set = set(members)
        exported = [n for n in members if n.name in recorded
                    and (not n.users or any(u not in member_set for u in n.users))]
        for out in onnx_node.output:
            expected = ort_values.get(out)
            if expected is None:
                continue
            best: tuple[Stats, Any] | None = None
            for candidate in exported:
                actual = recorded[candidate.name].cpu().numpy()
                if actual.shape != expected.shape or actual.dtype.kind != expected.dtype.kind:
                    continue
                stats = compare_arrays(actual.astype(expected.dtype), expected, atol, rtol)
                if best is None or (stats.mismatched, stats.max_abs_err) < (best[0].mismatched, best[0].max_abs_err):
                    best = (stats, candidate)
            if best is not None and not best[0].passed:
                stats, node = best
                return {"onnx_node": onnx_node.name or torch_module_name(onnx_node), "onnx_op": onnx_node.op_type,
                        "tf_op": tf_op_name(onnx_node.name), "torch_node": f"{node.name} ({node.target})",
                        "max_abs_err": stats.max_abs_err}
    return None
