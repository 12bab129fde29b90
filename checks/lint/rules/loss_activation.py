"""Activations fed to losses that apply them again, and softmax without ``dim``.

Keras models often end in ``softmax`` and train with ``categorical_crossentropy``; the
literal port feeds probabilities to ``nn.CrossEntropyLoss``, which applies
``log_softmax`` itself. Training still runs, with flattened gradients and worse results.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import libcst as cst

from ..context import FileContext
from ..finding import Edit, Finding, Fix
from ..rule import rule, shared_analysis
from ..syntax import Hit, Unpacked, arg, dotted, has_arg, method_name, number, positional_count, receiver, string

_FUNCTIONS = {
    "torch.nn.functional.softmax": "softmax", "torch.softmax": "softmax", "torch.special.softmax": "softmax",
    "torch.nn.functional.log_softmax": "log_softmax", "torch.log_softmax": "log_softmax",
    "torch.special.log_softmax": "log_softmax",
    "torch.sigmoid": "sigmoid", "torch.nn.functional.sigmoid": "sigmoid", "torch.special.expit": "sigmoid",
}
_METHODS = {"softmax": "softmax", "log_softmax": "log_softmax", "sigmoid": "sigmoid"}
_MODULES = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Sigmoid": "sigmoid"}
# Tensor methods after which a softmax output is still a softmax output.
_KEEPS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "float", "double",
                    "half", "to", "cuda", "cpu", "clone", "permute", "transpose", "resize", "view_as", "reshape_as",
                    "squeeze_", "unsqueeze_", "resize_", "t", "movedim", "swapaxes", "detach", "type", "type_as"})
_KEEP_FUNCTIONS = frozenset({"torch.squeeze", "torch.flatten", "torch.reshape", "torch.transpose", "torch.permute",
                             "torch.movedim"})
# Clipped probabilities are still probabilities; a clipped sigmoid before BCELoss is the stable-enough idiom.
_CLAMPS = frozenset({"clamp", "clip", "clamp_", "clip_"})


@dataclass(frozen=True)
class Loss:
    code: str
    functional: str
    module: str
    bad: str
    message: str


LOSSES = (
    Loss("TTL201", "torch.nn.functional.cross_entropy", "CrossEntropyLoss", "softmax",
         "{loss} applies log_softmax itself, so this softmax is applied twice; pass the logits"),
    Loss("TTL202", "torch.nn.functional.binary_cross_entropy_with_logits", "BCEWithLogitsLoss", "sigmoid",
         "{loss} applies sigmoid itself, so this sigmoid is applied twice; pass the logits"),
    Loss("TTL203", "torch.nn.functional.nll_loss", "NLLLoss", "softmax",
         "{loss} expects log-probabilities but gets softmax output; use log_softmax"),
    Loss("TTL205", "torch.nn.functional.binary_cross_entropy", "BCELoss", "sigmoid",
         "sigmoid followed by {loss} is numerically unstable (log of a saturated sigmoid, gradients "
         "vanish); pass the logits to BCEWithLogitsLoss instead"),
)


def _module_class(ctx: FileContext, expr: cst.CSTNode | None) -> str | None:
    """``Softmax`` for an ``nn.Softmax(...)`` object, or None."""
    qual = ctx.kind(expr) or ""
    if qual.startswith("torch.nn.") and qual.rsplit(".", 1)[-1] in _MODULES:
        return qual.rsplit(".", 1)[-1]
    return None


def activation(ctx: FileContext, call: cst.Call) -> str | None:
    """``softmax``/``log_softmax``/``sigmoid`` when ``call`` applies one, else None."""
    qual = ctx.callee(call)
    if qual in _FUNCTIONS:
        return _FUNCTIONS[qual]
    name = method_name(call)
    if name in _METHODS and not (qual or "").startswith(("torch.", "numpy.", "scipy.", "tensorflow.", "jax.")):
        return _METHODS[name]
    cls = _module_class(ctx, call.func)
    return _MODULES[cls] if cls else None


def activation_input(ctx: FileContext, call: cst.Call) -> cst.BaseExpression | None:
    if ctx.callee(call) in _FUNCTIONS or _module_class(ctx, call.func):
        return arg(call, 0, "input")
    return receiver(call)


class _Tracer:
    """Follows loss inputs back to activations: through variables, ``exp(log_softmax)``, models
    and functions of the project (``self(x)`` in a LightningModule, ``model(x)``, ``head(z)``)."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.forward_cache: dict[tuple[int, int | str | None], Hit | None] = {}

    def step(self, expr: object) -> Hit | cst.CSTNode | None:
        ctx = self.ctx
        if isinstance(expr, Unpacked):  # probs, features = model(x)
            if isinstance(expr.value, cst.Call) and isinstance(expr.index, int):
                return self.model_output(expr.value, expr.index)
            return None
        if isinstance(expr, cst.Subscript) and isinstance(expr.value, cst.Call):  # model(x)[0], model(x)["probs"]
            key = _literal_key(expr)
            return self.model_output(expr.value, key) if key is not None else None
        if not isinstance(expr, cst.Call):
            return None
        kind = activation(ctx, expr)
        if kind is not None:
            return Hit(kind, expr)
        qual = ctx.callee(expr) or ""
        name = method_name(expr)
        inner = arg(expr, 0, "input") if qual.startswith("torch.") else receiver(expr)
        if qual in ("torch.exp", "torch.special.exp") or name == "exp" and not qual.startswith("torch."):
            found = ctx.trace(inner, _tracer_step)  # exp(log_softmax(z)) is softmax(z)
            return Hit("softmax", expr) if found is not None and found.tag == "log_softmax" else None
        if qual in ("torch.log", "torch.special.log") or name == "log" and not qual.startswith("torch."):
            found = ctx.trace(inner, _tracer_step)  # log(softmax(z)): log-probabilities
            return Hit("log_softmax", expr) if found is not None and found.tag == "softmax" else None
        if qual in ("torch.clamp", "torch.clip") or name in _CLAMPS and not qual.startswith("torch."):
            found = ctx.trace(inner, _tracer_step)
            return found if found is not None and found.tag == "softmax" else None
        if qual in _KEEP_FUNCTIONS:
            return arg(expr, 0, "input")
        if name in _KEEPS and not qual.startswith("torch."):
            return receiver(expr)
        return self.model_output(expr)

    def model_output(self, call: cst.Call, index: int | str | None = None) -> Hit | None:
        """A call of a model whose output (or element ``index`` of it) is an activation: a
        project class whose forward returns one (``self(x)``/``self.forward(x)`` for the
        enclosing class), an ``nn.Sequential`` that ends with one, or a project function
        whose returns are one."""
        ctx = self.ctx
        if dotted(call.func) in ("self", "self.forward"):
            cls = ctx.enclosing_class(call)
            return _tracer(ctx).forward_hit(cls, index) if cls is not None else None
        found = ctx.origin(call.func)
        if found is None:
            target = ctx.find(ctx.callee(call)) if isinstance(call.func, (cst.Name, cst.Attribute)) else None
            if index is None and target is not None and isinstance(target[1], cst.FunctionDef) \
                    and target[0].flow.method_class(target[1]) is None:
                there, func = target
                returns = there.flow.returns(func)
                return there.agree([there.trace(r, _tracer_step) for r in returns]) if returns else None
            return None
        there, built = found
        qual = there.callee(built) or ""
        if qual == "torch.nn.Sequential":
            if index is not None:
                return None
            layers = [a.value for a in built.args if a.keyword is None and not a.star]
            if layers and isinstance(layers[-1], cst.Call):
                cls = _module_class(there, layers[-1])
                if cls is not None:
                    return Hit(_MODULES[cls], layers[-1], there)
            return None
        home = there.find_class(qual)
        if home is None:
            return None
        return _tracer(home[0]).forward_hit(home[1], index)

    def forward_hit(self, cls_node: cst.ClassDef, index: int | str | None) -> Hit | None:
        key = (id(cls_node), index)
        if key not in self.forward_cache:
            self.forward_cache[key] = None  # guards recursion
            self.forward_cache[key] = self._forward_hit(cls_node, index)
        return self.forward_cache[key]

    def _forward_hit(self, cls_node: cst.ClassDef, index: int | str | None) -> Hit | None:
        ctx = self.ctx
        forward = ctx.flow.method(cls_node, "forward")
        if forward is None:
            return None
        elements = [ctx.flow.element(r, index) for r in ctx.flow.returns(forward)]
        if any(e is None for e in elements):
            return None
        return ctx.agree([ctx.trace(e, _tracer_step) for e in elements])


