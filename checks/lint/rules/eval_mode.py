"""Inference without ``model.eval()``.

Keras picks inference behaviour per call (``model(x, training=False)``, ``predict``);
torch keeps a mode flag on the module. ``torch.no_grad()`` only turns off gradients, so
a ported predict function without ``eval()`` still applies dropout and updates
batch-norm statistics, and its outputs change from run to run.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from ..context import FileContext
from ..finding import Edit, Finding, Fix
from ..rule import rule
from ..syntax import OBJECT_CHAIN, arg, dotted, method_name, number, receiver
from ..training import backward_calls, optimizer_steps

_NO_GRAD = {"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.inference_mode",
            "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode"}
_MODEL_NAME = re.compile(r"^(model|net|network|classifier|encoder|decoder|backbone)$|_(model|net)$|^(model|net)_",
                         re.IGNORECASE)
# ``model_class``, ``net_fn``: what builds a model, not a model.
_BUILDER_NAME = re.compile(r"_(class|cls|fn|factory|builder|constructor|type|name|names|path|dir)$", re.IGNORECASE)
# Reading these of an output asks only for its shape, which train/eval mode does not change.
_SHAPE_ONLY = {"shape", "size", "dim", "ndim", "ndimension", "numel", "dtype", "device"}
# Layers whose forward differs between train() and eval().
_MODE_LAYERS = re.compile(r"Dropout|BatchNorm|Transformer")
_DROPOUT_OPTIONAL = re.compile(r"^(RNN|LSTM|GRU|MultiheadAttention)$")


def _is_no_grad(ctx: FileContext, expr: cst.CSTNode) -> bool:
    if isinstance(expr, cst.Call):
        qual = ctx.callee(expr)
        if qual in _NO_GRAD:
            return True
        if qual == "torch.set_grad_enabled":
            flag = arg(expr, 0, "mode")
            return isinstance(flag, cst.Name) and flag.value == "False"
        return False
    return ctx.qualname(expr) in _NO_GRAD  # bare decorator: @torch.no_grad


def _regions(ctx: FileContext, scope: cst.CSTNode) -> list[cst.CSTNode]:
    """Parts of ``scope`` that run without gradients."""
    if isinstance(scope, cst.FunctionDef) and any(_is_no_grad(ctx, d.decorator) for d in scope.decorators):
        return [scope.body]
    return [w.body for w in ctx.inside(scope, cst.With) if any(_is_no_grad(ctx, i.item) for i in w.items)]


def _eval_targets(ctx: FileContext, within: cst.CSTNode, same_scope: bool = False) -> set[str]:
    """Names put in eval mode inside ``within`` (and nested functions unless ``same_scope``):
    ``m.eval()``, ``m.train(False)``, ``m = Net().eval()``."""
    known: dict[tuple[int, bool], set[str]] = ctx.memo("eval_targets", dict)  # type: ignore[assignment]
    key = (id(within), same_scope)
    if key not in known:
        known[key] = _find_eval_targets(ctx, within, same_scope)
    return known[key]


def _find_eval_targets(ctx: FileContext, within: cst.CSTNode, same_scope: bool) -> set[str]:
    names = set()
    for call in ctx.inside(within, cst.Call, same_scope=same_scope):
        name = method_name(call)
        if name == "train":
            flag = arg(call, 0, "mode")
            if flag is None or (isinstance(flag, cst.Name) and flag.value == "True"):
                continue
        elif name != "eval":
            continue
        base = receiver(call)
        while isinstance(base, cst.Call) and method_name(base) in OBJECT_CHAIN:
            base = receiver(base)
        if dotted(base) is not None:
            names.add(dotted(base))  # type: ignore[arg-type]
        for a in ctx.ancestors(call):  # x = Net().eval() / self.m = m.eval()
            if isinstance(a, cst.Assign):
                names.update(dotted(t.target) for t in a.targets if dotted(t.target))
                break
            if isinstance(a, cst.BaseStatement):
                break
    return names  # type: ignore[return-value]


def _mode_dependent(ctx: FileContext, cls: cst.ClassDef, seen: set[int]) -> bool:
    """Whether a model class of the project could behave differently in eval mode.

    Followed through base classes, submodules built in the class (``nn.Sequential`` and
    helper classes of the project included). Unknown submodules and base classes count as
    mode-dependent: this only serves to stay silent on models made solely of layers that
    ignore the mode.
    """
    if id(cls) in seen:
        return False
    seen.add(id(cls))
    for base in cls.bases:
        qual = ctx.qualname(base.value) or ""
        home = ctx.find_class(qual)
        if home is not None:
            if _mode_dependent(*home, seen):
                return True
        elif qual not in ("torch.nn.Module", "torch.nn.modules.module.Module"):
            return True
    for node in ctx.inside(cls, cst.Attribute, same_scope=False):
        if node.attr.value == "training":
            return True
    for call in ctx.inside(cls, cst.Call, same_scope=False):
        qual = ctx.callee(call) or ""
        short = qual.rsplit(".", 1)[-1]
        home = ctx.find_class(qual)
        if qual.startswith("torch.nn.functional."):
            if "dropout" in short:
                return True
        elif qual.startswith("torch.nn."):
            if _MODE_LAYERS.search(short):
                return True
            if _DROPOUT_OPTIONAL.match(short) and (number(arg(call, None, "dropout")) or 0) != 0:
                return True
        elif home is not None:
            if _mode_dependent(*home, seen):
                return True
        elif _builds_submodule(ctx, call, qual):
            return True  # self.block = SomethingElse(...)
    return False


def _builds_submodule(ctx: FileContext, call: cst.Call, qual: str) -> bool:
    """``self.block = Something(...)`` with ``Something`` not a torch layer: an unknown
    submodule. Calls of the module's own layers and methods (``h = self.fc(x)``) are not."""
    parent = ctx.parent(call)
    if not isinstance(parent, cst.Assign) or qual.startswith(("torch.", "self.")) or dotted(call.func) is None:
        return False
    return all(isinstance(t.target, cst.Attribute) and dotted(t.target.value) == "self" for t in parent.targets)


