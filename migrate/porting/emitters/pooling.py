"""Pooling: Max/Average 1D/2D/3D and the Global* layers.

'same' pooling is a torch pooling layer with ``padding=``/``ceil_mode`` where one matches TF's pads (which
put the odd element after: ``migrate/core/padding.py``); otherwise the input is padded explicitly (``-inf``
for max; ``keras_avg_pool_same`` divides averages by the count of real elements), by ``pad_same`` at run
time when a strided dim's size is dynamic.
"""

from __future__ import annotations

import math
from typing import Any

from migrate.core.padding import static_same_pads
from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, emitter
from migrate.porting.emitters.conv import _check, _tuple
from migrate.porting.runtime import keras_avg_pool_same, pad_same


def _torch_len(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    out = (size + 2 * p - k + ((s - 1) if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


@emitter("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
         "AveragePooling3D")
def pool(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    rank = x.rank - 2
    cfg = layer.config
    kind = "Max" if layer.class_name.startswith("Max") else "Avg"
    kernel = _tuple(cfg["pool_size"], rank)
    stride = _tuple(cfg.get("strides") or cfg["pool_size"], rank)
    args = f"{kernel[0] if len(set(kernel)) == 1 else kernel}"
    if stride != kernel:
        args += f", stride={stride[0] if len(set(stride)) == 1 else stride}"
    if cfg.get("padding", "valid") == "same":
        pads = static_same_pads(x.shape[1:-1], kernel, stride, (1,) * rank)
        if pads is None or any(b > k // 2 or (a != b and (size is None or _torch_len(size, k, s, b, True) !=
                                                           math.ceil(size / s)))
                               for size, k, s, (b, a) in zip(x.shape[1:-1], kernel, stride, pads)):
            return _explicit_same(layer, call, ctx, kind, args, kernel, stride, pads)
        before = tuple(b for b, _ in pads)
        ceil = any(a != b for b, a in pads)
        if any(before):
            args += f", padding={before[0] if len(set(before)) == 1 else before}"
        if ceil:
            args += ", ceil_mode=True"
        if kind == "Avg" and (any(before) or ceil):
            args += ", count_include_pad=False"  # TF averages over the real elements only
    mod = ctx.submodule(layer, f"nn.{kind}Pool{rank}d({args})")
    return Out(f"{mod}({ctx.cf(x)})", "cf")


def _explicit_same(layer: Layer, call: Call, ctx: Any, kind: str, args: str, kernel: tuple[int, ...],
                   stride: tuple[int, ...], pads: list[tuple[int, int]] | None) -> Out:
    """'same' pooling whose pads no torch pooling layer takes: pad explicitly (at run time when ``pads`` is
    None), then pool; averages divide by the pooled count of real elements."""
    inp = ctx.cf(call.input)
    if kind == "Avg":
        return Out(f"{ctx.helper(keras_avg_pool_same)}({inp}, {kernel}, {stride})", "cf")
    if pads is None:
        padded = f"{ctx.helper(pad_same)}({inp}, {kernel}, {stride}, {(1,) * len(kernel)}, value=float('-inf'))"
    else:
        padded = f"{ctx.need('F')}.pad({inp}, {tuple(p for pair in reversed(pads) for p in pair)}, value=float('-inf'))"
    mod = ctx.submodule(layer, f"nn.MaxPool{len(kernel)}d({args})")
    return Out(f"{mod}({padded})", "cf")


@emitter("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
         "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")
def global_pool(layer: Layer, call: Call, ctx: Any) -> Out:
    _check(layer)
    x = call.input
    keep = bool(layer.config.get("keepdims", False))
    dims = tuple(range(2, x.rank)) if x.layout == "cf" else tuple(range(1, x.rank - 1))
    fn = "mean" if "Average" in layer.class_name else "amax"
    mask = call.mask
    if mask is not None:
        if layer.class_name != "GlobalAveragePooling1D":
            raise Unsupported("a mask on global pooling other than GlobalAveragePooling1D")
        steps = f"{ctx.keras(mask)}.unsqueeze(-1)"  # Keras averages over the valid steps only
        return Out(f"({ctx.keras(x)} * {steps}).sum(dim=1{', keepdim=True' if keep else ''}) / "
                   f"{steps}.sum(dim=1{', keepdim=True' if keep else ''})")
    dims_text = str(dims[0]) if len(dims) == 1 else str(dims)
    expr = f"{x.var}.{fn}(dim={dims_text}{', keepdim=True' if keep else ''})"
    return Out(expr, x.layout if keep else "keras")
