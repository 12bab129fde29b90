"""Keras conventions copied into torch layer arguments.

Keras ``BatchNormalization(momentum=0.99)`` keeps 99% of the running statistics; torch's
``momentum`` is the weight of the *new* batch (default 0.1), so the same number means the
opposite. Keras normalisation layers default to ``epsilon=1e-3``, torch to ``eps=1e-5``.
Keras ``padding="same"`` pads asymmetrically for strided layers; torch refuses it.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

import libcst as cst

from ..context import FileContext
from ..finding import Finding, Fix
from ..rule import rule
from ..syntax import Hit, arg, has_arg, number, string

# class or function -> positional index of momentum
_BATCH_NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm",
                "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")
_MOMENTUM = {
    **{f"torch.nn.{n}": 2 for n in _BATCH_NORMS},
    **{f"torch.nn.{n}": 1 for n in ("LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d")},
    "torch.nn.functional.batch_norm": 6,
    "torch.nn.functional.instance_norm": 6,
}
_EPS_LAYERS = {
    **{f"torch.nn.{n}": 1 for n in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LayerNorm")},
    **{f"torch.nn.{n}": 0 for n in ("LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d")},
}
# class or function -> (positional index of stride, positional index of padding)
_CONV = {
    **{f"torch.nn.Conv{d}d": (3, 4) for d in (1, 2, 3)},
    **{f"torch.nn.LazyConv{d}d": (2, 3) for d in (1, 2, 3)},
    **{f"torch.nn.functional.conv{d}d": (3, 4) for d in (1, 2, 3)},
}
_PARTIAL = ("functools.partial", "partial")
_KERAS_WEIGHT_WORDS = re.compile(r"kernel|get_weights|model_weights|layer_names|weight_names|moving_mean")


def _literal_step(ctx: FileContext):
    def step(node: object) -> Hit | None:
        if number(node) is not None or string(node) is not None:  # type: ignore[arg-type]
            return Hit("literal", node)  # type: ignore[arg-type]
        if isinstance(node, (cst.Tuple, cst.List)):
            return Hit("literal", node)
        return None
    return step


def _literal(ctx: FileContext, expr: cst.CSTNode | None) -> cst.CSTNode | None:
    """The literal an argument comes from in this file, directly or through a constant bound once."""
    hit = ctx.trace(expr, _literal_step) if expr is not None else None
    return hit.origin if hit and hit.home is ctx else None


def _one_minus(text: str) -> str | None:
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        return None
    result = format((1 - value).normalize(), "f")
    return result if "." in result or result == "0" else result + ".0"


def _fallback_norm(ctx: FileContext, func: cst.BaseExpression) -> str | None:
    """The torch batch norm a try/except fallback alias stands for, when every alternative is a
    batch norm (``_BN = SyncBatchNorm`` or ``nn.BatchNorm2d``): interchangeable, one momentum."""
    options = ctx.alternatives(func)
    torch_norms = [q for q in options if q in _MOMENTUM and q.startswith("torch.nn.") and "functional" not in q]
    if torch_norms and all(q.rsplit(".", 1)[-1] in _BATCH_NORMS for q in options):
        return torch_norms[0]
    return None


@rule("TTL301", "keras-batchnorm-momentum",
      "BatchNorm momentum > 0.5 looks like Keras' convention (torch momentum = 1 - Keras momentum).",
      triggers=("momentum", "[Nn]orm"), fixable=True)
def keras_momentum(ctx: FileContext) -> Iterator[Finding]:
    for call in ctx.nodes(cst.Call):
        qual = ctx.callee(call)
        if qual in _PARTIAL:  # partial(nn.BatchNorm2d, momentum=0.99): keywords only
            qual, index = ctx.qualname(arg(call, 0, "func")), None
        else:
            qual = _fallback_norm(ctx, call.func) or qual
            index = _MOMENTUM.get(qual)  # type: ignore[arg-type]
        if qual not in _MOMENTUM:
            continue
        given = arg(call, index, "momentum")
        literal = _literal(ctx, given)
        value = number(literal)
        if value is None or not 0.5 < value <= 1:  # 0.5 means the same in both conventions
            continue
        torch_value = _one_minus(ctx.code(literal).lstrip("+"))  # type: ignore[arg-type]
        fix = None
        if literal is given and torch_value is not None and isinstance(literal, (cst.Float, cst.Integer)):
            fix = Fix(f"Use momentum={torch_value}", (ctx.replace(literal, torch_value),))
        written = ctx.code(literal)  # type: ignore[arg-type]
        yield ctx.report(
            "TTL301", given,  # type: ignore[arg-type]
            f"momentum={written} is Keras' convention; torch's momentum weights the new batch, "
            f"so use momentum={torch_value or '1 - keras_momentum'}",
            fix,
        )


def ports_keras(ctx: FileContext) -> bool:
    """The file works with Keras models or their weight files."""
    def compute() -> bool:
        if ctx.imports_any("tensorflow", "keras", "tf_keras"):
            return True
        h5 = ctx.imports_any("h5py") or any(
            (string(s) or "").lower().endswith((".h5", ".hdf5", ".keras")) for s in ctx.nodes(cst.SimpleString))
        return h5 and bool(_KERAS_WEIGHT_WORDS.search(ctx.source))
    return bool(ctx.memo("ports_keras", compute))


@rule("TTL302", "keras-norm-default-eps",
      "BatchNorm/LayerNorm left at torch's eps=1e-5 in code that ports Keras weights (Keras uses 1e-3).",
      triggers=("Norm", r"tensorflow|keras|h5py|\.h5|\.hdf5"))
def keras_default_eps(ctx: FileContext) -> Iterator[Finding]:
    if not ports_keras(ctx):
        return
    for call in ctx.nodes(cst.Call):
        qual = ctx.callee(call)
        if qual not in _EPS_LAYERS or has_arg(call, _EPS_LAYERS[qual], "eps"):
            continue
        name = qual.replace("torch.nn.", "nn.")
        yield ctx.report(
            "TTL302", call,
            f"{name} keeps torch's default eps=1e-5 but Keras normalisation defaults to epsilon=1e-3; "
            f"pass the Keras layer's epsilon, e.g. eps=1e-3",
        )


def _stride_above_one(node: cst.CSTNode | None) -> bool:
    if isinstance(node, (cst.Tuple, cst.List)):
        return any((number(e.value) or 0) > 1 for e in node.elements)
    return (number(node) or 0) > 1


@rule("TTL303", "same-padding-with-stride",
      "padding='same' with stride > 1: torch rejects it; Keras pads asymmetrically.",
      triggers=("[\"']same[\"']", "[Cc]onv"))
def same_padding_with_stride(ctx: FileContext) -> Iterator[Finding]:
    for call in ctx.nodes(cst.Call):
        qual = ctx.callee(call)
        if qual not in _CONV:
            continue
        stride_at, padding_at = _CONV[qual]
        padding = _literal(ctx, arg(call, padding_at, "padding"))
        if (string(padding) or "").lower() != "same":
            continue
        if not _stride_above_one(_literal(ctx, arg(call, stride_at, "stride"))):
            continue
        yield ctx.report(
            "TTL303", call,
            "padding='same' is not supported with stride > 1 (torch raises); compute Keras' asymmetric "
            "padding with F.pad and use padding=0",
        )


# torch optimizer -> [(torch argument, its positional index, torch default, Keras name, Keras default)]
_OPTIMIZER_DEFAULTS = {
    "torch.optim.Adam": [("eps", 3, "1e-8", "epsilon", "1e-7")],
    "torch.optim.Adamax": [("eps", 3, "1e-8", "epsilon", "1e-7")],
    "torch.optim.NAdam": [("eps", 3, "1e-8", "epsilon", "1e-7")],
    "torch.optim.AdamW": [("eps", 3, "1e-8", "epsilon", "1e-7"), ("weight_decay", 4, "0.01", "weight_decay", "0.004")],
    "torch.optim.RMSprop": [("alpha", 2, "0.99", "rho", "0.9"), ("eps", 3, "1e-8", "epsilon", "1e-7")],
    "torch.optim.Adagrad": [("initial_accumulator_value", 4, "0", "initial_accumulator_value", "0.1"),
                            ("eps", 5, "1e-10", "epsilon", "1e-7")],
    "torch.optim.Adadelta": [("lr", 1, "1.0", "learning_rate", "0.001"), ("rho", 2, "0.9", "rho", "0.95"),
                             ("eps", 3, "1e-6", "epsilon", "1e-7")],
}


@rule("TTL304", "keras-optimizer-defaults",
      "In a Keras port, a torch optimizer left at defaults that differ from Keras' (eps, RMSprop rho/alpha).",
      triggers=("Adam|RMSprop|Adagrad|Adadelta", r"tensorflow|keras|h5py|\.h5|\.hdf5"), severity="info")
def keras_optimizer_defaults(ctx: FileContext) -> Iterator[Finding]:
    if not ports_keras(ctx):
        return
    for call in ctx.nodes(cst.Call):
        qual = ctx.callee(call)
        if qual not in _OPTIMIZER_DEFAULTS or any(a.star for a in call.args):
            continue
        missing = [entry for entry in _OPTIMIZER_DEFAULTS[qual] if not has_arg(call, entry[1], entry[0])]  # type: ignore[index]
        if not missing:
            continue
        name = qual.rsplit(".", 1)[-1]  # type: ignore[union-attr]
        differences = ", ".join(f"{k}={kv} where torch uses {t}={tv}" for t, _, tv, k, kv in missing)
        hint = ", ".join(f"{t}={kv}" for t, _, _, _, kv in missing)
        yield ctx.report(
            "TTL304", call,
            f"info: Keras' {name} defaults to {differences}; to train as the Keras original did, pass {hint}",
        )