def _module_class(ctx: FileContext, cls: cst.ClassDef, depth: int = 0) -> bool:
    """A class of the project that subclasses ``torch.nn.Module`` (directly or via project classes)."""
    for base in cls.bases:
        qual = ctx.qualname(base.value) or ""
        if qual.startswith(("torch.nn.", "pytorch_lightning.", "lightning.")):
            return True
        home = ctx.find_class(qual) if depth < 10 else None
        if home is not None and _module_class(*home, depth + 1):
            return True
    return False


def _is_model(ctx: FileContext, expr: cst.BaseExpression, scope: cst.CSTNode, loaded: set[str]) -> bool:
    """Whether ``expr`` is a model whose output depends on train/eval mode, as far as the
    project shows: built from an nn.Module class of the project, an nn.Sequential or
    torchvision/timm; or a parameter or ``self.`` attribute named like a model; or something
    that gets ``load_state_dict``. Plain functions named ``*_model`` are not models."""
    name = dotted(expr)
    if name is None or name == "self":
        return False
    found = ctx.origin(expr)
    if found is not None:
        there, built = found
        qual = there.callee(built) or ""
        home = there.find_class(qual)
        if home is not None:
            return _module_class(*home) and _mode_dependent(*home, set())
        if qual == "torch.nn.Sequential":
            return any(_MODE_LAYERS.search(there.callee(c) or "") for c in there.inside(built, cst.Call, False))
        return qual.startswith(("torchvision.models.", "timm.create_model")) or (
            name in loaded and "from_pretrained" not in qual and "load" not in qual)
    if name in loaded:
        return True
    head = name.split(".")[0]
    variable = name.startswith("self.") or (
        isinstance(scope, cst.FunctionDef) and head in _parameters(scope))
    last = name.rsplit(".", 1)[-1]
    return variable and bool(_MODEL_NAME.search(last)) and not _BUILDER_NAME.search(last)


