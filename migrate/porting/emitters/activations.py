"""Activation functions (the ``activation=`` argument of many layers) and the activation layers."""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter

#: Keras activation name -> torch expression template ({x}: the input, {dim}: the softmax axis).
ACTIVATIONS = {
    "linear": "{x}", "relu": "torch.relu({x})", "sigmoid": "torch.sigmoid({x})", "tanh": "torch.tanh({x})",
    "softmax": "torch.softmax({x}, dim={dim})", "log_softmax": "torch.log_softmax({x}, dim={dim})",
    "elu": "F.elu({x})", "selu": "F.selu({x})", "gelu": "F.gelu({x})",
    "swish": "F.silu({x})", "silu": "F.silu({x})", "hard_sigmoid": "F.hardsigmoid({x})",
    "hard_swish": "F.hardswish({x})", "hard_silu": "F.hardswish({x})", "softplus": "F.softplus({x})",
    "softsign": "F.softsign({x})", "relu6": "F.relu6({x})", "leaky_relu": "F.leaky_relu({x}, 0.2)",
    "exponential": "torch.exp({x})", "mish": "F.mish({x})",
    # functions other libraries register with Keras (serialized as "package>name"), by their definition
    "keras_hub>gelu_approximate": "F.gelu({x}, approximate=\"tanh\")",  # keras.activations.gelu(x, approximate=True)
}


def activation(name: Any, x: str, ctx: Any, dim: int = -1) -> str:
    """``x`` through the Keras activation ``name`` (a string or a serialized function)."""
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    if name is None or name == "linear":
        return x
    if name not in ACTIVATIONS:
        raise Unsupported(f"activation {name!r} has no torch equivalent in tf2torch yet")
    template = ACTIVATIONS[name]
    if "F." in template:
        ctx.need("F")
    return template.format(x=x, dim=dim)


@emitter("Activation")
def activation_layer(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    return Out(activation(layer.config["activation"], x.var, ctx, dim=x.dim(-1)), x.layout)


@emitter("ReLU")
def relu(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    top, slope, threshold = cfg.get("max_value"), cfg.get("negative_slope", 0.0), cfg.get("threshold", 0.0)
    if not slope and not threshold:
        if top is None:
            return Out(f"torch.relu({x.var})", x.layout)
        if float(top) == 6.0:
            return Out(f"{ctx.need('F')}.relu6({x.var})", x.layout)
        return Out(f"torch.clamp({x.var}, 0.0, {float(top)!r})", x.layout)
    expr = f"torch.where({x.var} >= {threshold!r}, {x.var}, {slope!r} * ({x.var} - {threshold!r}))"
    if top is not None:
        expr = f"torch.clamp({expr}, max={float(top)!r})"
    return Out(expr, x.layout)


@emitter("LeakyReLU")
def leaky_relu(layer: Layer, call: Call, ctx: Any) -> Out:
    slope = layer.config.get("negative_slope", layer.config.get("alpha", 0.3))
    return Out(f"{ctx.need('F')}.leaky_relu({call.input.var}, {slope!r})", call.input.layout)


@emitter("ELU")
def elu(layer: Layer, call: Call, ctx: Any) -> Out:
    return Out(f"{ctx.need('F')}.elu({call.input.var}, {layer.config.get('alpha', 1.0)!r})", call.input.layout)


@emitter("Softmax")
def softmax(layer: Layer, call: Call, ctx: Any) -> Out:
    axis = layer.config.get("axis", -1)
    if isinstance(axis, list):
        raise Unsupported("softmax over several axes")
    x = call.input
    mask = call.mask if "mask" in call.kwargs else (call.args[1] if len(call.args) > 1 else None)
    if isinstance(mask, Value):  # Softmax()(scores, mask), as keras-hub's attention layers call it. As Keras:
        # kept where the mask is true (> 0.5), -1e9 elsewhere; rows with no kept entry give zeros
        keep = ctx.keras(mask) if mask.dtype == "bool" else f"({ctx.keras(mask)} > 0.5)"
        fill = "-3e4" if x.dtype == "float16" else "-1e9"
        return Out(f"torch.where({keep}, torch.softmax(torch.where({keep}, {ctx.keras(x)}, {fill}), dim={axis}), 0.0)")
    return Out(f"torch.softmax({x.var}, dim={x.dim(axis)})", x.layout)


@emitter("PReLU")
def prelu(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    alpha = layer.weight("alpha")
    shared = sorted(a % x.rank for a in (layer.config.get("shared_axes") or []))
    if x.rank == 2 or shared == list(range(1, x.rank - 1)):
        channels = x.shape[-1]
        mod = ctx.submodule(layer, f"nn.PReLU({channels})",
                            {"alpha": ("weight", (("reshape", (channels,)),))})
        return Out(f"{mod}({ctx.cf(x) if x.rank > 2 else x.var})", "cf" if x.rank > 2 else "keras")
    # alpha per position (Keras' shape: the input's without batch, shared axes 1): a parameter in x's layout
    if len(alpha.shape) != x.rank - 1:
        raise Unsupported(f"PReLU with alpha of shape {alpha.shape} for an input of rank {x.rank}")
    steps: tuple = ()
    shape = tuple(alpha.shape)
    if x.layout == "cf":
        order = (x.rank - 2, *range(x.rank - 2))  # (*spatial, C) -> (C, *spatial)
        steps = (("permute", order),)
        shape = tuple(shape[i] for i in order)
    weight = ctx.tensor(layer, "alpha", f"torch.zeros{shape}", keras_name="alpha", steps=steps, parameter=True)
    return Out(f"torch.where({x.var} >= 0, {x.var}, {weight} * {x.var})", x.layout)
