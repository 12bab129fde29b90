"""The two expression languages inside a ``model.pt2``, parsed with a grammar and written out again.

torch ``exec``s a program's guard code and ``sympy.sympify``s (``eval``) its symbolic shape expressions.
Neither is ever evaluated here: each string is parsed with ``ast.parse(mode="eval")``, every node is
checked against an allow-list, and the text torch later reads is re-rendered from the checked tree
(:func:`guard` and :func:`sym_expr` return it). Sizes are capped so that nothing torch then evaluates can
cost more than a few milliseconds: text length, nesting depth, node count, integer size and exponents.
"""

from __future__ import annotations

import ast
import re

#: Longest guard or expression text, deepest bracket nesting, most nodes in one tree.
MAX_TEXT = 20_000
MAX_DEPTH = 64
MAX_NODES = 4_000
#: Largest integer literal (torch's int_oo is written as None elsewhere) and exponent.
MAX_INT = 2**64
MAX_EXPONENT = 64
#: Input names in guards (``L['image']``) and shape symbols (``s0``, ``u3``, ``zuf0``).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
SYMBOL = re.compile(r"[a-z]{1,4}[0-9]{1,9}")


class GrammarError(ValueError):
    """The text is outside the grammar; the message names the construct."""


# ---- guard code: Python over L['name'].size()[k] ------------------------------------------------------------

_GUARD_CALLS = {"max": (2, 8), "min": (2, 8), "abs": (1, 1), "round": (1, 2), "sym_float": (1, 1)}
_MATH_CALLS = {"floor", "ceil", "trunc"}
_TENSOR_QUERIES = {"size": True, "stride": True, "storage_offset": False, "dim": False}  # indexed?
_GUARD_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Div, ast.Pow)
_GUARD_CMPOPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def guard(text: str) -> str:
    """The guard ``text`` re-rendered from its checked syntax tree; GrammarError if outside the grammar."""
    tree = _parse(text)
    _Guard().visit(tree.body)
    return ast.unparse(tree)


def _parse(text: str) -> ast.Expression:
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise GrammarError(f"text longer than {MAX_TEXT} characters" if isinstance(text, str) else "not a string")
    depth = deepest = 0
    for char in text:  # before ast.parse: CPython's parser recurses on nesting
        depth += char in "([{"
        depth -= char in ")]}"
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise GrammarError(f"brackets nested {deepest} deep (at most {MAX_DEPTH})")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise GrammarError(f"not an expression ({type(exc).__name__})") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise GrammarError(f"{count} syntax nodes (at most {MAX_NODES})")
    return tree


def _int(node: ast.AST) -> int | None:
    """An integer literal, possibly negated, within :data:`MAX_INT`; None for anything else."""
    negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    inner = node.operand if negative else node
    if isinstance(inner, ast.Constant) and type(inner.value) is int and abs(inner.value) <= MAX_INT:
        return -inner.value if negative else inner.value
    return None


