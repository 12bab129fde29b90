"""What trains: optimizer and scheduler objects, their steps, and ``backward()`` calls.

Shared by the training-loop rules and the train/eval-mode rules, so neither rule module
imports the other.
"""
from __future__ import annotations

import re

import libcst as cst

from .context import FileContext
from .syntax import dotted, method_name, positional_count, receiver

_OPT_NAME = re.compile(r"(^|_)(opt|optim|optimizer|optimiser)s?\d*(_|$)|optimi[sz]er", re.IGNORECASE)
_SCHED_NAME = re.compile(r"sched", re.IGNORECASE)


def last_name(expr: cst.CSTNode | None) -> str:
    name = dotted(expr) or ""
    return name.rsplit(".", 1)[-1]


def is_scheduler(ctx: FileContext, expr: cst.CSTNode | None) -> bool:
    kind = ctx.kind(expr) or ""
    return "lr_scheduler" in kind or "schedule" in kind.lower() or bool(_SCHED_NAME.search(last_name(expr)))


def is_optimizer(ctx: FileContext, expr: cst.CSTNode | None) -> bool:
    if expr is None or is_scheduler(ctx, expr):
        return False
    kind = ctx.kind(expr) or ""
    return kind.startswith("torch.optim.") or bool(_OPT_NAME.search(last_name(expr)))


def is_scaler(ctx: FileContext, expr: cst.CSTNode | None) -> bool:
    kind = ctx.kind(expr) or ""
    return kind.endswith("GradScaler") or "scaler" in last_name(expr).lower()


def optimizer_steps(ctx: FileContext, within: cst.CSTNode) -> list[tuple[cst.Call, cst.BaseExpression]]:
    """``opt.step()`` and AMP's ``scaler.step(opt)`` calls, with the optimizer expression."""
    out = []
    for call in ctx.inside(within, cst.Call):
        if method_name(call) != "step":
            continue
        recv = receiver(call)
        if is_optimizer(ctx, recv) and positional_count(call) <= 1:
            out.append((call, recv))
        elif is_scaler(ctx, recv) and call.args and is_optimizer(ctx, call.args[0].value):
            out.append((call, call.args[0].value))
    return out


def scheduler_steps(ctx: FileContext, within: cst.CSTNode) -> list[cst.Call]:
    return [c for c in ctx.inside(within, cst.Call) if method_name(c) == "step" and is_scheduler(ctx, receiver(c))]


def backward_calls(ctx: FileContext, within: cst.CSTNode) -> list[cst.Call]:
    """``loss.backward()`` with no positional argument (custom ``layer.backward(grad)`` APIs take one)."""
    out = []
    for call in ctx.inside(within, cst.Call):
        if method_name(call) == "backward" and positional_count(call) == 0 or ctx.callee(call) == "torch.autograd.backward":
            out.append(call)
    return out


def stepping_calls(ctx: FileContext, within: cst.CSTNode, depth: int = 0) -> list[cst.Call]:
    """Calls in ``within`` of functions of the project that step an optimizer, themselves or
    through the functions they call (``train()`` -> ``_run_epoch(optimizer=optimizer)``); a call
    that passes a literal ``None`` (``_run_epoch(optimizer=None)``, an evaluation) does not count."""
    out = []
    for call in ctx.inside(within, cst.Call):
        if depth and any(isinstance(a.value, cst.Name) and a.value.value == "None" for a in call.args):
            continue
        found = ctx.flow.target(call)
        if found is not None and found[1] is not ctx.scope(call):
            there, func = found
            if _steps(there, func, depth):
                out.append(call)
    return out


def _steps(ctx: FileContext, func: cst.FunctionDef, depth: int) -> bool:
    """``func`` steps an optimizer, directly or (up to three calls deep) through the project."""
    def compute() -> bool:
        if optimizer_steps(ctx, func):
            return True
        if depth >= 3:
            return False
        ctx.memo(f"steps:{id(func)}", lambda: False)  # a recursive call sees False
        return bool(stepping_calls(ctx, func, depth + 1))
    return bool(ctx.memo(f"steps:{id(func)}", compute))
