"""Training-loop order: gradients reset every step, schedulers stepped after optimizers.

TensorFlow's ``GradientTape`` computes fresh gradients every step; PyTorch adds each
``backward()`` into ``.grad``, so a hand-ported loop that forgets to reset keeps
summing gradients from every earlier batch.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from ..context import FileContext
from ..finding import Finding, Fix
from ..rule import rule
from ..syntax import dotted, method_name, receiver
from ..training import backward_calls, is_optimizer, last_name, optimizer_steps, scheduler_steps, stepping_calls

LOOPS = (cst.For, cst.While)
_RESET_NAME = re.compile(r"zero_grad|(reset|clear|zero)_?grad", re.IGNORECASE)


def _resetting_functions(ctx: FileContext) -> set[str]:
    """Names of functions in this file that reset gradients themselves (one level deep)."""
    names = set()
    for func in ctx.nodes(cst.FunctionDef):
        if _has_direct_reset(ctx, func, set()):
            names.add(func.name.value)
    return names


def _has_direct_reset(ctx: FileContext, within: cst.CSTNode, helpers: set[str]) -> bool:
    for call in ctx.inside(within, cst.Call, same_scope=False):
        name = last_name(call.func)
        if _RESET_NAME.search(name) or name in helpers:
            return True
        recv = receiver(call)
        # p.grad.zero_(), p.grad.detach_(), p.grad.data.zero_() ...
        if recv is not None and ".grad" in f".{dotted(recv) or ''}" and (method_name(call) or "").endswith("_"):
            return True
    for node in ctx.inside(within, cst.AssignTarget, same_scope=False):
        if isinstance(node.target, cst.Attribute) and node.target.attr.value == "grad":
            return True  # p.grad = None
    for node in ctx.inside(within, cst.Del, same_scope=False):
        if isinstance(node.target, cst.Attribute) and node.target.attr.value == "grad":
            return True
    return False


@rule("TTL101", "missing-zero-grad",
      "Loop calls backward() and optimizer.step() but never resets gradients.",
      triggers=("backward", r"\.step\("), fixable=True)
def missing_zero_grad(ctx: FileContext) -> Iterator[Finding]:
    helpers: set[str] | None = None
    for loop in ctx.nodes(cst.For) + ctx.nodes(cst.While):  # type: ignore[operator]
        backwards = backward_calls(ctx, loop)
        if not backwards:
            continue
        steps = optimizer_steps(ctx, loop)
        if not steps:
            continue
        # Only the innermost loop that has both is responsible.
        if any(isinstance(inner, LOOPS) and backward_calls(ctx, inner) and optimizer_steps(ctx, inner)
               for inner in ctx.inside(loop, cst.For) + ctx.inside(loop, cst.While)):  # type: ignore[operator]
            continue
        if helpers is None:
            helpers = _resetting_functions(ctx)
        if _has_direct_reset(ctx, loop, helpers):
            missed = _optimizer_not_reset(ctx, loop, steps, helpers)
            if missed is not None:
                step, optimizer = missed
                name = ctx.code(optimizer)
                yield ctx.report(
                    "TTL101", step,
                    f"{name}'s gradients are never reset in this loop (only other optimizers' zero_grad() run), "
                    f"so every backward() adds to the last; call {name}.zero_grad() once per iteration")
            continue
        step, optimizer = steps[0]
        opt_code = ctx.code(optimizer)
        yield ctx.report(
            "TTL101", step,
            f"gradients are never reset in this loop, so every backward() adds to the last; "
            f"call {opt_code}.zero_grad() once per iteration",
            _insert_zero_grad(ctx, backwards, steps, opt_code),
        )


def _optimizer_not_reset(ctx: FileContext, loop: cst.CSTNode, steps: list[tuple[cst.Call, cst.BaseExpression]],
                         helpers: set[str]) -> tuple[cst.Call, cst.BaseExpression] | None:
    """The step of an optimizer whose own ``zero_grad()`` is missing, when every reset in the
    loop is ``<optimizer>.zero_grad()`` of another optimizer (GAN loops with ``opt_d``/``opt_g``).
    Any other reset (``model.zero_grad()``, ``p.grad = None``, a helper) may cover it: None."""
    reset: set[str] = set()
    for call in ctx.inside(loop, cst.Call, same_scope=False):
        name = last_name(call.func)
        if name in helpers:
            return None
        if not _RESET_NAME.search(name):
            continue
        target = receiver(call)
        if method_name(call) != "zero_grad" or not is_optimizer(ctx, target) or dotted(target) is None:
            return None
        reset.add(dotted(target))  # type: ignore[arg-type]
    if not reset or any(isinstance(n.target, cst.Attribute) and n.target.attr.value == "grad"
                        for n in ctx.inside(loop, cst.AssignTarget, same_scope=False)):
        return None  # the reset is something else (p.grad.zero_(), p.grad = None)
    for step, optimizer in steps:
        name = dotted(optimizer)
        if name is not None and name not in reset:
            return step, optimizer
    return None


def _insert_zero_grad(ctx: FileContext, backwards: list[cst.Call],
                      steps: list[tuple[cst.Call, cst.BaseExpression]], opt_code: str) -> Fix | None:
    """Insert ``opt.zero_grad()`` just above the backward statement.

    Only when there is one backward and one step, in the same block, step after backward:
    anything else (several optimizers, conditional step for accumulation) needs a human.
    """
    if len(backwards) != 1 or len(steps) != 1 or dotted(steps[0][1]) is None:
        return None
    back_stmt = ctx.statement(backwards[0])
    step_stmt = ctx.statement(steps[0][0])
    back_line, step_line = ctx.parent(back_stmt), ctx.parent(step_stmt)
    if not (isinstance(back_line, cst.SimpleStatementLine) and isinstance(step_line, cst.SimpleStatementLine)):
        return None
    if ctx.parent(back_line) is not ctx.parent(step_line) or ctx.pre(step_line) < ctx.pre(back_line):
        return None
    if len(back_line.body) != 1:
        return None
    edit = ctx.insert_before(back_line, f"{opt_code}.zero_grad()")
    return Fix(f"Insert `{opt_code}.zero_grad()` before backward()", (edit,)) if edit else None


@rule("TTL102", "scheduler-before-optimizer",
      "scheduler.step() runs before optimizer.step() in the same loop.",
      triggers=("sched", r"\.step\("))
def scheduler_before_optimizer(ctx: FileContext) -> Iterator[Finding]:
    reported: set[int] = set()
    for loop in ctx.nodes(cst.For) + ctx.nodes(cst.While):  # type: ignore[operator]
        direct = [call for call, _ in optimizer_steps(ctx, loop)]
        steps = direct + stepping_calls(ctx, loop)
        if not steps:
            continue
        for sched in scheduler_steps(ctx, loop):
            if id(sched) in reported:
                continue
            reachable = [s for s in steps if not _exclusive(ctx, s, sched, loop)]
            if not reachable or min(ctx.pre(s) for s in reachable) < ctx.pre(sched):
                continue
            first = min(reachable, key=ctx.pre)
            where = "" if first in direct else f" (it steps in {ctx.code(first.func)}())"
            if _guarded_by_loop_variable(ctx, sched, loop):
                continue
            reported.add(id(sched))
            yield ctx.report(
                "TTL102", sched,
                f"scheduler.step() runs before optimizer.step(){where} in this loop, which skips the first "
                "learning rate; call it after optimizer.step()",
            )


def _exclusive(ctx: FileContext, a: cst.CSTNode, b: cst.CSTNode, loop: cst.CSTNode) -> bool:
    """``a`` and ``b`` sit in different branches of one ``if``/``elif``/``else`` inside ``loop``:
    they never run in the same iteration."""
    for node in ctx.ancestors(a):
        if node is loop:
            return False
        if isinstance(node, cst.If) and ctx.contains(node, b):
            in_body = ctx.contains(node.body, a)
            return in_body != ctx.contains(node.body, b) and (node.orelse is not None)
    return False


def _guarded_by_loop_variable(ctx: FileContext, call: cst.Call, loop: cst.CSTNode) -> bool:
    """``if epoch > 0: scheduler.step()`` at the top of a loop steps for the previous epoch."""
    names = set()
    if isinstance(loop, cst.For):
        names = {n.value for n in ctx.inside(loop.target, cst.Name, same_scope=False)}
        if isinstance(loop.target, cst.Name):
            names.add(loop.target.value)
    for a in ctx.ancestors(call):
        if a is loop:
            return False
        if isinstance(a, cst.If):
            test_names = {n.value for n in ctx.inside(a.test, cst.Name, same_scope=False)}
            if isinstance(a.test, cst.Name):
                test_names.add(a.test.value)
            if test_names & names:
                return True
    return False
