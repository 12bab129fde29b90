"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot."""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter


def aligned(call: Call, ctx: Any) -> tuple[list[str], str, Value]:
    """The inputs in one layout: channels-first when any same-rank input is, else Keras'."""
    values = call.inputs
    if any(v.flat_from is not None for v in values):
        raise Unsupported("merging a channels-first Flatten")
    cf = any(v.layout == "cf" for v in values) and len({v.rank for v in values}) == 1
    exprs = [ctx.cf(v) if cf else ctx.keras(v) for v in values]
    return exprs, "cf" if cf else "keras", values[0]


@emitter("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def elementwise(layer: Layer, call: Call, ctx: Any) -> Out:
    exprs, layout, _ = aligned(call, ctx)
    op = layer.class_name
    if op in ("Add", "Average"):
        expr = " + ".join(exprs)
        expr = f"({expr}) / {len(exprs)}" if op == "Average" else expr
    elif op == "Subtract":
        expr = f"{exprs[0]} - {exprs[1]}"
    elif op == "Multiply":
        expr = " * ".join(exprs)
    else:
        fn = "torch.maximum" if op == "Maximum" else "torch.minimum"
        expr = exprs[0]
        for other in exprs[1:]:
            expr = f"{fn}({expr}, {other})"
    return Out(expr, layout)


@emitter("Concatenate")
def concatenate(layer: Layer, call: Call, ctx: Any) -> Out:
    exprs, layout, first = aligned(call, ctx)
    axis = layer.config.get("axis", -1)
    dim = first.dim(axis) if layout == "cf" else axis % first.rank
    return Out(f"torch.cat([{', '.join(exprs)}], dim={dim})", layout)


@emitter("Dot")
def dot(layer: Layer, call: Call, ctx: Any) -> Out:
    a, b = (ctx.keras(v) for v in call.inputs)
    axes = layer.config["axes"]
    axes = axes if isinstance(axes, list) else [axes, axes]
    if layer.config.get("normalize"):
        a, b = (f"{ctx.need('F')}.normalize({v}, dim={ax})" for v, ax in zip((a, b), axes))
    ra, rb = call.inputs[0].rank, call.inputs[1].rank
    if ra == rb == 2:
        return Out(f"({a} * {b}).sum(dim=1, keepdim=True)")
    if ra == rb == 3:
        ax, bx = axes[0] % 3, axes[1] % 3
        left = a if ax == 2 else f"{a}.transpose(1, 2)"
        right = b if bx == 1 else f"{b}.transpose(1, 2)"
        return Out(f"torch.bmm({left}, {right})")
    raise Unsupported(f"Dot of ranks {ra} and {rb}")