class _Guard(ast.NodeVisitor):
    def generic_visit(self, node: ast.AST) -> None:
        raise GrammarError(f"{type(node).__name__} ({_show(node)})")

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        for value in node.values:
            self.visit(value)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            self.generic_visit(node)
        self.visit(node.operand)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if not isinstance(node.op, _GUARD_BINOPS):
            raise GrammarError(f"operator {type(node.op).__name__} ({_show(node)})")
        if isinstance(node.op, ast.Pow):
            exponent = _int(node.right)
            if exponent is None or not 0 <= exponent <= MAX_EXPONENT or _has_pow(node.left):
                raise GrammarError(f"a power other than a single one by 0..{MAX_EXPONENT} ({_show(node)})")
        self.visit(node.left)
        self.visit(node.right)

    def visit_Compare(self, node: ast.Compare) -> None:
        if not all(isinstance(op, _GUARD_CMPOPS) for op in node.ops):
            raise GrammarError(f"comparison other than ==, !=, <, <=, >, >= ({_show(node)})")
        for value in (node.left, *node.comparators):
            self.visit(value)

    def visit_Constant(self, node: ast.Constant) -> None:
        if type(node.value) is bool or (type(node.value) is int and node.value <= MAX_INT):
            return
        if type(node.value) is float:
            return
        raise GrammarError(f"constant {_show(node)}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not (isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr == "inf"):
            raise GrammarError(f"attribute {_show(node)}")

    def visit_Subscript(self, node: ast.Subscript) -> None:  # L['x'].size()[k], L['x'].stride()[k]
        call = node.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and _TENSOR_QUERIES.get(call.func.attr) is True and _no_args(call)
                and _input(call.func.value) and _int(node.slice) is not None and 0 <= _int(node.slice) < 64):
            raise GrammarError(f"subscript other than L['input'].size()[k] or .stride()[k] ({_show(node)})")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and _TENSOR_QUERIES.get(func.attr) is False and _input(func.value):
            if not _no_args(node):
                raise GrammarError(f"arguments to {func.attr}() ({_show(node)})")
            return
        if isinstance(func, ast.Name) and func.id in _GUARD_CALLS:
            low, high = _GUARD_CALLS[func.id]
        elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math"
              and func.attr in _MATH_CALLS):
            low, high = 1, 1
        else:
            raise GrammarError(f"call to {_show(func)}")
        if node.keywords or not low <= len(node.args) <= high or any(isinstance(a, ast.Starred) for a in node.args):
            raise GrammarError(f"call with other than {low}..{high} plain arguments ({_show(node)})")
        for arg in node.args:
            self.visit(arg)


def _input(node: ast.AST) -> bool:
    """``L['name']`` with a plain identifier."""
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "L"
            and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
            and IDENTIFIER.fullmatch(node.slice.value) is not None)


def _no_args(call: ast.Call) -> bool:
    return not call.args and not call.keywords


def _has_pow(node: ast.AST) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) for n in ast.walk(node))


