"""Linting one source text: decode, prefilter, guard, parse once, run the enabled rules.

libcst's parser is native code that recurses once per nesting level and crashes the
whole process (no exception) when it runs out of stack. So before a text reaches it,
CPython's own parser, which stops at its limits with an exception, checks it: a text
CPython gives up on is one TTL000 finding and never reaches libcst. What CPython
accepts is nested at most a few thousand levels deep, except ``and``/``or`` chains,
which are measured. The parse and the rules then run in a thread with a large stack
and a raised recursion limit, so such valid files are analysed instead of crashing.
"""
from __future__ import annotations

import ast
import re
import sys
import threading
from typing import Callable, TypeVar

import libcst as cst

from .context import FileContext
from .finding import Finding
from .registry import PARSE_ERROR, Rule, iter_checks

BOM = "\ufeff"

STACK_BYTES = 512 << 20  # the analysis thread's stack: address space, only the pages used are committed
RECURSION_LIMIT = 50_000  # Python frames allowed while analysing, well inside STACK_BYTES
MAX_BOOL_DEPTH = 5_000  # and/or operands nested in one expression (libcst nests one level per operand)
LIBCST_MAX_STRINGS = 3000  # libcst refuses longer implicit string concatenations
# A text CPython rejects may be newer syntax that libcst reads: it is tried when its nesting is bounded
# (at most this many characters, no deeper brackets than CPython allows, no CPython depth error).
FALLBACK_CHARS = 32_000
MAX_BRACKETS = 200
_LIMIT_ERRORS = ("too many nested parentheses", "too many levels of indentation", "too many statically nested")
_BOOL_WORD = re.compile(r"\b(?:and|or)\b")
_BRACKET = re.compile(r"[][(){}]")

T = TypeVar("T")