def _loaded_names(ctx: FileContext) -> set[str]:
    return {dotted(receiver(c)) for c in ctx.nodes(cst.Call)  # type: ignore[misc]
            if method_name(c) == "load_state_dict" and dotted(receiver(c))}


def _parameters(func: cst.FunctionDef) -> list[str]:
    return [p.name.value for p in (*func.params.posonly_params, *func.params.params)]


def _put_in_eval(ctx: FileContext, scope: cst.CSTNode, name: str, depth: int = 0) -> bool:
    """Memoised per scope and name (the first answer, found from the shallowest depth, stands)."""
    known: dict[tuple[int, str], bool] = ctx.memo("put_in_eval", dict)  # type: ignore[assignment]
    key = (id(scope), name)
    if key not in known:
        known[key] = False  # guards recursion
        known[key] = _find_put_in_eval(ctx, scope, name, depth)
    return known[key]


def _find_put_in_eval(ctx: FileContext, scope: cst.CSTNode, name: str, depth: int = 0) -> bool:
    """Whether the file puts ``name`` (as seen from ``scope``) in eval mode where it counts:
    the class for ``self.x``; for a local, the function or a helper of the file it is passed
    to; for a parameter, a caller in the file; for a global, the module's own statements,
    a helper it is passed to, or a function that uses the global."""
    if name.startswith("self."):
        cls = scope if isinstance(scope, cst.ClassDef) else ctx.enclosing_class(scope)
        return name in _eval_targets(ctx, cls or ctx.module)
    module = isinstance(scope, cst.Module)
    if name in _eval_targets(ctx, scope, same_scope=module) or _helper_puts_in_eval(ctx, scope, name, depth):
        return True
    if module:
        return _global_put_in_eval(ctx, name)
    if not isinstance(scope, cst.FunctionDef):
        return False
    head = name.split(".")[0]
    params = _parameters(scope)
    if head in params:
        return depth < 3 and _callers_put_in_eval(ctx, scope, params.index(head), head, name, depth)
    if ctx.binds(scope, head):
        return False
    outer = ctx.scope(scope)  # a free variable: the enclosing function's (or the module's)
    while isinstance(outer, cst.ClassDef):
        outer = ctx.scope(outer)
    return _put_in_eval(ctx, outer, name, depth + 1)


def _helper_puts_in_eval(ctx: FileContext, scope: cst.CSTNode, name: str, depth: int) -> bool:
    """``scope`` passes ``name`` to a function of this file that puts that parameter in eval mode."""
    if depth >= 3:
        return False
    for call in ctx.inside(scope, cst.Call):
        callee = dotted(call.func) or ""
        funcs = ctx.flow.functions(callee.rsplit(".", 1)[-1])
        if len(funcs) != 1 or not ctx.flow.calls(call, funcs[0]):
            continue
        func = funcs[0]
        positional = [*func.params.posonly_params, *func.params.params]
        if ctx.flow.method_class(func) is not None:
            positional = positional[1:]
        for i, given in enumerate(a for a in call.args if a.keyword is None and not a.star):
            if dotted(given.value) == name and i < len(positional) \
                    and positional[i].name.value in _eval_targets(ctx, func):
                return True
        for given in call.args:
            if given.keyword is not None and dotted(given.value) == name \
                    and given.keyword.value in _eval_targets(ctx, func):
                return True
    return False


def _global_put_in_eval(ctx: FileContext, name: str) -> bool:
    """A function of the file that does not bind ``name`` itself puts the global in eval mode."""
    head = name.split(".")[0]
    return any(not ctx.binds(func, head) and name in _eval_targets(ctx, func) for func in ctx.nodes(cst.FunctionDef))


