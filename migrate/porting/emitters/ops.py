"""keras.ops calls recorded in a Functional graph (``x + 3.0``, ``x * y``): MobileNetV3's hard sigmoid,
ConvNeXt's residual additions. Registered as ``ops.<Name>`` so they never collide with the merge layers."""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter

BINARY = {"ops.Add": "+", "ops.Subtract": "-", "ops.Multiply": "*", "ops.Divide": "/", "ops.TrueDivide": "/"}


def _operands(call: Call, ctx: Any) -> tuple[list[str], str]:
    values = [a for a in call.args if isinstance(a, Value)]
    if any(v.flat_from is not None for v in values):
        raise Unsupported("an op on a channels-first Flatten")
    cf = any(v.layout == "cf" for v in values)
    if cf and len({v.rank for v in values}) != 1:
        raise Unsupported("an op broadcasting tensors of different ranks in channels-first layout")
    exprs = []
    for arg in call.args:
        if isinstance(arg, Value):
            exprs.append(ctx.cf(arg) if cf else ctx.keras(arg))
        else:
            exprs.append(ctx.literal(arg))  # a number, a scalar tensor, a size read off a tensor
    return exprs, "cf" if cf else "keras"


@emitter(*BINARY)
def binary(layer: Layer, call: Call, ctx: Any) -> Out:
    exprs, layout = _operands(call, ctx)
    if len(exprs) != 2:
        raise Unsupported(f"{layer.class_name} with {len(exprs)} arguments")
    return Out(f"{exprs[0]} {BINARY[layer.class_name]} {exprs[1]}", layout)


@emitter("ops.NotEqual")
def not_equal(layer: Layer, call: Call, ctx: Any) -> Out:
    """``tokens != 0``: the mask of ``Embedding(mask_zero=True)`` (and of ``Masking``, with ``ops.Any``)."""
    exprs, layout = _operands(call, ctx)
    x = call.input
    name = f"{x.var}_mask" if x.rank == 2 else f"{x.var}_nonzero" if x.rank > 2 else None
    return Out(f"{exprs[0]} != {exprs[1]}", layout, name=name)


@emitter("ops.Any")
def any_(layer: Layer, call: Call, ctx: Any) -> Out:
    axis, keep = layer.config.get("axis"), layer.config.get("keepdims", False)
    if not isinstance(axis, int):
        raise Unsupported(f"ops.any over axis {axis!r}")
    x = call.input
    name = f"{x.var.removesuffix('_nonzero')}_mask" if x.var.endswith("_nonzero") else None
    return Out(f"{ctx.keras(x)}.any(dim={axis}{', keepdim=True' if keep else ''})", name=name)