def decode(data: bytes, filename: str) -> tuple[str | None, Finding | None]:
    """UTF-8 text of a file, or the TTL000 finding that says why there is none."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        return None, Finding(PARSE_ERROR, f"file is not valid UTF-8 (byte 0x{byte:02x}); save it as UTF-8",
                             filename, row, column, row, column + 1)
    return text, None


def lint_source(source: str, filename: str, codes: list[str]) -> list[Finding]:
    """Findings for one file's text, before noqa and per-file ignores are applied.

    A leading byte-order mark is dropped: positions and fixes refer to the text after it.

    Rules whose trigger words do not occur are skipped; when none remain the file is only
    compiled to catch syntax errors, which is much cheaper than building a libcst tree.
    A text that cannot be analysed gives one TTL000 finding, never an exception.
    """
    text = source[1:] if source.startswith(BOM) else source
    rules = [r for r in iter_checks(codes) if r.may_match(text)]
    report = PARSE_ERROR in codes
    if not rules and not report:
        return []
    try:
        found = deep_call(_lint, text, filename, rules)
    except RecursionError:
        found = [_unanalysable(filename, "too deeply nested for the linter's parser", 1, 1)]
    except MemoryError:
        found = [_unanalysable(filename, "the linter ran out of memory analysing it", 1, 1)]
    return found if report else [f for f in found if f.code != PARSE_ERROR]


def _lint(text: str, filename: str, rules: list[Rule]) -> list[Finding]:
    problem = _compile(text, filename)
    if problem is not None and not (rules and _may_be_newer_syntax(problem, text)):
        return [problem]
    if not rules:
        return []
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        if problem is not None:  # CPython rejected it too, and its message is the better one
            return [problem]
        if "STRING" in exc.message:
            why = (f"more than {LIBCST_MAX_STRINGS} implicitly concatenated strings in one expression: valid "
                   "Python, but more than libcst, the parser the rules use, reads")
        else:
            why = f"valid Python that libcst, the parser the rules use, cannot read ({_first_line(exc.message)})"
        return [_unanalysable(filename, why, exc.raw_line, exc.raw_column + 1)]
    ctx = FileContext(module, text, filename)
    findings: list[Finding] = []
    for rule_ in rules:
        findings.extend(rule_.check(ctx))  # type: ignore[misc]
    return sorted(set(findings), key=lambda f: f.sort_key)


def _compile(text: str, filename: str) -> Finding | None:
    """CPython's verdict: None, or the TTL000 finding for a text it rejects or gives up on.

    Run at the raised recursion limit, so the verdict depends only on CPython's parser
    limits, not on how deep the caller's stack happens to be."""
    try:
        tree = compile(text, filename, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        return _syntax_finding(filename, exc.msg, exc.lineno or 1, exc.offset or 1)
    except ValueError as exc:  # null bytes
        return _syntax_finding(filename, str(exc), 1, 1)
    except (RecursionError, MemoryError) as exc:  # valid grammar, beyond the nesting CPython handles
        detail = f" ({exc})" if str(exc) else ""
        return _unanalysable(filename, f"too deeply nested for Python's own parser{detail}", 1, 1)
    depth, row = _bool_depth(text, tree)
    if depth > MAX_BOOL_DEPTH:
        return _unanalysable(filename, f"an and/or chain {depth} operands deep (the linter's parser "
                                       f"handles {MAX_BOOL_DEPTH})", row, 1)
    return None


def _may_be_newer_syntax(problem: Finding, text: str) -> bool:
    """Whether libcst should still try a text CPython rejected: it reads newer Python than the
    running interpreter. Only small texts (bounded native recursion) and not for depth limits."""
    return (problem.message.startswith("syntax error: ") and len(text) <= FALLBACK_CHARS
            and not any(m in problem.message for m in _LIMIT_ERRORS) and _bracket_depth(text) <= MAX_BRACKETS)


def _bracket_depth(text: str) -> int:
    """Deepest bracket nesting, counting brackets in strings and comments too (an estimate)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(text):
        depth = depth + 1 if bracket in "([{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _bool_depth(text: str, tree: ast.Module) -> tuple[int, int]:
    """Deepest nesting of and/or operands in one expression, and its row. CPython keeps a
    chain flat, libcst nests one level per operand; the tree is only walked when the file
    has that many and/or words at all."""
    if len(_BOOL_WORD.findall(text)) <= MAX_BOOL_DEPTH:
        return 0, 1
    deepest, row = 0, 1
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.BoolOp):
            depth += len(node.values) - 1
            if depth > deepest:
                deepest, row = depth, node.lineno
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))
    return deepest, row


_limit_lock = threading.Lock()
_limit_users = 0
_limit_saved = 0


def deep_call(func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` in a thread with a large stack and a raised recursion limit.

    The limit is per interpreter, so it is raised while any such call runs and restored
    after the last one. Exceptions are re-raised in the caller.
    """
    global _limit_users, _limit_saved
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append((True, func(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.append((False, exc))

    with _limit_lock:
        if _limit_users == 0:
            _limit_saved = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_limit_saved, RECURSION_LIMIT))
        _limit_users += 1
        thread = _start(target)
        if thread is None:  # no thread with a large stack to be had: run here, at the normal limit
            _release_limit()
    if thread is None:
        target()
    else:
        thread.join()
        with _limit_lock:
            _release_limit()
    ok, value = outcome[0]  # type: ignore[misc]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def _release_limit() -> None:
    global _limit_users
    _limit_users -= 1
    if _limit_users == 0:
        sys.setrecursionlimit(_limit_saved)


def _start(target: Callable[[], None]) -> threading.Thread | None:
    previous = threading.stack_size()
    try:
        threading.stack_size(STACK_BYTES)
        thread = threading.Thread(target=target, name="tf2torch-lint-analysis", daemon=True)
        thread.start()
        return thread
    except (RuntimeError, ValueError, MemoryError):  # address space limits (ulimit -v) or platform limits
        return None
    finally:
        threading.stack_size(previous)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "invalid syntax"


def _syntax_finding(filename: str, message: str, row: int, column: int) -> Finding:
    return Finding(PARSE_ERROR, f"syntax error: {_first_line(message)}; fix it so the file can be linted",
                   filename, row, column, row, column + 1)


def _unanalysable(filename: str, why: str, row: int, column: int) -> Finding:
    return Finding(PARSE_ERROR, f"cannot be analysed: {why}", filename, row, column, row, column + 1)