def _callers_put_in_eval(ctx: FileContext, func: cst.FunctionDef, index: int, param: str, name: str,
                         depth: int) -> bool:
    """A caller in the file passes a model it put in eval mode. With no caller in the file
    the caller is elsewhere: assume it handles the mode if this file uses eval() at all."""
    method = ctx.enclosing_class(func) is not None
    callers = 0
    for call in ctx.flow.calls_named(func.name.value):
        callee = dotted(call.func) or ""
        callers += 1
        given = dotted(arg(call, index - 1 if method and "." in callee else index, param))
        if given is not None and _put_in_eval(ctx, ctx.scope(call), given + name[len(param):], depth + 1):
            return True
    return callers == 0 and bool(_eval_targets(ctx, ctx.module))


@rule("TTL501", "inference-without-eval",
      "A model runs under no_grad/inference_mode (or right after load_state_dict) without .eval().",
      triggers=(("no_grad|inference_mode|load_state_dict|set_grad_enabled|"
                r"(val|valid|validation|test|testing|eval|dev)_?(loader|dataloader|dl|data|set|ds|batches)"),))
def inference_without_eval(ctx: FileContext) -> Iterator[Finding]:
    loaded = _loaded_names(ctx)
    for scope in [ctx.module, *ctx.nodes(cst.FunctionDef)]:
        regions = _regions(ctx, scope)
        region_ids = {id(r) for r in regions}
        calls = ctx.inside(scope, cst.Call)
        training = bool(backward_calls(ctx, scope))
        region_of = {id(c): _region_of(ctx, c, region_ids, scope) for c in calls}
        outside = {dotted(c.func) for c in calls if region_of[id(c)] is None}
        loads = _ScopeLoads(ctx, calls) if loaded else None
        trained_in: dict[int, set[str]] = {}
        reported: set[str] = set()
        for call in calls:
            name = dotted(call.func)
            if name is None or name in reported:
                continue
            region = region_of[id(call)]
            quiet = region is not None
            after_load = not quiet and name in loaded and not training and loads.after_load(ctx, call, name)  # type: ignore[union-attr]
            evaluation = None if quiet or after_load else _evaluation_loop(ctx, call)
            if not (quiet or after_load or evaluation) or not _is_model(ctx, call.func, scope, loaded):
                continue
            if quiet:
                if id(region) not in trained_in:
                    trained_in[id(region)] = {dotted(receiver(c)) for c in ctx.inside(region, cst.Call, False)
                                              if method_name(c) == "train"}  # type: ignore[misc]
                if name in trained_in[id(region)]:
                    continue  # the author asks for training mode on purpose
            if training and name not in outside:
                continue  # a frozen teacher / target network in a training step
            if training and _inside_training_iteration(ctx, call):
                continue  # e.g. a GAN sampling progress images between its own updates
            if _put_in_eval(ctx, scope, name):
                continue
            if not _values_used(ctx, call, scope):
                continue  # a smoke test or a batch-norm statistics refresh: only shapes are read
            reported.add(name)
            if quiet:
                why = f"under {_region_label(ctx, region)}"  # type: ignore[arg-type]
            elif evaluation:
                why = f"on `{evaluation}` (an evaluation pass)"
            else:
                why = "right after load_state_dict()"
            yield ctx.report(
                "TTL501", call,
                f"`{name}` runs {why} without {name}.eval(), so dropout and batch norm still act as in "
                f"training; call {name}.eval() before inference",
            )


def _values_used(ctx: FileContext, call: cst.Call, scope: cst.CSTNode) -> bool:
    """Whether the output's values are read: not when the result is discarded, or bound to a
    name whose every use reads only its shape (``y.shape``, ``y.size()``, ``len(y)``)."""
    parent = ctx.parent(call)
    if isinstance(parent, cst.Expr):
        return False
    if not isinstance(parent, cst.Assign) or len(parent.targets) != 1 or not isinstance(parent.targets[0].target, cst.Name):
        return True
    uses = [n for n in ctx.loads(parent.targets[0].target.value, scope) if ctx.pre(n) > ctx.pre(call)]
    if not uses:
        return True  # returned or used in a way this file does not show
    for use in uses:
        up = ctx.parent(use)
        if isinstance(up, cst.Attribute) and up.value is use and up.attr.value in _SHAPE_ONLY:
            continue
        if isinstance(up, cst.Arg) and isinstance(ctx.parent(up), cst.Call) and dotted(ctx.parent(up).func) == "len":  # type: ignore[union-attr]
            continue
        return True
    return False


