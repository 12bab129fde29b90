"""BatchNormalization and LayerNormalization with Keras' train-time semantics.

torch's BatchNorm ``momentum`` weighs the new batch (Keras' weighs the old statistics): 1 - keras_momentum;
the moving variance follows Keras (biased batch variance) through ``KerasBatchNorm``
(``migrate/porting/runtime/normalization.py``).
A Keras-2 SavedModel's (tf_keras) 4-D and 5-D BatchNormalization runs TF's fused kernel, whose moving
variance takes the unbiased batch variance: torch's own nn.BatchNorm2d/3d does the same.
"""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, emitter
from migrate.porting.runtime import KerasBatchNorm


@emitter("BatchNormalization")
def batch_norm(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not isinstance(axis, int) or axis % x.rank != x.rank - 1:
        raise Unsupported(f"BatchNormalization over axis {axis} (only the channel axis, -1)")
    if cfg.get("renorm") or cfg.get("synchronized"):
        raise Unsupported("BatchNormalization(renorm=True or synchronized=True)")
    momentum = round(1.0 - float(cfg.get("momentum", 0.99)), 10)
    eps = float(cfg.get("epsilon", 1e-3))
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    channels = x.shape[-1]
    weights = {"moving_mean": ("running_mean", ()), "moving_variance": ("running_var", ())}
    if scale:
        weights["gamma"] = ("weight", ())
    if center:
        weights["beta"] = ("bias", ())
    affine = "" if scale or center else ", affine=False"
    frozen = not layer.trainable
    if ctx.renderer.graph.get("source_kind") == "saved_model" and x.rank in (4, 5):  # tf_keras: fused
        norm = f"nn.BatchNorm{x.rank - 2}d"
    else:
        norm = ctx.helper(KerasBatchNorm)
    mod = ctx.submodule(layer, f"{norm}({channels}, eps={eps!r}, momentum={momentum!r}{affine})",
                        weights, eval_only=frozen)
    if layer.name not in ctx.renderer.semantics_done:
        ctx.renderer.semantics_done.add(layer.name)
        ctx.renderer.train_semantics.append({"layer": layer.name, "momentum": momentum, "eps": eps,
                                             "inference_mode_in_training": frozen})
        for flag, param in ((scale, "weight"), (center, "bias")):
            if (scale or center) and not flag:
                ctx.cls.inits.append(f"{mod}.{param}.requires_grad_(False)  # Keras BatchNormalization "
                                     f"has no {'gamma' if param == 'weight' else 'beta'}")
    inp = x.var if x.rank == 2 else ctx.cf(x)
    return Out(f"{mod}({inp})", "keras" if x.rank == 2 else "cf")


@emitter("LayerNormalization")
def layer_norm(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    axis = cfg.get("axis", -1)
    axes = sorted(a % x.rank for a in (axis if isinstance(axis, list) else [axis]))
    if axes != list(range(x.rank - len(axes), x.rank)) or cfg.get("rms_scaling"):
        raise Unsupported(f"LayerNormalization over axes {axis} (only trailing axes, without rms_scaling)")
    shape = tuple(x.shape[a] for a in axes)
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    if scale != center:
        raise Unsupported("LayerNormalization with only one of scale/center")
    weights = {"gamma": ("weight", ()), "beta": ("bias", ())} if scale else {}
    shape_text = str(shape[0]) if len(shape) == 1 else str(shape)
    mod = ctx.submodule(layer, f"nn.LayerNorm({shape_text}, eps={float(cfg.get('epsilon', 1e-3))!r}"
                               f"{'' if scale else ', elementwise_affine=False'})", weights)
    return Out(f"{mod}({ctx.keras(x)})", "keras")


@emitter("GroupNormalization")
def group_norm(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    if cfg.get("axis", -1) not in (-1, x.rank - 1) or x.rank < 3:
        raise Unsupported(f"GroupNormalization over axis {cfg.get('axis')} (only channels last, rank >= 3)")
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    if scale != center:
        raise Unsupported("GroupNormalization with only one of scale/center")
    weights = {"gamma": ("weight", ()), "beta": ("bias", ())} if scale else {}
    mod = ctx.submodule(layer, f"nn.GroupNorm({cfg['groups']}, {x.shape[-1]}, eps={float(cfg.get('epsilon', 1e-3))!r}"
                               f"{'' if scale else ', affine=False'})", weights)
    return Out(f"{mod}({ctx.cf(x)})", "cf")
