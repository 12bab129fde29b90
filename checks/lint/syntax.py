"""Syntax helpers: questions about one libcst node that need no index and no other file."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import libcst as cst

N = TypeVar("N", bound=cst.CSTNode)
ScopeNode = cst.Module | cst.FunctionDef | cst.ClassDef
SCOPES = (cst.Module, cst.FunctionDef, cst.ClassDef)

# Names that almost always mean these modules even when a snippet forgets the import.
CONVENTIONS = {
    "torch": "torch",
    "nn": "torch.nn",
    "F": "torch.nn.functional",
    "optim": "torch.optim",
    "np": "numpy",
    "tf": "tensorflow",
    "cv2": "cv2",
}



def dotted(expr: cst.CSTNode | None) -> str | None:
    """``a.b.c`` for a chain of names, else None."""
    parts: list[str] = []
    while isinstance(expr, cst.Attribute):
        parts.append(expr.attr.value)
        expr = expr.value
    if isinstance(expr, cst.Name):
        parts.append(expr.value)
        return ".".join(reversed(parts))
    return None


def number(expr: cst.CSTNode | None) -> float | None:
    """The value of an int/float literal (with optional minus sign), else None."""
    sign = 1
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
        sign, expr = -1, expr.expression
    if isinstance(expr, (cst.Integer, cst.Float)):
        try:
            return sign * float(expr.evaluated_value)
        except (TypeError, ValueError):
            return None
    return None


def string(expr: cst.CSTNode | None) -> str | None:
    if isinstance(expr, cst.SimpleString):
        value = expr.evaluated_value
        return value if isinstance(value, str) else None
    return None


def arg(call: cst.Call, index: int | None, keyword: str | None = None) -> cst.BaseExpression | None:
    """The argument given by keyword or at a positional index (stops at ``*args``)."""
    if keyword is not None:
        for a in call.args:
            if a.keyword is not None and a.keyword.value == keyword:
                return a.value
    if index is not None:
        position = 0
        for a in call.args:
            if a.keyword is not None or a.star:
                if a.star:
                    return None
                continue
            if position == index:
                return a.value
            position += 1
    return None


def has_arg(call: cst.Call, index: int | None, keyword: str) -> bool:
    """Whether an argument is given, or might be (``*args``/``**kwargs``)."""
    if any(a.star for a in call.args):
        return True
    return arg(call, index, keyword) is not None


def positional_count(call: cst.Call) -> int:
    return sum(1 for a in call.args if a.keyword is None and not a.star)


def method_name(call: cst.Call) -> str | None:
    return call.func.attr.value if isinstance(call.func, cst.Attribute) else None


def receiver(call: cst.Call) -> cst.BaseExpression | None:
    return call.func.value if isinstance(call.func, cst.Attribute) else None


@dataclass(frozen=True)
class Binding:
    """A name bound in a scope. ``value`` is None when we do not model what it holds; a
    ``cst.Param`` for parameters (see ``dataflow``); the ``cst.For`` for loop targets, with
    ``index`` the path of the target in the unpacking, e.g. ``(1, 0)`` for ``x`` in
    ``for i, (x, y) in ...``."""

    name: str
    value: cst.CSTNode | None
    time: int
    index: int | tuple[int, ...] | None = None  # element of a tuple unpacking


@dataclass(frozen=True)
class Unpacked:
    """A value reached through ``a, b = value``: element ``index`` of it (a path for loops)."""

    value: cst.CSTNode
    index: int | tuple[int, ...]


@dataclass(frozen=True)
class Hit:
    """What a trace found: a tag and the node where the tagged value was made."""

    tag: str
    origin: cst.CSTNode
    home: object = field(default=None, compare=False)  # the FileContext ``origin`` is in (set by the trace)


Step = Callable[[object], Hit | cst.CSTNode | None]

# Methods that return the object itself (modules) and so keep what it is.
OBJECT_CHAIN = frozenset({
    "to", "cuda", "cpu", "eval", "train", "float", "double", "half", "bfloat16",
    "requires_grad_", "share_memory",
})
