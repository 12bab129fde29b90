"""Core layers: Dense, Embedding, Flatten, Reshape, Permute, RepeatVector, Rescaling, Identity, dropout family."""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.activations import activation
from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter
from migrate.porting.runtime import MaskDropout


@emitter("Dense")
def dense(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    kernel = layer.weight("kernel")
    steps: tuple = (("permute", (1, 0)),)
    if x.flat_from is not None:  # a Flatten of a channels-first tensor: reorder the kernel's rows instead
        steps = (("flatten_order", x.flat_from), *steps)
        inp = x.var
    else:
        inp = ctx.keras(x)
    weights = {"kernel": ("weight", steps)}
    use_bias = cfg.get("use_bias", True)
    if use_bias:
        weights["bias"] = ("bias", ())
    mod = ctx.submodule(layer, f"nn.Linear({kernel.shape[0]}, {kernel.shape[1]}{'' if use_bias else ', bias=False'})",
                        weights)
    return Out(activation(cfg.get("activation"), f"{mod}({inp})", ctx), "keras")


@emitter("EinsumDense")
def einsum_dense(layer: Layer, call: Call, ctx: Any) -> Out:
    """``nn.Linear`` when the equation is a Dense on the last axis, else ``torch.einsum`` with the kernel as a
    parameter; the bias (shaped by Keras over the trailing output axes) broadcasts the same way in torch."""
    x, cfg = call.input, layer.config
    equation = cfg["equation"].replace(" ", "")
    (source, kernel_spec), target = equation.split("->")[0].split(","), equation.split("->")[1]
    bias_axes = cfg.get("bias_axes") or ""
    kernel = layer.weight("kernel")
    if set(layer.weights) - {"kernel", "bias"}:
        raise Unsupported(f"EinsumDense with weights {sorted(set(layer.weights) - {'kernel', 'bias'})}")
    inp = ctx.keras(x)
    dense = (len(kernel_spec) == 2 and source and kernel_spec[0] == source[-1] and
             target == source[:-1] + kernel_spec[1] and bias_axes in ("", kernel_spec[1]))
    if dense:
        weights = {"kernel": ("weight", (("permute", (1, 0)),))}
        if bias_axes:
            weights["bias"] = ("bias", ())
        mod = ctx.submodule(layer, f"nn.Linear({kernel.shape[0]}, {kernel.shape[1]}"
                                   f"{'' if bias_axes else ', bias=False'})", weights)
        return Out(activation(cfg.get("activation"), f"{mod}({inp})", ctx))
    weight = ctx.tensor(layer, "kernel", f"torch.zeros{tuple(kernel.shape)}", keras_name="kernel", parameter=True)
    expr = f"torch.einsum({equation!r}, {inp}, {weight})"
    if bias_axes:
        bias = ctx.tensor(layer, "bias", f"torch.zeros{tuple(layer.weight('bias').shape)}", keras_name="bias",
                          parameter=True)
        expr = f"{expr} + {bias}"
    return Out(activation(cfg.get("activation"), expr, ctx))


@emitter("Embedding")
def embedding(layer: Layer, call: Call, ctx: Any) -> Out:
    cfg = layer.config  # with mask_zero, Keras' mask is a separate ``tokens != 0`` node of the graph
    mod = ctx.submodule(layer, f"nn.Embedding({cfg['input_dim']}, {cfg['output_dim']})",
                        {"embeddings": ("weight", ())})
    x = call.input
    inp = x.var if x.dtype == "int64" else f"{x.var}.long()"
    return Out(f"{mod}({inp})", "keras")


@emitter("ReversibleEmbedding")
def reversible_embedding(layer: Layer, call: Call, ctx: Any) -> Out:
    """keras.layers.ReversibleEmbedding (keras-hub's token embedding): an ``nn.Embedding`` looking ids up; called
    with ``reverse=True``, the projection back to the vocabulary, ``F.linear`` with the embedding table (tied)
    or the layer's ``reverse_embeddings`` parameter, soft-capped by ``tanh`` as Keras when ``logit_soft_cap``."""
    cfg = layer.config
    mod = ctx.submodule(layer, f"nn.Embedding({cfg['input_dim']}, {cfg['output_dim']})",
                        {"embeddings": ("weight", ())})
    reverse = call.kwargs.get("reverse", call.args[1] if len(call.args) > 1 else False)
    if not isinstance(reverse, bool):
        raise Unsupported("a ReversibleEmbedding call whose reverse argument is not a constant")
    x = call.input
    if not reverse:
        return Out(f"{mod}({x.var if x.dtype == 'int64' else f'{x.var}.long()'})", "keras")
    if cfg.get("reverse_dtype") not in (None, "float32"):
        raise Unsupported(f"ReversibleEmbedding with reverse_dtype={cfg['reverse_dtype']!r}")
    if cfg.get("tie_weights", True):
        logits = f"{ctx.need('F')}.linear({ctx.keras(x)}, {mod}.weight)"
    else:  # Keras' reverse_embeddings is (output_dim, input_dim): F.linear takes its transpose
        weight = ctx.tensor(layer, "reverse_embeddings", f"torch.zeros({cfg['input_dim']}, {cfg['output_dim']})",
                            keras_name="reverse_embeddings", steps=(("permute", (1, 0)),), parameter=True)
        logits = f"{ctx.need('F')}.linear({ctx.keras(x)}, {weight})"
    cap = cfg.get("logit_soft_cap")
    return Out(f"torch.tanh({logits} / {cap!r}) * {cap!r}" if cap is not None else logits, "keras")


@emitter("Masking")
def masking(layer: Layer, call: Call, ctx: Any) -> Out:
    """Keras zeroes the masked steps (every feature equal to mask_value); the mask is a separate graph node."""
    x, value = call.input, float(layer.config.get("mask_value", 0.0))
    if value == 0.0:
        return Out(x.var, x.layout)  # masked steps are zeros already
    inp = ctx.keras(x)
    return Out(f"{inp} * ({inp} != {value!r}).any(dim=-1, keepdim=True)")


@emitter("Flatten")
def flatten(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    consumers = (call.output_consumers or [[]])[0]
    if x.layout == "cf" and all(d == 1 for d in x.shape[1:-1]):
        return Out(f"torch.flatten({x.var}, 1)", "keras")  # (C, 1, 1) flattens like (1, 1, C)
    if x.layout == "cf" and consumers and all(c == "Dense" for c in consumers) and None not in x.shape[1:]:
        # torch flattens (C, *spatial); the Dense after it gets its kernel rows reordered at port time
        return Out(f"torch.flatten({x.var}, 1)", "keras", flat_from=tuple(x.shape[1:]))
    return Out(f"torch.flatten({ctx.keras(x)}, 1)", "keras")


@emitter("Reshape")
def reshape(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    target = tuple(layer.config["target_shape"])
    inp = ctx.keras(x)
    if -1 in target:
        return Out(f"{inp}.reshape({inp if x.layout == 'keras' else x.var}.shape[0], {', '.join(map(str, target))})")
    return Out(f"{inp}.reshape(-1, {', '.join(map(str, target))})")


@emitter("Permute")
def permute(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    perm = (0, *layer.config["dims"])
    if x.layout == "cf":  # compose with the channels-first -> Keras permutation: one permute (or none)
        to_keras = (0, *range(2, x.rank), 1)
        perm = tuple(to_keras[p] for p in perm)
        if perm == tuple(range(x.rank)):
            return Out(x.var)
        return Out(f"{x.var}.permute({', '.join(map(str, perm))})")
    return Out(f"{ctx.keras(x)}.permute({', '.join(map(str, perm))})")


@emitter("RepeatVector")
def repeat_vector(layer: Layer, call: Call, ctx: Any) -> Out:
    return Out(f"{call.input.var}.unsqueeze(1).repeat(1, {layer.config['n']}, 1)")


@emitter("Rescaling")
def rescaling(layer: Layer, call: Call, ctx: Any) -> Out:
    scale, offset = layer.config.get("scale", 1.0), layer.config.get("offset", 0.0)
    if isinstance(scale, (list, dict)) or isinstance(offset, (list, dict)):
        raise Unsupported("Rescaling with per-channel scale/offset")
    x = call.input
    expr = f"{x.var} * {float(scale)!r}" + (f" + {float(offset)!r}" if offset else "")
    return Out(expr, x.layout, x.flat_from)


@emitter("Identity")
def identity(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    return Out(x.var, x.layout, x.flat_from)


def _no_noise_shape(layer: Layer) -> None:
    if layer.config.get("noise_shape") is not None:
        raise Unsupported("Dropout with noise_shape")


def mask_dropout(layer: Layer, x: Value, rate: float, dims: list[str], ctx: Any) -> Out:
    """``MaskDropout(rate)(x, dims)``: DIMS in x's torch layout."""
    mod = ctx.submodule(layer, f"{ctx.helper(MaskDropout)}({rate!r})")
    return Out(f"{mod}({x.var}, ({', '.join(dims)},))", x.layout)


@emitter("Dropout")
def dropout(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    rate = float(layer.config["rate"])
    noise_shape = layer.config.get("noise_shape")
    if noise_shape is None:
        mod = ctx.submodule(layer, f"nn.Dropout({rate!r})")
        return Out(f"{mod}({x.var})", x.layout, x.flat_from)
    # one keep/drop decision per noise_shape element, broadcast over its 1-sized axes
    if len(noise_shape) != x.rank or x.flat_from is not None:
        raise Unsupported(f"Dropout with noise_shape {noise_shape}")
    dims = [f"{x.var}.shape[{x.dim(i)}]" if d is None else str(d) for i, d in enumerate(noise_shape)]
    if x.layout == "cf":
        dims = [dims[0], dims[-1], *dims[1:-1]]
    return mask_dropout(layer, x, rate, dims, ctx)


@emitter("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def spatial_dropout(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    mod = ctx.submodule(layer, f"nn.Dropout{x.rank - 2}d({float(layer.config['rate'])!r})")
    return Out(f"{mod}({ctx.cf(x)})", "cf")


@emitter("AlphaDropout")
def alpha_dropout(layer: Layer, call: Call, ctx: Any) -> Out:
    _no_noise_shape(layer)
    x = call.input
    mod = ctx.submodule(layer, f"nn.AlphaDropout({float(layer.config['rate'])!r})")
    return Out(f"{mod}({x.var})", x.layout, x.flat_from)


@emitter("GaussianNoise")
def gaussian_noise(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    stddev = float(layer.config["stddev"])
    return Out(f"{x.var} + {stddev!r} * torch.randn_like({x.var}) if self.training else {x.var}", x.layout,
               x.flat_from)


@emitter("GaussianDropout")
def gaussian_dropout(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    rate = float(layer.config["rate"])
    std = (rate / (1.0 - rate)) ** 0.5
    return Out(f"{x.var} * (1.0 + {std!r} * torch.randn_like({x.var})) if self.training else {x.var}", x.layout,
               x.flat_from)