def _tracer(ctx: FileContext) -> _Tracer:
    return ctx.memo("loss_tracer", lambda: _Tracer(ctx))  # type: ignore[return-value]


def _tracer_step(ctx: FileContext):
    return _tracer(ctx).step


def _literal_key(node: cst.Subscript) -> int | str | None:
    """The constant in ``x[0]`` or ``x["probs"]``, else None."""
    if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
        return None
    value = node.slice[0].slice.value
    found = number(value)
    if found is not None and found == int(found):
        return int(found)
    return string(value)


def _loss_input(ctx: FileContext, call: cst.Call) -> tuple[Loss, str, cst.BaseExpression] | None:
    qual = ctx.callee(call)
    kind: str | None = None
    for loss in LOSSES:
        if qual == loss.functional:
            label = f"F.{loss.functional.rsplit('.', 1)[-1]}"
        else:
            kind = (ctx.kind(call.func) or "") if kind is None else kind
            if not (kind.startswith("torch.nn.") and kind.endswith("." + loss.module)):
                continue
            label = f"nn.{loss.module}"
        value = arg(call, 0, "input")
        return (loss, label, value) if value is not None else None
    return None


def _findings(ctx: FileContext) -> list[Finding]:
    out: list[Finding] = []
    seen: set[tuple[str, int]] = set()
    for call in ctx.nodes(cst.Call):
        found = _loss_input(ctx, call)
        if found is None:
            continue
        loss, label, value = found
        hit = ctx.trace(value, _tracer_step)
        if hit is None or hit.tag != loss.bad or (loss.code, id(hit.origin)) in seen:
            continue
        seen.add((loss.code, id(hit.origin)))
        home: FileContext = hit.home  # type: ignore[assignment]
        message = loss.message.format(loss=label)
        applied = isinstance(hit.origin, cst.Call) and activation(home, hit.origin) is not None
        exp = isinstance(hit.origin, cst.Call) and ((home.callee(hit.origin) or "").endswith(".exp")
                                                    or method_name(hit.origin) == "exp")
        if home is ctx and applied and ctx.scope(hit.origin) is ctx.scope(call):
            out.append(ctx.report(loss.code, hit.origin, message, _fix(ctx, loss, value, hit.origin, call)))
            continue
        where = "" if home is ctx else f" (in {ctx.filename}:{ctx.line(call)})"
        if exp:  # exp(log_softmax(z))
            message = (f"exp(log_softmax(...)) is a softmax, and {label}{where} "
                       + ("applies log_softmax itself, so it is applied twice; pass the logits"
                          if loss.code == "TTL201" else "expects log-probabilities; pass the log_softmax output"))
        elif loss.code == "TTL205":
            if _in_sequential(home, hit.origin):
                continue  # DCGAN's discriminator: the official examples accept this trade-off
            message = (f"the model's output ends in sigmoid and is trained with {label}{where}, which is "
                       f"numerically unstable; return the logits and use nn.BCEWithLogitsLoss")
        elif loss.code == "TTL203":
            message = (f"the model's output ends in softmax but is trained with {label}{where}, which expects "
                       f"log-probabilities; end it in log_softmax (or return logits and use CrossEntropyLoss)")
        else:
            message = (f"the model's output ends in {hit.tag} but is trained with {label}{where}, which applies "
                       f"it again; return logits and apply {hit.tag} only for predictions")
        out.append(home.report(loss.code, hit.origin, message))
    return out


