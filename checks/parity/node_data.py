"""``parity --node-data FILE.json``: per-node error for Model Explorer, keyed on ``model.pt2``'s graph node names.

Model Explorer's node-data format (``model-explorer model.pt2 --node_data_paths=FILE.json``): for graph id
``graph``, ``results`` maps a node id (the fx node name in the ExportedProgram) to ``{"value": number}``, and
``thresholds`` colour the nodes. The value is the per-layer report's error in units of its tolerance
(``relative_err / rounding_bound`` of ``checks.parity.localize.trace``): at most 1 is rounding, above is a
divergence. Every aten node that onnx2torch made for one ONNX node gets that node's value.
"""

from __future__ import annotations

from typing import Any

GRAPH_ID = "graph"
#: Colours by value (error / tolerance): within tolerance, up to 10x over, beyond.
THRESHOLDS = [{"value": 1.0, "bgColor": "#a5d6a7"}, {"value": 10.0, "bgColor": "#ffcc80"},
              {"value": 1e300, "bgColor": "#ef9a9a"}]


def ratio(entry: dict[str, Any]) -> float:
    """Error in units of the tolerance for one trace entry (an unmeasurable error counts as 1e300)."""
    rel = entry.get("relative_err")
    bound = entry.get("rounding_bound") or 0.0
    if rel is None:
        return 1e300
    return rel / bound if bound > 0 else (0.0 if rel == 0 else 1e300)


def node_data(entries: list[dict[str, Any]], program_nodes: set[str]) -> dict[str, Any]:
    """The node-data document for a :func:`checks.parity.localize.trace`, limited to ``program_nodes``."""
    results: dict[str, dict[str, float]] = {}
    for entry in entries:
        value = ratio(entry)
        for name in entry.get("torch_nodes", []):
            if name in program_nodes and value >= results.get(name, {"value": -1.0})["value"]:
                results[name] = {"value": value}
    return {GRAPH_ID: {"results": results, "thresholds": THRESHOLDS}}
