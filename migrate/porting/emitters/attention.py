"""Attention layers. MultiHeadAttention as ``KerasMultiHeadAttention`` (migrate/porting/runtime/attention.py), copied into model.py: four nn.Linear
projections named like Keras' (query, key, value, attention_output) around F.scaled_dot_product_attention.

nn.MultiheadAttention fits only when num_heads * key_dim equals the model width; Keras allows any key_dim.
Attention (dot product) and AdditiveAttention are written out in forward (a few tensor ops each).
"""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter
from migrate.porting.runtime import KerasMultiHeadAttention


def _projection(layer: Layer, name: str, torch_name: str) -> dict[str, tuple[str, tuple]]:
    kernel = layer.weight(f"{name}/kernel").shape
    if name == "attention_output":  # (heads, value_dim, out)
        steps = (("reshape", (kernel[0] * kernel[1], kernel[2])), ("permute", (1, 0)))
        bias_steps: tuple = ()
    else:  # (in, heads, dim)
        steps = (("reshape", (kernel[0], kernel[1] * kernel[2])), ("permute", (1, 0)))
        bias_steps = (("reshape", (kernel[1] * kernel[2],)),)
    mapping = {f"{name}/kernel": (f"{torch_name}.weight", steps)}
    if f"{name}/bias" in layer.weights:
        mapping[f"{name}/bias"] = (f"{torch_name}.bias", bias_steps)
    return mapping


@emitter("MultiHeadAttention")
def multi_head_attention(layer: Layer, call: Call, ctx: Any) -> Out:
    cfg = layer.config
    if cfg.get("attention_axes") not in (None, [], [1]) or call.kwargs.get("return_attention_scores"):
        raise Unsupported("MultiHeadAttention with attention_axes or return_attention_scores")
    positional = [a for a in call.args if isinstance(a, Value)]
    query = call.kwargs.get("query", positional[0] if positional else None)
    value = call.kwargs.get("value", positional[1] if len(positional) > 1 else None)
    key = call.kwargs.get("key", positional[2] if len(positional) > 2 else None)
    mask = call.kwargs.get("attention_mask")
    if not isinstance(query, Value) or not isinstance(value, Value):
        raise Unsupported("MultiHeadAttention called without query and value tensors")
    heads, key_dim = cfg["num_heads"], cfg["key_dim"]
    value_dim = cfg.get("value_dim") or key_dim
    out_dim = cfg.get("output_shape") or query.shape[-1]
    if isinstance(out_dim, list):
        if len(out_dim) != 1:
            raise Unsupported(f"MultiHeadAttention output_shape {out_dim}")
        out_dim = out_dim[0]
    key_in = (key or value).shape[-1]
    helper = ctx.helper(KerasMultiHeadAttention)
    weights = {}
    for name in ("query", "key", "value", "attention_output"):
        weights.update(_projection(layer, name, name))
    dropout = float(cfg.get("dropout", 0.0))
    bias = "" if cfg.get("use_bias", True) else ", bias=False"
    mod = ctx.submodule(layer, f"{helper}(query_dim={query.shape[-1]}, key_dim_in={key_in}, "
                               f"value_dim_in={value.shape[-1]}, num_heads={heads}, key_dim={key_dim}, "
                               f"value_dim={value_dim}, output_dim={out_dim}"
                               f"{f', dropout={dropout!r}' if dropout else ''}{bias})", weights)
    args = [ctx.keras(query), ctx.keras(value)]
    if key is not None:
        args.append(f"key={ctx.keras(key)}")
    mask = _combined_mask(call, ctx)
    if mask is not None:
        args.append(f"mask={mask}")
    if call.kwargs.get("use_causal_mask"):
        args.append("causal=True")
    return Out(f"{mod}({', '.join(args)})")