_EVAL_DATA = re.compile(r"(^|_)(val|valid|validation|test|testing|eval|dev)_?(loader|dataloader|dl|data|set|ds|batches)s?$"
                        r"|^(val|valid|test)$", re.IGNORECASE)


def _evaluation_loop(ctx: FileContext, call: cst.Call) -> str | None:
    """The validation/test loader the innermost loop around ``call`` iterates (``for x, y in
    val_loader``, ``enumerate(test_loader)``, ``tqdm(val_loader)``), when that loop itself
    runs no ``backward()``: an evaluation pass, whatever the outputs then feed."""
    loop = _innermost_loop(ctx, call)
    if not isinstance(loop, cst.For):
        return None
    source: cst.BaseExpression | None = loop.iter
    while isinstance(source, cst.Call) and (ctx.callee(source) or "").rsplit(".", 1)[-1] in ("enumerate", "tqdm", "iter"):
        source = arg(source, 0, "iterable")
    name = dotted(source)
    if name is None or not _EVAL_DATA.search(name.rsplit(".", 1)[-1]) or backward_calls(ctx, loop):
        return None
    return name


def _region_label(ctx: FileContext, region: cst.CSTNode) -> str:
    """How the no-grad region was written: ``torch.inference_mode()``, ``torch.no_grad()``, ..."""
    holder = ctx.parent(region)
    exprs = [d.decorator for d in holder.decorators] if isinstance(holder, cst.FunctionDef) else \
        [i.item for i in holder.items] if isinstance(holder, cst.With) else []
    for expr in exprs:
        if _is_no_grad(ctx, expr):
            qual = ctx.qualname(expr.func if isinstance(expr, cst.Call) else expr) or ""
            if "inference_mode" in qual:
                return "torch.inference_mode()"
            if qual == "torch.set_grad_enabled":
                return "torch.set_grad_enabled(False)"
    return "torch.no_grad()"


def _region_of(ctx: FileContext, call: cst.Call, regions: set[int], scope: cst.CSTNode) -> cst.CSTNode | None:
    """The no-grad region that holds ``call``, if any."""
    if not regions:
        return None
    for a in ctx.ancestors(call):
        if id(a) in regions:
            return a
        if a is scope:
            return None
    return None


class _ScopeLoads:
    """Where each name first gets ``load_state_dict`` in a scope, and which names the scope trains."""

    def __init__(self, ctx: FileContext, calls: list[cst.Call]) -> None:
        self.first: dict[str, int] = {}
        self.optimizer = False
        self.trained: set[str] = set()
        for c in calls:
            target = dotted(receiver(c))
            if method_name(c) == "load_state_dict" and target:
                self.first.setdefault(target, ctx.pre(c))
            elif method_name(c) == "train" and target:
                self.trained.add(target)
            if (ctx.callee(c) or "").startswith("torch.optim."):
                self.optimizer = True

    def after_load(self, ctx: FileContext, call: cst.Call, name: str) -> bool:
        """The scope loads weights into ``name`` before this call and never trains it."""
        first = self.first.get(name)
        return first is not None and first < ctx.pre(call) and not self.optimizer and name not in self.trained


def _innermost_loop(ctx: FileContext, node: cst.CSTNode) -> cst.CSTNode | None:
    for a in ctx.ancestors(node):
        if isinstance(a, (cst.For, cst.While)):
            return a
        if isinstance(a, (cst.FunctionDef, cst.ClassDef)):
            return None
    return None


def _inside_training_iteration(ctx: FileContext, call: cst.Call) -> bool:
    """The call shares a loop iteration with a ``backward()``: part of the training step
    itself, not a separate evaluation pass (which would sit outside the batch loop)."""
    loop = _innermost_loop(ctx, call)
    if loop is None:
        return False
    known: dict[int, bool] = ctx.memo("training_iterations", dict)  # type: ignore[assignment]
    if id(loop) not in known:
        known[id(loop)] = any(_innermost_loop(ctx, b) is loop for b in backward_calls(ctx, loop))
    return known[id(loop)]


