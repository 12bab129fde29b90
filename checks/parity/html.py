"""``parity --report FILE.html``: one self-contained page (inline CSS and SVG, no script, no network).

It shows the verdict, the inputs and how each was drawn, the versions, per output the error against its
tolerance, and along the graph (topological order) every compared layer's error on a log scale with its
tolerance, the first divergence marked; each point's tooltip (SVG ``<title>``) names the layer. For
``--train`` it adds per parameter the gradient and weight errors against their tolerances.
Plain inline SVG: a plotting library would add a dependency for two scatter charts.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

#: Errors below this are drawn at the bottom of the log axis (an exact match has no logarithm).
FLOOR = 1e-12
_W, _H, _LEFT, _TOP, _BOTTOM = 960, 380, 64, 16, 120
#: Up to this many points, each is labelled under the axis; beyond, the tooltips name them.
LABELLED = 48


def render(view: dict[str, Any]) -> str:
    """The page for one run. ``view``: title, passed, summary, inputs, versions, outputs, trace (name,
    detail, error, tolerance, diverges), trace_label, parameters (train), warnings, notes."""
    parts = [f"<h1>{escape(view['title'])}</h1>",
             (f'<p class="verdict {"pass" if view["passed"] else "fail"}">{"PASSED" if view["passed"] else "FAILED"}'
             f" &mdash; {escape(view.get('summary', ''))}</p>")]
    first = next((i for i, p in enumerate(view.get("trace", [])) if p["diverges"]), None)
    if first is not None:
        point = view["trace"][first]
        parts.append(f'<p class="first">First divergence: <b>{escape(point["name"])}</b> '
                     f"({escape(point.get('detail') or '')}): error {point['error']:.3g} against a tolerance of "
                     f"{point['tolerance']:.3g}</p>")
    for title, lines in (("Warnings", view.get("warnings")), ("Notes", view.get("notes"))):
        if lines:
            parts.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{escape(str(n))}</li>" for n in lines) + "</ul>")
    if view.get("inputs"):
        parts.append("<h2>Inputs</h2>" + _table(["input", "values", "why"],
                                                 [[i["name"], i["values"], i["reason"]] for i in view["inputs"]]))
    if view.get("outputs"):
        parts.append("<h2>Outputs</h2>" + _table(
            ["output", "pair", "result", "max abs err", "max rel err", "mean abs err", "mismatched", "atol", "rtol"],
            [[o["name"], o.get("pair", ""), "ok" if o["passed"] else "FAIL", _n(o.get("max_abs_err")),
              _n(o.get("max_rel_err")), _n(o.get("mean_abs_err")),
              "-" if o.get("total") is None else f"{o['mismatched']}/{o['total']}", _n(o.get("atol")),
              _n(o.get("rtol"))] for o in view["outputs"]]))
    if view.get("trace"):
        parts.append(f"<h2>Error along the graph</h2><p>{escape(view.get('trace_label', ''))}; the shaded band is "
                     "each layer's tolerance, red points are over it, the dashed line marks the first divergence. "
                     "Hover a point for the layer.</p>")
        parts.append(chart(view["trace"], first, "layer-chart"))
    if view.get("parameters"):
        params = view["parameters"]
        parts.append("<h2>Parameters after the training step</h2>")
        for key, label in (("grad", "gradient"), ("weight", "weight after the steps")):
            points = [{"name": p["name"], "detail": p.get("detail") or "", "error": p[f"{key}_err"],
                       "tolerance": p[f"{key}_atol"], "diverges": p[f"{key}_err"] > p[f"{key}_atol"]}
                      for p in params if p.get(f"{key}_err") is not None]
            if points:
                parts.append(f"<h3>{label} error</h3>"
                             + chart(points, next((i for i, p in enumerate(points) if p["diverges"]), None),
                                     f"{key}-chart", "parameters in the model's order", "first over tolerance"))
        parts.append(_table(["parameter", "Keras", "grad err", "grad atol", "weight err", "weight atol", "result"],
                            [[p["name"], p.get("keras") or "", _n(p.get("grad_err")), _n(p.get("grad_atol")),
                              _n(p.get("weight_err")), _n(p.get("weight_atol")), "ok" if p["passed"] else "FAIL"]
                             for p in params]))
    if view.get("versions"):
        parts.append("<h2>Versions</h2>" + _table(["package", "version"],
                                                  [[k, str(v)] for k, v in sorted(view["versions"].items())]))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{escape(view['title'])}</title><style>{_CSS}</style></head><body>" + "\n".join(parts)
            + "</body></html>\n")


def chart(points: list[dict[str, Any]], first: int | None, element_id: str,
          caption: str = "compared layers in topological order", mark: str = "first divergence") -> str:
    """A log-scale scatter of ``error`` per point with its ``tolerance`` as a shaded band."""
    values = [max(v, FLOOR) for p in points for v in (p["error"], p["tolerance"])
              if v is not None and math.isfinite(v)]
    low = math.floor(math.log10(min(values, default=FLOOR)))
    high = math.ceil(math.log10(max(values, default=1.0)))
    high = max(high, low + 1)
    plot_w, plot_h = _W - _LEFT - 16, _H - _TOP - _BOTTOM
    step = plot_w / max(len(points), 1)

    def x(i: int) -> float:
        return _LEFT + step * (i + 0.5)

    def y(v: float | None) -> float:
        v = max(v, FLOOR) if v is not None and math.isfinite(v) else 10.0 ** high
        return _TOP + plot_h * (high - math.log10(v)) / (high - low)

    svg = [(f'<svg id="{element_id}" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
           f'viewBox="0 0 {_W} {_H}" role="img" aria-label="error per layer, log scale">')]
    for decade in range(low, high + 1):
        yy = y(10.0 ** decade)
        svg.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - 16}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
                   f'<text class="tick" x="{_LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">1e{decade}</text>')
    band = [f"{x(i) - step / 2:.1f},{y(p['tolerance']):.1f} {x(i) + step / 2:.1f},{y(p['tolerance']):.1f}"
            for i, p in enumerate(points)]
    bottom = _TOP + plot_h
    svg.append(f'<polygon class="band" points="{_LEFT:.1f},{bottom:.1f} {" ".join(band)} '
               f'{_LEFT + step * len(points):.1f},{bottom:.1f}"/>')
    if first is not None:
        xf = x(first)
        anchor, dx = ("end", -4) if xf > _W / 2 else ("start", 4)
        svg.append(f'<line class="first" x1="{xf:.1f}" x2="{xf:.1f}" y1="{_TOP}" y2="{bottom:.1f}"/>'
                   f'<text class="first-label" x="{xf + dx:.1f}" y="{_TOP + 12}" text-anchor="{anchor}">'
                   f"{escape(mark)}: {escape(points[first]['name'])}</text>")
    for i, p in enumerate(points):
        over = "over" if p["error"] is None or p["error"] > p["tolerance"] else "within"  # inherited errors too
        tip = (f"{i + 1}. {p['name']}: error {_n(p['error'])}, tolerance {_n(p['tolerance'])}"
               + (f" ({p['detail']})" if p.get("detail") else ""))
        svg.append(f'<circle class="point {over}" cx="{x(i):.1f}" cy="{y(p["error"]):.1f}" r="4">'
                   f"<title>{escape(tip)}</title></circle>")
    if len(points) <= LABELLED:
        for i, label in enumerate(short_names([p["name"] for p in points])):
            label = label if len(label) <= 24 else "…" + label[-23:]
            svg.append(f'<text class="name" transform="translate({x(i) + 3:.1f},{bottom + 8:.1f}) rotate(45)">'
                       f"{escape(label)}</text>")
    svg.append("</svg>")
    return "".join(svg) + f'<p class="caption">{len(points)} {escape(caption)}</p>'


def short_names(names: list[str]) -> list[str]:
    """Axis labels: the names without the scope they all share (``StatefulPartitionedCall/model/``)."""
    parts = [n.split("/") for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return ["/".join(p[common:]) for p in parts]


def _n(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px}h2{font-size:16px;margin-top:24px}h3{font-size:14px}
.verdict{font-weight:600;padding:6px 10px;border-radius:4px;display:inline-block}
.pass{background:#e3f4e5;color:#1b5e20}.fail{background:#fde4e4;color:#b71c1c}
.caption{font-size:12px;color:#666;margin:0 0 0 64px}.first{background:#fff4e0;padding:6px 10px;border-left:4px solid #e65100}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
font-variant-numeric:tabular-nums}th{background:#f4f4f4}
svg .grid{stroke:#eee}svg .tick{font-size:11px;fill:#666}svg .band{fill:#d9f0dc}
svg .point.within{fill:#2e7d32}svg .point.over{fill:#c62828}
svg .name{font-size:10px;fill:#444}svg .first{stroke:#e65100;stroke-dasharray:4 3;stroke-width:1.5}svg .first-label{font-size:12px;fill:#e65100}"""
