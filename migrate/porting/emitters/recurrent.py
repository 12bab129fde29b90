"""LSTM, GRU and SimpleRNN (and Bidirectional around them) as nn.LSTM / nn.GRU / nn.RNN, batch_first.

Gate orders: Keras LSTM (i, f, c, o) is torch's (i, f, g, o); Keras GRU (z, r, h) becomes torch's (r, z, n),
and only ``reset_after=True`` (Keras 3's default) matches torch's GRU; ``reset_after=False`` (Keras 2's) becomes
``KerasGRUResetBefore`` (migrate/porting/runtime/recurrent.py), copied into model.py. Keras has one bias per
gate where torch has two (input and hidden): the hidden one is zero and frozen, so training updates the same
sum. Masked sequences run through ``keras_masked_rnn``, the masked-step algorithm the converter uses too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from migrate.core.recurrent import gates as rnn_gates
from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, Value, emitter
from migrate.porting.runtime import KerasGRUResetBefore, keras_masked_cell_state, keras_masked_rnn

TORCH_CLASS = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}

def _find(layer: Layer, direction: str, name: str) -> str:
    """The layer's weight called ``name`` (``kernel``, ``recurrent_kernel``, ``bias``) for a direction prefix."""
    found = [k for k in layer.weights if k.split("/")[-1] == name and k.startswith(direction)]
    if len(found) != 1:
        raise Unsupported(f"cannot find the {direction or 'cell'} {name} among {sorted(layer.weights)}")
    return found[0]


def _check(cls: str, cfg: dict[str, Any]) -> None:
    if cfg.get("stateful") or cfg.get("unroll"):
        raise Unsupported("stateful or unrolled recurrent layers")
    if cfg.get("dropout") or cfg.get("recurrent_dropout"):
        raise Unsupported("recurrent layers with dropout/recurrent_dropout (torch's differ) are not ported yet")
    if cfg.get("activation", "tanh") != "tanh" and not (cls == "SimpleRNN" and cfg["activation"] == "relu"):
        raise Unsupported(f"activation {cfg.get('activation')!r} (torch's recurrent layers use tanh)")
    if cls != "SimpleRNN" and cfg.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise Unsupported(f"recurrent_activation {cfg.get('recurrent_activation')!r} (torch uses sigmoid)")


def _weights(layer: Layer, cls: str, units: int, direction: str, suffix: str) -> dict[str, tuple[str, tuple]]:
    order = (("gate_reorder", ("zrh->rzh",)),) if cls == "GRU" else ()
    gates = rnn_gates(cls) * units
    weights = {_find(layer, direction, "kernel"): (f"weight_ih_l0{suffix}", (*order, ("permute", (1, 0)))),
               _find(layer, direction, "recurrent_kernel"): (f"weight_hh_l0{suffix}", (*order, ("permute", (1, 0))))}
    if any(k.split("/")[-1] == "bias" and k.startswith(direction) for k in layer.weights):
        bias = _find(layer, direction, "bias")
        if cls == "GRU":  # (2, 3 * units): input bias, recurrent bias
            weights[bias] = (f"bias_ih_l0{suffix}", (("split", (0, 2)), ("reshape", (gates,)), *order))
            weights[bias + "#recurrent"] = (f"bias_hh_l0{suffix}", (("split", (1, 2)), ("reshape", (gates,)), *order))
        else:
            weights[bias] = (f"bias_ih_l0{suffix}", ())
    return weights


def _declare(layer: Layer, cfg: dict[str, Any], inner: str, in_features: int, ctx: Any, bidirectional: bool,
             directions: tuple[str, ...]) -> str:
    cls = TORCH_CLASS[inner]
    units = cfg["units"]
    _check(inner, cfg)
    if inner == "GRU" and not cfg.get("reset_after", True):
        return _declare_reset_before(layer, cfg, in_features, ctx, directions[0])
    extra = ", nonlinearity='relu'" if inner == "SimpleRNN" and cfg.get("activation") == "relu" else ""
    extra += ", bidirectional=True" if bidirectional else ""
    if not cfg.get("use_bias", True):
        extra += ", bias=False"
    weights: dict[str, tuple[str, tuple]] = {}
    for direction, suffix in zip(directions, ("", "_reverse")):
        weights.update(_weights(layer, inner, units, direction, suffix))
    recurrent_bias = {k: v for k, v in weights.items() if k.endswith("#recurrent")}
    for key in recurrent_bias:  # the GRU's second bias row: same Keras weight, another target
        del weights[key]
    mod = ctx.submodule(layer, f"nn.{cls}({in_features}, {units}, batch_first=True{extra})", weights)
    if recurrent_bias:
        ctx.map_weights(layer, {k.removesuffix("#recurrent"): (f"{layer.attr}.{v[0]}", v[1])
                                for k, v in recurrent_bias.items()})
    elif cfg.get("use_bias", True) and layer.name not in ctx.renderer.semantics_done:
        ctx.renderer.semantics_done.add(layer.name)
        for suffix in ("", "_reverse")[: len(directions)]:
            ctx.cls.inits.append(f"nn.init.zeros_({mod}.bias_hh_l0{suffix}).requires_grad_(False)  "
                                 "# Keras has one bias per gate")
    return mod