# Functional dropouts: the mode flag is an argument, and its default ignores module.eval().
_FUNCTIONAL_DROPOUT = {
    "torch.nn.functional.dropout": True, "torch.nn.functional.dropout1d": True,
    "torch.nn.functional.dropout2d": True, "torch.nn.functional.dropout3d": True,
    "torch.nn.functional.alpha_dropout": False, "torch.nn.functional.feature_alpha_dropout": False,
}


@rule("TTL502", "functional-dropout-without-training",
      "F.dropout (and dropout2d, alpha_dropout, ...) in a module without training=self.training.",
      triggers=(r"dropout(\dd)?\(", r"\bclass\b"), fixable=True)
def functional_dropout_without_training(ctx: FileContext) -> Iterator[Finding]:
    for call in ctx.nodes(cst.Call):
        qual = ctx.callee(call)
        if qual not in _FUNCTIONAL_DROPOUT or any(a.star for a in call.args) or arg(call, 2, "training") is not None:
            continue
        method = ctx.scope(call)
        cls = ctx.scope(method) if isinstance(method, cst.FunctionDef) else None
        if not isinstance(cls, cst.ClassDef) or not _module_class(ctx, cls):
            continue
        params = _parameters(method)  # type: ignore[arg-type]
        if not params or params[0] != "self":
            continue
        name = qual.rsplit(".", 1)[-1]  # type: ignore[union-attr]
        effect = ("stays on after model.eval(), so inference is random" if _FUNCTIONAL_DROPOUT[qual]  # type: ignore[index]
                  else "is never applied, not even in training")
        end = ctx.position(call.args[-1].value).end if call.args else None
        fix = None
        if end is not None:
            edit = Edit(", training=self.training", end.line, end.column + 1, end.line, end.column + 1)
            fix = Fix("Pass training=self.training", (edit,))
        yield ctx.report(
            "TTL502", call,
            f"F.{name} without training= {effect}: unlike nn.Dropout it does not follow train()/eval(); "
            f"pass training=self.training",
            fix,
        )


def _sets_train(call: cst.Call) -> bool:
    """``m.train()``, ``m.train(True)``, ``m.train(phase == "train")``: anything but a literal False."""
    flag = arg(call, 0, "mode")
    return method_name(call) == "train" and not (isinstance(flag, cst.Name) and flag.value == "False")


def _local_callee(ctx: FileContext, call: cst.Call) -> cst.FunctionDef | None:
    callee = dotted(call.func)
    funcs = ctx.flow.functions(callee.rsplit(".", 1)[-1]) if callee else []
    return funcs[0] if len(funcs) == 1 and ctx.flow.calls(call, funcs[0]) else None


def _passed(ctx: FileContext, call: cst.Call, func: cst.FunctionDef) -> list[tuple[str, str]]:
    """(argument name in the caller, parameter name in ``func``) for plain names passed."""
    positional = [*func.params.posonly_params, *func.params.params]
    if ctx.flow.method_class(func) is not None:
        positional = positional[1:]
    out = []
    plain = [a for a in call.args if a.keyword is None and not a.star]
    for given, param in zip(plain, positional):
        if dotted(given.value):
            out.append((dotted(given.value), param.name.value))  # type: ignore[arg-type]
    for given in call.args:
        if given.keyword is not None and dotted(given.value):
            out.append((dotted(given.value), given.keyword.value))  # type: ignore[arg-type]
    return out


def _function_facts(ctx: FileContext, func: cst.FunctionDef) -> tuple[bool, set[str], bool]:
    """Whether ``func`` runs training steps, the names it calls, whether it calls ``.train()`` on anything."""
    known: dict[int, tuple[bool, set[str], bool]] = ctx.memo("function_facts", dict)  # type: ignore[assignment]
    if id(func) not in known:
        calls = ctx.inside(func, cst.Call, same_scope=False)
        trains = bool(backward_calls(ctx, func)) and bool(optimizer_steps(ctx, func))
        known[id(func)] = (trains, {dotted(c.func) for c in calls if dotted(c.func)},  # type: ignore[misc]
                           any(_sets_train(c) for c in calls))
    return known[id(func)]


