"""Loading checkpoints: ``torch.load`` unpickles, so it can run code from the file.

Migrations pull checkpoints from model zoos, release pages and colleagues' buckets.
``torch.load`` without ``weights_only=True`` (the default only since torch 2.6) runs any
code a crafted pickle carries; ``weights_only=True`` loads tensors and plain containers only.
"""
from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from ..context import FileContext
from ..finding import Finding
from ..rule import rule
from ..syntax import arg

_LOADS = {"torch.load", "torch.serialization.load"}


@rule("TTL601", "torch-load-without-weights-only",
      "torch.load without weights_only=True unpickles the file and can run code from it.",
      # a torch.load( or bare load( call with no weights_only=True later on its line (multi-line calls still
      # match); written literal first, so the regex engine skips to each "load(" instead of trying every position
      triggers=((r"load\((?:(?<=torch\.load\()|(?<![\w.]load\())(?![^\n]*weights_only\s*=\s*True)"
                 r"|partial\(\s*(torch\.)?load\b"), "torch"))
def torch_load_without_weights_only(ctx: FileContext) -> Iterator[Finding]:
    for call in ctx.nodes(cst.Call):
        qual = ctx.callee(call)
        partial = qual in ("functools.partial", "partial")
        if partial:  # load = partial(torch.load, map_location="cpu"): the flag may come with each call
            if ctx.qualname(arg(call, 0, "func")) not in _LOADS or _passed_later(ctx, call):
                continue
        elif qual not in _LOADS:
            continue
        flag = arg(call, None if partial else 3, "weights_only")
        if flag is None and any(a.star == "**" for a in call.args):
            continue  # given through **kwargs, maybe
        if isinstance(flag, cst.Name) and flag.value == "True":
            continue
        if flag is not None and not (isinstance(flag, cst.Name) and flag.value == "False"):
            continue  # a variable: the caller decides
        said = "weights_only=False" if flag is not None else "no weights_only"
        yield ctx.report(
            "TTL601", call,
            f"torch.load with {said} unpickles the file and runs any code a crafted checkpoint carries "
            f"(weights_only=True is the default only since torch 2.6); pass weights_only=True",
        )


def _passed_later(ctx: FileContext, made: cst.Call) -> bool:
    """Some call of the partial object (bound to a name) passes weights_only itself."""
    holder = ctx.parent(made)
    if not (isinstance(holder, cst.Assign) and len(holder.targets) == 1 and isinstance(holder.targets[0].target, cst.Name)):
        return False
    name = holder.targets[0].target.value
    return any(arg(c, None, "weights_only") is not None or any(a.star == "**" for a in c.args)
               for c in ctx.flow.calls_named(name) if isinstance(c.func, cst.Name))