def _in_sequential(ctx: FileContext, node: cst.CSTNode) -> bool:
    arg_node = ctx.parent(node)
    holder = ctx.parent(arg_node) if isinstance(arg_node, cst.Arg) else None
    return isinstance(holder, cst.Call) and ctx.callee(holder) == "torch.nn.Sequential"


def _with_logits(ctx: FileContext, call: cst.Call) -> Edit | None:
    """The edit that turns this BCE loss call into its WithLogits form, when nothing else uses
    that loss object: ``F.binary_cross_entropy`` by name, or an ``nn.BCELoss(...)`` built
    inline or bound to a name whose only use is this call."""
    func = call.func
    if isinstance(func, cst.Attribute) and func.attr.value == "binary_cross_entropy":
        return ctx.replace(func.attr, "binary_cross_entropy_with_logits")
    built = ctx.constructor(func)
    if built is None or not (isinstance(built.func, cst.Attribute) and built.func.attr.value == "BCELoss"):
        return None
    if built is not func:
        found = ctx.bindings(func.value, func) if isinstance(func, cst.Name) else []
        if len(found) != 1 or found[0].value is not built or len(ctx.loads(func.value, ctx.scope(built))) != 1:
            return None
    return ctx.replace(built.func.attr, "BCEWithLogitsLoss")