def _combined_mask(call: Call, ctx: Any) -> str | None:
    """Keras' attention mask: ``attention_mask`` and the query (N, T), value and key (N, S) masks it hands
    the layer (``query._keras_mask``...), each as bool, and-ed as ``_compute_attention_mask`` does. Those masks
    are keywords of the call where a custom layer's ``call`` was traced; in a Functional graph Keras records
    none, and the renderer refuses a masked input whose mask no emitter read."""

    def as_bool(value: Value) -> str:
        return ctx.keras(value) if value.dtype == "bool" else f"{ctx.keras(value)}.bool()"

    parts: list[str] = []
    for name, index in (("query_mask", "[:, :, None]"), ("value_mask", "[:, None, :]"), ("key_mask", "[:, None, :]")):
        value = call.kwargs.get(name)
        if isinstance(value, Value):
            call.mask_read = True
            if f"{as_bool(value)}{index}" not in parts:  # key's mask is often value's
                parts.append(f"{as_bool(value)}{index}")
    mask = call.kwargs.get("attention_mask")
    if isinstance(mask, Value):
        parts.insert(0, as_bool(mask) if parts else ctx.keras(mask))
    return " & ".join(parts) if parts else None


@emitter("keras_hub>CachedMultiHeadAttention")
def cached_multi_head_attention(layer: Layer, call: Call, ctx: Any) -> Out:
    """keras-hub's MultiHeadAttention subclass (GPT-2's, OPT's decoders): called without a key/value cache, as
    a backbone's forward pass calls it, its call is MultiHeadAttention's; generation with a cache is not ported."""
    if call.kwargs.get("cache") is not None or call.kwargs.get("cache_update_index") is not None:
        raise Unsupported("CachedMultiHeadAttention with a key/value cache (generation)")
    return multi_head_attention(layer, call, ctx)


def _qkv(layer: Layer, call: Call, ctx: Any) -> tuple[str, str, str, Value]:
    if call.kwargs.get("mask") is not None or call.kwargs.get("use_causal_mask") or \
            call.kwargs.get("return_attention_scores"):
        raise Unsupported(f"{layer.class_name} with masks or return_attention_scores")
    values = [a for a in (call.args[0] if call.args and isinstance(call.args[0], list) else call.args)
              if isinstance(a, Value)]
    query, value = values[0], values[1]
    key = values[2] if len(values) > 2 else value
    return ctx.keras(query), ctx.keras(value), ctx.keras(key), query


def _weighted(layer: Layer, scores: str, value: str, ctx: Any) -> str:
    weights = f"torch.softmax({scores}, dim=-1)"
    dropout = float(layer.config.get("dropout", 0.0))
    if dropout:
        weights = f"{ctx.need('F')}.dropout({weights}, {dropout!r}, training=self.training)"
    return f"torch.bmm({weights}, {value})"


@emitter("Attention")
def attention(layer: Layer, call: Call, ctx: Any) -> Out:
    if layer.config.get("score_mode", "dot") != "dot":
        raise Unsupported("Attention(score_mode='concat')")
    query, value, key, _ = _qkv(layer, call, ctx)
    scores = f"torch.bmm({query}, {key}.transpose(1, 2))"
    if "scale" in layer.weights:
        shape = ", ".join(map(str, layer.weight("scale").shape))
        scale = ctx.tensor(layer, "scale", f"torch.ones({shape or '()'})", keras_name="scale", parameter=True)
        scores = f"{scores} * {scale}"
    return Out(_weighted(layer, scores, value, ctx))


@emitter("AdditiveAttention")
def additive_attention(layer: Layer, call: Call, ctx: Any) -> Out:
    query, value, key, q = _qkv(layer, call, ctx)
    summed = f"torch.tanh({query}.unsqueeze(2) + {key}.unsqueeze(1))"
    if "scale" in layer.weights:
        scale = ctx.tensor(layer, "scale", f"torch.ones({q.shape[-1]})", keras_name="scale", parameter=True)
        summed = f"{scale} * {summed}"
    return Out(_weighted(layer, f"({summed}).sum(dim=-1)", value, ctx))