def _show(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- symbolic expressions: sympy's srepr ---------------------------------------------------------------------

#: Function name -> (fewest, most) arguments. The names sympy and torch.utils._sympy give the classes
#: ``srepr`` writes for shape arithmetic; booleans and relations for guards on shapes.
_SYMPY_ARITY = {
    **dict.fromkeys(["Add", "Mul", "Max", "Min", "And", "Or"], (2, 64)),
    **dict.fromkeys(["FloorDiv", "Mod", "PythonMod", "CeilDiv", "CleanDiv", "IntTrueDiv", "FloatTrueDiv",
                     "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "LessThan",
                     "StrictGreaterThan", "GreaterThan", "RoundDecimal"], (2, 2)),
    **dict.fromkeys(["Abs", "floor", "ceiling", "Not", "CeilToInt", "FloorToInt", "TruncToInt", "TruncToFloat",
                     "RoundToInt", "ToFloat", "Identity", "sqrt"], (1, 1)),
    **dict.fromkeys(["ModularIndexing", "Where"], (3, 3)),
    "Piecewise": (1, 16),
}
#: Functions whose second argument is an exponent or a shift: a small integer literal only.
_EXPONENTS = {"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"}
_SYMPY_CONSTANTS = {"oo", "true", "false"}
_SYMBOL_FLAGS = {"integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite", "nonzero",
                 "zero", "extended_real"}
#: torch.utils._sympy.functions.OpaqueUnaryFn_<name>: the math functions torch wraps.
_OPAQUE = re.compile(r"OpaqueUnaryFn_(sqrt|cos|cosh|sin|sinh|tan|tanh|asin|acos|atan|exp|log|asinh|log2)")
_FLOAT_TEXT = re.compile(r"-?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?(?:e[-+]?[0-9]{1,3})?|inf|nan)")


def sym_expr(text: str) -> str:
    """The sympy ``srepr`` text re-rendered from its checked tree; GrammarError if outside the grammar."""
    return _sympy(_parse(text).body)


def _sympy(node: ast.AST) -> str:
    if isinstance(node, ast.Name) and node.id in _SYMPY_CONSTANTS:
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Name) \
            and node.operand.id == "oo":
        return "-oo"
    if isinstance(node, ast.Tuple) and len(node.elts) == 2:  # Piecewise's (value, condition) pairs
        return f"({_sympy(node.elts[0])}, {_sympy(node.elts[1])})"
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise GrammarError(f"{type(node).__name__} ({_show(node)})")
    name, args, keywords = node.func.id, node.args, node.keywords
    if any(isinstance(a, ast.Starred) for a in args):
        raise GrammarError(f"starred argument ({_show(node)})")
    if name == "Integer":
        value = _int(args[0]) if len(args) == 1 and not keywords else None
        if value is None:
            raise GrammarError(f"Integer other than one literal within 2**64 ({_show(node)})")
        return f"Integer({value})"
    if name == "Rational":
        values = [_int(a) for a in args]
        if len(values) != 2 or None in values or keywords or values[1] == 0:
            raise GrammarError(f"Rational other than two integer literals ({_show(node)})")
        return f"Rational({values[0]}, {values[1]})"
    if name == "Float":
        return _float(node)
    if name == "Symbol":
        return _symbol(node)
    if keywords:
        raise GrammarError(f"keyword arguments to {name} ({_show(node)})")
    if name in _EXPONENTS:
        exponent = _small_exponent(args[1]) if len(args) == 2 else None
        if exponent is None:
            raise GrammarError(f"{name} other than by an integer literal within +-{MAX_EXPONENT} ({_show(node)})")
        return f"{name}({_sympy(args[0])}, {exponent})"
    if name in _SYMPY_ARITY:
        low, high = _SYMPY_ARITY[name]
    elif _OPAQUE.fullmatch(name):
        low, high = 1, 1
    else:
        raise GrammarError(f"function {name!r} ({_show(node)})")
    if not low <= len(args) <= high:
        raise GrammarError(f"{name} with {len(args)} arguments ({_show(node)})")
    return f"{name}({', '.join(_sympy(a) for a in args)})"


def _small_exponent(node: ast.AST) -> str | None:
    """``Integer(k)`` (or a bare literal) with ``|k| <= MAX_EXPONENT``, as ``Integer(k)`` text."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" \
            and len(node.args) == 1 and not node.keywords:
        node = node.args[0]
    value = _int(node)
    return None if value is None or abs(value) > MAX_EXPONENT else f"Integer({value})"


def _float(node: ast.Call) -> str:
    text = node.args[0].value if len(node.args) == 1 and isinstance(node.args[0], ast.Constant) else None
    precision = [k for k in node.keywords if k.arg == "precision"]
    if (not isinstance(text, str) or not _FLOAT_TEXT.fullmatch(text) or len(node.keywords) != len(precision)
            or len(precision) > 1):
        raise GrammarError(f"Float other than a decimal literal ({_show(node)})")
    bits = _int(precision[0].value) if precision else 53
    if bits is None or not 1 <= bits <= 128:
        raise GrammarError(f"Float precision other than 1..128 bits ({_show(node)})")
    return f"Float({text!r}, precision={bits})"


def _symbol(node: ast.Call) -> str:
    name = node.args[0].value if len(node.args) == 1 and isinstance(node.args[0], ast.Constant) else None
    if not isinstance(name, str) or not SYMBOL.fullmatch(name):
        raise GrammarError(f"Symbol other than a shape symbol like 's0' ({_show(node)})")
    flags = []
    for keyword in node.keywords:
        value = keyword.value
        if keyword.arg not in _SYMBOL_FLAGS or not (isinstance(value, ast.Constant) and type(value.value) is bool):
            raise GrammarError(f"Symbol assumption other than a known flag set to True/False ({_show(node)})")
        flags.append(f"{keyword.arg}={value.value}")
    return f"Symbol({name!r}{''.join(', ' + f for f in flags)})"