def _fix(ctx: FileContext, loss: Loss, value: cst.BaseExpression, origin: cst.CSTNode, call: cst.Call
         ) -> Fix | None:
    """Edit the activation only where nothing else can see it: it is the loss argument
    itself, or it is assigned to a name whose only use is the loss argument."""
    if not isinstance(origin, cst.Call):
        return None
    if value is not origin:
        parent = ctx.parent(origin)
        if not (isinstance(value, cst.Name) and isinstance(parent, cst.Assign) and parent.value is origin
                and len(parent.targets) == 1 and isinstance(parent.targets[0].target, cst.Name)
                and parent.targets[0].target.value == value.value
                and len(ctx.loads(value.value, ctx.scope(origin))) == 1):
            return None
    if loss.bad == "sigmoid" or loss.code == "TTL201":
        source = activation_input(ctx, origin)
        if source is None or (isinstance(source, cst.Name) and isinstance(value, cst.Name)
                              and source.value == value.value):
            return None
        removal = ctx.replace(origin, ctx.code(source))
        if loss.code == "TTL205":
            logits = _with_logits(ctx, call)
            return Fix("Remove the sigmoid and use the WithLogits loss", (removal, logits)) if logits else None
        return Fix(f"Remove the {loss.bad}", (removal,))
    # TTL203: softmax -> log_softmax, keeping the spelling of the call.
    func = origin.func
    if isinstance(func, cst.Attribute) and func.attr.value == "softmax":
        return Fix("Use log_softmax", (ctx.replace(func.attr, "log_softmax"),))
    if isinstance(func, cst.Call) and isinstance(func.func, cst.Attribute) and func.func.attr.value == "Softmax":
        return Fix("Use nn.LogSoftmax", (ctx.replace(func.func.attr, "LogSoftmax"),))
    return None


_by_code = shared_analysis("loss_activation", _findings)
_LOSS_HERE = r"(?i)(loss|criterion)\w*\s*\(|cross_entropy\s*\("  # a loss computed here; its input may come from elsewhere


rule("TTL201", "softmax-before-cross-entropy",
     "Softmax output reaches CrossEntropyLoss, which applies log_softmax itself.",
     triggers=("oftmax", "ross_?[Ee]ntropy"), fixable=True, across_files=_LOSS_HERE)(_by_code("TTL201"))
rule("TTL202", "sigmoid-before-bce-with-logits",
     "Sigmoid output reaches BCEWithLogitsLoss, which applies sigmoid itself.",
     triggers=("igmoid|expit", "[Ww]ith_?[Ll]ogits"), fixable=True, across_files=_LOSS_HERE)(_by_code("TTL202"))
rule("TTL205", "sigmoid-before-bce-loss",
     "Sigmoid output reaches BCELoss: numerically unstable; use BCEWithLogitsLoss on the logits.",
     triggers=("igmoid|expit", "binary_cross_entropy|BCELoss"), fixable=True, across_files=_LOSS_HERE)(_by_code("TTL205"))
rule("TTL203", "softmax-before-nll-loss",
     "Softmax output (not log_softmax) reaches NLLLoss, which expects log-probabilities.",
     triggers=("oftmax", "nll_loss|NLLLoss"), fixable=True, across_files=_LOSS_HERE)(_by_code("TTL203"))


_IMPLICIT_DIM = {"torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.softmin"}
_IMPLICIT_DIM_MODULES = {"torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin", "torch.nn.Softmax2d"}


@rule("TTL204", "softmax-without-dim",
      "softmax/log_softmax/nn.Softmax without dim picks an axis implicitly.",
      triggers=("oftm(ax|in)",))
def softmax_without_dim(ctx: FileContext) -> Iterator[Finding]:
    for call in ctx.nodes(cst.Call):
        qual = ctx.callee(call)
        if qual in _IMPLICIT_DIM and not has_arg(call, 1, "dim") and positional_count(call) <= 1:
            name = qual.rsplit(".", 1)[-1]
        elif qual in _IMPLICIT_DIM_MODULES - {"torch.nn.Softmax2d"} and not has_arg(call, 0, "dim"):
            name = qual.replace("torch.nn.", "nn.")
        else:
            continue
        yield ctx.report("TTL204", call,
                         f"{name} without dim picks the axis implicitly (deprecated, and not Keras' last "
                         f"axis for 1-D/3-D inputs); pass dim explicitly, e.g. dim=-1")