def _optimized_names(ctx: FileContext) -> set[str]:
    """Names whose ``.parameters()`` go into a ``torch.optim`` optimizer somewhere in the file."""
    names = set()
    for call in ctx.nodes(cst.Call):
        if (ctx.callee(call) or "").startswith("torch.optim.") and call.args:
            for c in ctx.inside(call.args[0], cst.Call, same_scope=False) + (
                    [call.args[0].value] if isinstance(call.args[0].value, cst.Call) else []):
                if isinstance(c, cst.Call) and method_name(c) in ("parameters", "named_parameters"):
                    names.add((dotted(receiver(c)) or "").rsplit(".", 1)[-1])
    return names


@rule("TTL503", "eval-without-train-in-loop",
      "A training loop puts the model in eval mode (e.g. to validate) and never back in train mode.",
      triggers=(r"\.eval\(|\.train\(\s*(mode\s*=\s*)?False", "backward"))
def eval_without_train_in_loop(ctx: FileContext) -> Iterator[Finding]:
    optimized = _optimized_names(ctx)
    reported: set[int] = set()
    for loop in ctx.nodes(cst.For) + ctx.nodes(cst.While):  # type: ignore[operator]
        calls = ctx.inside(loop, cst.Call)
        if any(_sets_train(c) for c in calls):
            continue
        helpers = [(c, f) for c in calls if (f := _local_callee(ctx, c)) is not None]
        if any(_function_facts(ctx, f)[2] for _, f in helpers):
            continue  # a helper sets train mode (on something: stay on the safe side)
        trained = _trained_in_loop(ctx, loop, calls, helpers)
        if optimized:
            trained = {n for n in trained if n.rsplit(".", 1)[-1] in optimized}
        for node, name in _evals_in_loop(ctx, calls, helpers):
            if name not in trained or id(node) in reported:
                continue
            reported.add(id(node))
            yield ctx.report(
                "TTL503", node,
                f"`{name}` is put in eval mode in this training loop and never back in train mode, so from the "
                f"second iteration on it trains with dropout off and frozen batch-norm statistics; call "
                f"{name}.train() before each training pass",
            )


def _trained_in_loop(ctx: FileContext, loop: cst.CSTNode, calls: list[cst.Call],
                     helpers: list[tuple[cst.Call, cst.FunctionDef]]) -> set[str]:
    """Models the loop trains: called in an iteration with ``backward()`` and an optimizer step
    outside no-grad blocks, or passed to a helper of the file that trains the parameter it calls."""
    names: set[str] = set()
    if backward_calls(ctx, loop) and optimizer_steps(ctx, loop):
        scope = ctx.scope(loop)
        regions = {id(r) for r in _regions(ctx, scope)}
        for c in calls:
            name = dotted(c.func)
            if name and _inside_training_iteration(ctx, c) and _region_of(ctx, c, regions, scope) is None:
                names.add(name)
    for call, func in helpers:
        trains, called, _ = _function_facts(ctx, func)
        if trains:
            names.update(given for given, param in _passed(ctx, call, func) if param in called)
    return names


def _evals_in_loop(ctx: FileContext, calls: list[cst.Call], helpers: list[tuple[cst.Call, cst.FunctionDef]]
                   ) -> list[tuple[cst.CSTNode, str]]:
    out: list[tuple[cst.CSTNode, str]] = []
    for c in calls:
        name = method_name(c)
        flag = arg(c, 0, "mode")
        if name == "eval" or (name == "train" and isinstance(flag, cst.Name) and flag.value == "False"):
            target = dotted(receiver(c))
            if target:
                out.append((c, target))
    for call, func in helpers:
        targets = _eval_targets(ctx, func)
        out.extend((call, given) for given, param in _passed(ctx, call, func) if param in targets)
    return out
