"""Preprocessing and small per-element layers: Normalization, UnitNormalization, LayerScale (ConvNeXt),
StochasticDepth, Resizing, CenterCrop."""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter
from migrate.porting.emitters.core import mask_dropout

EPSILON = 1e-7  # keras.backend.epsilon()


def _channel_view(x: Value, channels: int) -> str:
    """The shape a per-channel vector takes to broadcast against ``x`` in its torch layout."""
    if x.layout == "cf":
        return f"1, {channels}" + ", 1" * (x.rank - 2)
    return "1, " * (x.rank - 1) + str(channels)


@emitter("Normalization")
def normalization(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, x.rank - 1) or cfg.get("invert"):
        raise Unsupported(f"Normalization over axis {axis} or with invert=True")
    channels = x.shape[-1]
    view = _channel_view(x, channels)
    stats = {}
    for name in ("mean", "variance"):
        if name in layer.weights:
            stats[name] = ctx.tensor(layer, name, f"torch.zeros({view})", keras_name=name,
                                     steps=(("reshape", tuple(int(v) for v in view.split(", "))),))
        else:
            values = cfg[name] if isinstance(cfg[name], list) else [cfg[name]] * channels
            stats[name] = ctx.tensor(layer, name, f"torch.tensor({[float(v) for v in values]}).reshape({view})")
    expr = f"({x.var} - {stats['mean']}) / torch.sqrt({stats['variance']}).clamp(min={EPSILON})"
    return Out(expr, x.layout)


@emitter("UnitNormalization")
def unit_normalization(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    axis = layer.config.get("axis", -1)
    dims = [x.dim(a) for a in (axis if isinstance(axis, list) else [axis])]
    dim = dims[0] if len(dims) == 1 else tuple(dims)
    return Out(f"{ctx.need('F')}.normalize({x.var}, dim={dim}, eps=1e-6)", x.layout)


@emitter("LayerScale")
def layer_scale(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    (keras_name,) = layer.weights  # "gamma" when built, "variable" once reloaded from a .keras file
    channels = layer.weight(keras_name).shape[0]
    gamma = ctx.tensor(layer, "gamma", f"torch.ones({channels})", keras_name=keras_name, parameter=True)
    if x.layout == "cf":
        gamma = f"{gamma}.reshape({_channel_view(x, channels)})"
    return Out(f"{x.var} * {gamma}", x.layout)


@emitter("StochasticDepth")
def stochastic_depth(layer: Layer, call: Call, ctx: Any) -> Out:
    """Keras' StochasticDepth drops the whole residual branch per sample in training, scaled by 1/keep."""
    x = call.input
    rate = float(layer.config.get("rate", layer.config.get("drop_path_rate", 0.0)))
    if not rate:
        return Out(x.var, x.layout)
    return mask_dropout(layer, x, rate, [f"{x.var}.shape[0]", *["1"] * (x.rank - 1)], ctx)


@emitter("Resizing")
def resizing(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    mode = cfg.get("interpolation", "bilinear")
    if mode != "bilinear" or cfg.get("crop_to_aspect_ratio") or cfg.get("pad_to_aspect_ratio"):
        raise Unsupported(f"Resizing(interpolation={mode!r}) or with aspect-ratio crop/pad (bilinear only)")
    size = (cfg["height"], cfg["width"])
    antialias = ", antialias=True" if cfg.get("antialias") else ""
    return Out(f"{ctx.need('F')}.interpolate({ctx.cf(x)}, size={size}, mode='bilinear', align_corners=False"
               f"{antialias})", "cf")


@emitter("CenterCrop")
def center_crop(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None or h < cfg["height"] or w < cfg["width"]:
        raise Unsupported("CenterCrop needs static input sizes at least as large as the crop")
    top, left = (h - cfg["height"]) // 2, (w - cfg["width"]) // 2
    return Out(f"{ctx.cf(x)}[:, :, {top}:{top + cfg['height']}, {left}:{left + cfg['width']}]", "cf")
