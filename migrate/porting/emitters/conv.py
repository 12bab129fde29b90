"""Convolutions: Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, Conv*DTranspose.

TF's 'same' padding puts the odd pixel at the end (``migrate/core/padding.py``): symmetric pads become
torch's ``padding=``, others an explicit ``F.pad`` with constants when the sizes are known at port time,
and ``pad_same`` (copied into model.py) when a strided dim's size is known only at run time.
"""

from __future__ import annotations

from typing import Any

from migrate.core.padding import static_same_pads
from migrate.porting.emitters.activations import activation
from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter
from migrate.porting.runtime import pad_same

#: Keras kernel (*spatial, in, out) -> torch (out, in, *spatial), per spatial rank.
KERNEL_PERM = {1: (2, 1, 0), 2: (3, 2, 0, 1), 3: (4, 3, 0, 1, 2)}


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),) * rank


def padding_args(layer: Layer, x: Value, kernel: tuple[int, ...], stride: tuple[int, ...],
                 dilation: tuple[int, ...], ctx: Any) -> tuple[str, str]:
    """(constructor padding argument, forward input expression) for the layer's padding mode."""
    mode = layer.config.get("padding", "valid")
    inp = ctx.cf(x)
    if mode == "valid":
        return "", inp
    if mode == "causal":
        return "", f"{ctx.need('F')}.pad({inp}, ({(kernel[0] - 1) * dilation[0]}, 0))"
    pads = static_same_pads(x.shape[1:-1], kernel, stride, dilation)
    if pads is None:  # a strided dim of dynamic size: the pads follow x.shape at run time
        return "", f"{ctx.helper(pad_same)}({inp}, {kernel}, {stride}, {dilation})"
    if all(b == a for b, a in pads):
        if all(b == 0 for b, _ in pads):
            return "", inp
        sym = tuple(b for b, _ in pads)
        return f", padding={sym[0] if len(set(sym)) == 1 else sym}", inp
    flat = tuple(v for b, a in reversed(pads) for v in (b, a))
    return "", f"{ctx.need('F')}.pad({inp}, {flat})"


def _check(layer: Layer) -> None:
    if layer.config.get("data_format", "channels_last") != "channels_last":
        raise Unsupported("data_format='channels_first' layers are not supported yet")


