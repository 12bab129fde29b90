"""Pairing rules: how the tensors of a reference unit (one Keras layer's torch form, from ``tf2torch port``) land in
a unit of the user's module. One small entry per kind of pairing; each returns the candidate assignments
(variants) that fit by shape, most likely first, so that the numbers can choose among them.

An assignment is a list of :class:`Put`: user tensor <- reference tensor, through extra transform steps,
possibly as one block of a packed tensor, or zeros.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from migrate.porting.transforms import Step
from migrate.transferring.trace import Unit


@dataclass(frozen=True)
class Put:
    user: str  # the user's state key
    ref: str | None  # the reference module's state key; None: zeros
    steps: tuple[Step, ...] = ()
    pack: tuple[int, int] | None = None


#: A reference item is one unit, or several units that one user unit may take together (a Keras MHA's four
#: projections); ``zero`` names reference tensors with no Keras weight (they must be zero).
Rule = Callable[[list[Unit], Unit, set[str]], list[list[Put]]]
RULES: list[tuple[str, Rule]] = []


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES.append((name, fn))
        return fn
    return register


@rule("same names and shapes")
def same(refs: list[Unit], user: Unit, zero: set[str]) -> list[list[Put]]:
    if len(refs) != 1 or refs[0].tensors != user.tensors:
        return []
    ref = refs[0]
    return [[Put(user.key(n), None if ref.key(n) in zero else ref.key(n)) for n in user.tensors]]


@rule("same shapes in order")
def positional(refs: list[Unit], user: Unit, zero: set[str]) -> list[list[Put]]:
    """Tensors paired in registration order, each copied or (2-D) transposed: a hand-written ``x @ W`` layer,
    a cell with its own parameter names. The reference's zero tensors may be absent on the user's side."""
    if len(refs) != 1:
        return []
    ref = refs[0]
    names = [n for n in ref.tensors if ref.key(n) not in zero] if len(ref.tensors) != len(user.tensors) \
        else list(ref.tensors)
    if len(names) != len(user.tensors) or not names:
        return []
    options = []
    for r, (u, shape) in zip(names, user.tensors.items()):
        fits = []
        if ref.tensors[r] == shape:
            fits.append(())
        if len(shape) == 2 and ref.tensors[r] == shape[::-1]:
            fits.append((("permute", (1, 0)),))
        if not fits:
            return []
        options.append([Put(user.key(u), None if ref.key(r) in zero else ref.key(r), steps) for steps in fits])
    return [list(choice) for choice in itertools.islice(itertools.product(*options), 8)]


@rule("Keras MultiHeadAttention -> nn.MultiheadAttention (q, k, v packed)")
def packed_attention(refs: list[Unit], user: Unit, zero: set[str]) -> list[list[Put]]:
    if len(refs) != 4 or "in_proj_weight" not in user.tensors:
        return []
    q, k, v, o = refs
    puts = [Put(user.key("in_proj_weight"), p.key("weight"), (), (i, 3)) for i, p in enumerate((q, k, v))]
    if "in_proj_bias" in user.tensors:
        if "bias" not in q.tensors:
            return []
        puts += [Put(user.key("in_proj_bias"), p.key("bias"), (), (i, 3)) for i, p in enumerate((q, k, v))]
    puts.append(Put(user.key("out_proj.weight"), o.key("weight")))
    if "out_proj.bias" in user.tensors:
        puts.append(Put(user.key("out_proj.bias"), o.key("bias")))
    e = user.tensors["in_proj_weight"]
    if q.tensors.get("weight") != (e[0] // 3, e[1]) or o.tensors.get("weight") != user.tensors["out_proj.weight"]:
        return []
    return [puts]


def candidates(refs: list[Unit], user: Unit, zero: set[str]) -> list[tuple[str, list[Put]]]:
    """Every variant any rule offers for (refs, user), the first rule's first."""
    out = []
    for name, fn in RULES:
        out += [(name, variant) for variant in fn(refs, user, zero)]
        if out and name == "same names and shapes":
            break  # identical layouts need no other guess
    return out