def _declare_reset_before(layer: Layer, cfg: dict[str, Any], in_features: int, ctx: Any, direction: str) -> str:
    """``GRU(reset_after=False)`` as ``KerasGRUResetBefore``: Keras' weights transposed, gate order kept."""
    helper = ctx.helper(KerasGRUResetBefore)
    weights = {_find(layer, direction, "kernel"): ("weight_ih", (("permute", (1, 0)),)),
               _find(layer, direction, "recurrent_kernel"): ("weight_hh", (("permute", (1, 0)),))}
    if cfg.get("use_bias", True):
        weights[_find(layer, direction, "bias")] = ("bias", ())
    bias = "" if cfg.get("use_bias", True) else ", bias=False"
    return ctx.submodule(layer, f"{helper}({in_features}, {cfg['units']}{bias})", weights)


def _state_args(call: Call, ctx: Any, inner: str) -> str:
    states = call.kwargs.get("initial_state")
    if not states:
        return ""
    values = states if isinstance(states, list) else [states]
    parts = [f"{ctx.keras(v)}.unsqueeze(0)" for v in values]
    return f", ({parts[0]}, {parts[1]})" if inner == "LSTM" else f", {parts[0]}"


@emitter("LSTM", "GRU", "SimpleRNN")
def recurrent(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg, mask = call.input, layer.config, call.mask
    mod = _declare(layer, cfg, layer.class_name, x.shape[-1], ctx, False, ("",))
    if mask is not None:
        if layer.class_name == "GRU" and not cfg.get("reset_after", True):
            raise Unsupported("a masked GRU(reset_after=False) is not ported yet")
        return _masked_recurrent(layer, call, ctx, mod, mask)
    seq = ctx.keras(x)
    if cfg.get("go_backwards"):
        seq = f"{seq}.flip(1)"  # Keras returns the reversed sequence's outputs in processing order
    sequences = cfg.get("return_sequences")
    out = ctx.fresh(layer.attr if sequences else f"{layer.attr}_sequence") if call.uses(0) else "_"
    state = ctx.fresh(f"{layer.attr}_state") if cfg.get("return_state") and (call.uses(1) or call.uses(2)) else "_"
    ctx.line(f"{out}, {state} = {mod}({seq}{_state_args(call, ctx, layer.class_name)})")
    result = out if sequences or out == "_" else f"{out}[:, -1]"
    if not cfg.get("return_state"):
        return Out(result)
    if layer.class_name == "LSTM":
        return Out((result, f"{state}[0][0]", f"{state}[1][0]"))
    return Out((result, f"{state}[0]"))


def _masked_recurrent(layer: Layer, call: Call, ctx: Any, mod: str, mask: Value) -> Out:
    cfg = layer.config
    if call.kwargs.get("initial_state"):
        raise Unsupported("a masked recurrent layer with an initial state")
    if layer.class_name == "LSTM" and cfg.get("return_state") and call.uses(2) and not cfg.get("use_bias", True):
        raise Unsupported("the cell state of a masked LSTM without bias")
    seq, steps = ctx.keras(call.input), ctx.keras(mask)
    if cfg.get("go_backwards"):
        seq, steps = f"{seq}.flip(1)", f"{steps}.flip(1)"
    run = ctx.helper(keras_masked_rnn)
    zero = cfg.get("zero_output_for_mask", False)
    sequences = cfg.get("return_sequences")
    if sequences or zero or cfg.get("return_state"):  # with zero_masked, the last output is 0 after padding
        out = ctx.fresh(layer.attr if sequences else f"{layer.attr}_sequence") if call.uses(0) else "_"
        last = ctx.fresh(f"{layer.attr}_state") if call.uses(1) else "_"
        result = out if sequences or out == "_" else f"{out}[:, -1]"
    else:  # the last output is the final h
        out, last = "_", ctx.fresh(layer.attr)
        result = last
    ctx.line(f"{out}, {last} = {run}({mod}, {seq}, {steps}{', zero_masked=True' if zero else ''})")
    if not cfg.get("return_state"):
        return Out(result)
    if layer.class_name != "LSTM":
        return Out((result, last))
    cell = "_"
    if call.uses(2):
        cell = ctx.fresh(f"{layer.attr}_cell_state")
        ctx.line(f"{cell} = {ctx.helper(keras_masked_cell_state)}({mod}, {seq}, {steps})")
    return Out((result, last, cell))


def _masked_bidirectional(layer: Layer, call: Call, ctx: Any, mask: Value, directions: tuple[str, ...]) -> Out:
    """One unidirectional module per direction (Keras' forward_layer and backward_layer), each run masked."""
    cfg = layer.config
    inner, inner_cfg = cfg["layer"]["class_name"], cfg["layer"]["config"]
    seq, steps = ctx.keras(call.input), ctx.keras(mask)
    run = ctx.helper(keras_masked_rnn)
    sequences = inner_cfg.get("return_sequences")  # Keras zeroes masked outputs when returning sequences
    names = []
    for direction, part in zip(directions, ("forward", "backward")):
        half = replace(layer, name=f"{layer.name}/{part}", attr=f"{layer.attr}_{part}")
        mod = _declare(half, inner_cfg, inner, call.input.shape[-1], ctx, False, (direction,))
        args = f"{seq}, {steps}" if part == "forward" else f"{seq}.flip(1), {steps}.flip(1)"
        var = ctx.fresh(f"{layer.attr}_{part}")
        ctx.line(f"{var}, _ = {run}({mod}, {args}, zero_masked=True)" if sequences else f"_, {var} = {run}({mod}, {args})")
        names.append(var)
    fwd, bwd = names[0], f"{names[1]}.flip(1)" if sequences else names[1]
    exprs = {"concat": f"torch.cat([{fwd}, {bwd}], dim=-1)", "sum": f"{fwd} + {bwd}", "mul": f"{fwd} * {bwd}",
             "ave": f"({fwd} + {bwd}) / 2"}
    merge = cfg.get("merge_mode", "concat")
    if merge not in exprs:
        raise Unsupported(f"Bidirectional(merge_mode={merge!r})")
    return Out(exprs[merge])


@emitter("Bidirectional")
def bidirectional(layer: Layer, call: Call, ctx: Any) -> Out:
    x, cfg = call.input, layer.config
    inner_cfg = cfg["layer"]["config"]
    inner = cfg["layer"]["class_name"]
    backward = cfg.get("backward_layer") or {"class_name": inner, "config": dict(inner_cfg, go_backwards=True)}
    same = {k: v for k, v in backward["config"].items() if k not in ("name", "go_backwards")} == {
        k: v for k, v in inner_cfg.items() if k not in ("name", "go_backwards")}
    if inner not in TORCH_CLASS or backward["class_name"] != inner or not same:
        raise Unsupported(f"Bidirectional({inner}) with a different backward layer")
    if inner == "GRU" and not inner_cfg.get("reset_after", True):
        raise Unsupported("Bidirectional(GRU(reset_after=False)) is not ported yet")
    mask = call.mask
    if call.kwargs.get("initial_state"):
        raise Unsupported("Bidirectional with an initial state")
    if inner_cfg.get("return_state") or inner_cfg.get("go_backwards"):
        raise Unsupported("Bidirectional with return_state or go_backwards")
    merge = cfg.get("merge_mode", "concat")
    directions = tuple(sorted({k.split("/")[0] for k in layer.weights}, key=lambda d: not d.startswith("forward")))
    if mask is not None:
        return _masked_bidirectional(layer, call, ctx, mask, directions)
    mod = _declare(layer, inner_cfg, inner, x.shape[-1], ctx, True, directions)
    units = inner_cfg["units"]
    sequences = inner_cfg.get("return_sequences")
    out = ctx.fresh(layer.attr if sequences and merge == "concat" else f"{layer.attr}_sequence")
    ctx.line(f"{out}, _ = {mod}({ctx.keras(x)})")
    if inner_cfg.get("return_sequences"):
        fwd, bwd = f"{out}[..., :{units}]", f"{out}[..., {units}:]"
    else:  # Keras: the forward direction's last step, the backward direction's last step (time 0)
        fwd, bwd = f"{out}[:, -1, :{units}]", f"{out}[:, 0, {units}:]"
        if merge == "concat":
            return Out(f"torch.cat([{fwd}, {bwd}], dim=-1)")
    exprs = {"concat": out, "sum": f"{fwd} + {bwd}", "mul": f"{fwd} * {bwd}", "ave": f"({fwd} + {bwd}) / 2"}
    if merge not in exprs:
        raise Unsupported(f"Bidirectional(merge_mode={merge!r})")
    return Out(exprs[merge])


@emitter("TimeDistributed")
def time_distributed(layer: Layer, call: Call, ctx: Any) -> Out:
    """Dense inside TimeDistributed is a Dense on the last axis; other layers run on (N*T, ...)."""
    x, inner = call.input, layer.config["layer"]
    if inner["class_name"] != "Dense":
        raise Unsupported(f"TimeDistributed({inner['class_name']}) (Dense only so far)")
    cfg = inner["config"]
    _ = call.mask  # Keras hands the mask to the inner Dense, which ignores it (reading it accepts it)
    kernel = _find(layer, "", "kernel")
    in_features, units = layer.weights[kernel].shape
    weights = {kernel: ("weight", (("permute", (1, 0)),))}
    if cfg.get("use_bias", True):
        weights[_find(layer, "", "bias")] = ("bias", ())
    mod = ctx.submodule(layer, f"nn.Linear({in_features}, {units}{'' if cfg.get('use_bias', True) else ', bias=False'})",
                        weights)
    from migrate.porting.emitters.activations import activation

    return Out(activation(cfg.get("activation"), f"{mod}({ctx.keras(x)})", ctx))