def _geometry(layer: Layer, rank: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    cfg = layer.config
    return (_tuple(cfg["kernel_size"], rank), _tuple(cfg.get("strides", 1), rank),
            _tuple(cfg.get("dilation_rate", 1), rank))


def _args(kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> str:
    def one(v: tuple[int, ...]) -> Any:
        return v[0] if len(set(v)) == 1 else v

    text = f"kernel_size={one(kernel)}"
    if any(s != 1 for s in stride):
        text += f", stride={one(stride)}"
    if any(d != 1 for d in dilation):
        text += f", dilation={one(dilation)}"
    return text


@emitter("Conv1D", "Conv2D", "Conv3D")
def conv(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    rank = x.rank - 2
    kernel, stride, dilation = _geometry(layer, rank)
    cfg = layer.config
    groups = cfg.get("groups", 1)
    pad_arg, inp = padding_args(layer, x, kernel, stride, dilation, ctx)
    use_bias = cfg.get("use_bias", True)
    extra = (f", groups={groups}" if groups != 1 else "") + ("" if use_bias else ", bias=False")
    weights = {"kernel": ("weight", (("permute", KERNEL_PERM[rank]),))}
    if use_bias:
        weights["bias"] = ("bias", ())
    mod = ctx.submodule(layer, f"nn.Conv{rank}d({x.shape[-1]}, {cfg['filters']}, {_args(kernel, stride, dilation)}"
                               f"{pad_arg}{extra})", weights)
    return Out(activation(cfg.get("activation"), f"{mod}({inp})", ctx, dim=1), "cf")


@emitter("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    rank = x.rank - 2
    kernel, stride, dilation = _geometry(layer, rank)
    cfg = layer.config
    channels, mult = x.shape[-1], cfg.get("depth_multiplier", 1)
    pad_arg, inp = padding_args(layer, x, kernel, stride, dilation, ctx)
    use_bias = cfg.get("use_bias", True)
    # Keras (*k, in, mult) -> torch (in * mult, 1, *k); output channel c * mult + m in both
    perm = (rank, rank + 1, *range(rank))
    name = "kernel" if "kernel" in layer.weights else "depthwise_kernel"  # Keras 3 | Keras 2
    weights = {name: ("weight", (("permute", perm), ("reshape", (channels * mult, 1, *kernel))))}
    if use_bias:
        weights["bias"] = ("bias", ())
    mod = ctx.submodule(layer, f"nn.Conv{rank}d({channels}, {channels * mult}, {_args(kernel, stride, dilation)}"
                               f"{pad_arg}, groups={channels}{'' if use_bias else ', bias=False'})", weights)
    return Out(activation(cfg.get("activation"), f"{mod}({inp})", ctx, dim=1), "cf")


@emitter("SeparableConv1D", "SeparableConv2D")
def separable(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    rank = x.rank - 2
    kernel, stride, dilation = _geometry(layer, rank)
    cfg = layer.config
    channels, mult, filters = x.shape[-1], cfg.get("depth_multiplier", 1), cfg["filters"]
    pad_arg, inp = padding_args(layer, x, kernel, stride, dilation, ctx)
    use_bias = cfg.get("use_bias", True)
    perm = (rank, rank + 1, *range(rank))
    weights = {"depthwise_kernel": ("0.weight", (("permute", perm), ("reshape", (channels * mult, 1, *kernel)))),
               "pointwise_kernel": ("1.weight", (("permute", KERNEL_PERM[rank]),))}
    if use_bias:
        weights["bias"] = ("1.bias", ())
    mod = ctx.submodule(
        layer,
        f"nn.Sequential(nn.Conv{rank}d({channels}, {channels * mult}, {_args(kernel, stride, dilation)}{pad_arg}, "
        f"groups={channels}, bias=False), nn.Conv{rank}d({channels * mult}, {filters}, kernel_size=1"
        f"{'' if use_bias else ', bias=False'}))", weights)
    return Out(activation(cfg.get("activation"), f"{mod}({inp})", ctx, dim=1), "cf")


@emitter("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    rank = x.rank - 2
    kernel, stride, dilation = _geometry(layer, rank)
    cfg = layer.config
    if cfg.get("output_padding") is not None or any(d != 1 for d in dilation):
        raise Unsupported("transposed convolution with output_padding or dilation")
    crop = ""
    if cfg.get("padding", "valid") == "same":
        # Keras output = size * stride; torch's full output is (size - 1) * stride + k: crop the excess
        parts = []
        for k, s in zip(kernel, stride):
            total = max(k - s, 0)
            before = total // 2
            after = total - before
            parts.append(f"{before or ''}:{-after if after else ''}")
        crop = "[:, :, " + ", ".join(parts) + "]" if any(p != ":" for p in parts) else ""
    # a kernel smaller than its stride: Keras' output is still size * stride, the last s - k rows only bias
    short = tuple(max(s - k, 0) for k, s in zip(kernel, stride))
    extra = f", output_padding={short[0] if len(set(short)) == 1 else short}" if any(short) else ""
    use_bias = cfg.get("use_bias", True)
    # Keras kernel (*k, out, in) -> torch (in, out, *k)
    perm = (rank + 1, rank, *range(rank))
    weights = {"kernel": ("weight", (("permute", perm),))}
    if use_bias:
        weights["bias"] = ("bias", ())
    mod = ctx.submodule(layer, f"nn.ConvTranspose{rank}d({x.shape[-1]}, {cfg['filters']}, "
                               f"{_args(kernel, stride, dilation)}{extra}{'' if use_bias else ', bias=False'})", weights)
    return Out(activation(cfg.get("activation"), f"{mod}({ctx.cf(x)}){crop}", ctx, dim=1), "cf")
