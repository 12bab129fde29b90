"""Spatial reshaping: ZeroPadding, Cropping and UpSampling 1D/2D/3D (on channels-first tensors)."""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, emitter
from migrate.porting.emitters.conv import _check


def _pairs(value: Any, rank: int) -> list[tuple[int, int]]:
    if isinstance(value, int):
        return [(value, value)] * rank
    if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [tuple(value)]
    return [(v, v) if isinstance(v, int) else tuple(v) for v in value]


@emitter("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def zero_padding(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    pads = _pairs(layer.config["padding"], x.rank - 2)
    flat = tuple(v for b, a in reversed(pads) for v in (b, a))
    return Out(f"{ctx.need('F')}.pad({ctx.cf(x)}, {flat})", "cf")


@emitter("Cropping1D", "Cropping2D", "Cropping3D")
def cropping(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    crops = _pairs(layer.config["cropping"], x.rank - 2)
    index = ", ".join(f"{b or ''}:{-a if a else ''}" for b, a in crops)
    return Out(f"{ctx.cf(x)}[:, :, {index}]", "cf")


@emitter("UpSampling1D", "UpSampling2D", "UpSampling3D")
def upsampling(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    rank = x.rank - 2
    cfg = layer.config
    if rank == 1:
        return Out(f"{ctx.cf(x)}.repeat_interleave({cfg['size']}, dim=2)", "cf")
    _check(layer)
    size = cfg["size"]
    size = tuple(size) if isinstance(size, list) else (size,) * rank
    mode = cfg.get("interpolation", "nearest")
    if mode not in ("nearest", "bilinear"):
        raise Unsupported(f"UpSampling interpolation {mode!r}")
    factor = size[0] if len(set(size)) == 1 else size
    align = ", align_corners=False" if mode == "bilinear" else ""
    expr = f"{ctx.need('F')}.interpolate({ctx.cf(x)}, scale_factor={factor}, mode={mode!r}{align})"
    return Out(expr, "cf")
