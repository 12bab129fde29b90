"""Linting one source text: decode, prefilter, guard, parse once, run the enabled rules.

libcst's parser is native code: it recurses once per nesting level, crashes the whole
process (no exception) when it runs out of stack, and takes time that grows with the
square of the depth. So a text reaches it only after CPython's parser, which stops at
its limits with an exception, has read it and its tree has been measured: a text that
CPython rejects or gives up on, or that is nested deeper than MAX_DEPTH (and/or chains:
MAX_BOOL_DEPTH), is one TTL000 finding. The parse and the rules run in a thread with a
large stack and a raised recursion limit, so deep but valid files are analysed.
"""
from __future__ import annotations

import ast
import sys
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

import libcst as cst

from migrate.core.errors import first_line

from .context import FileContext
from .discovery import read_source
from .finding import Finding
from .project import Project, Tree
from .registry import PARSE_ERROR, Rule, iter_checks

BOM = "\ufeff"

STACK_BYTES = 512 << 20  # the analysis thread's stack: address space, only the pages used are committed
SMALL_STACK_BYTES = 64 << 20  # where STACK_BYTES is not granted: enough for the depth limits, not the frames
RECURSION_LIMIT = 50_000  # Python frames allowed while analysing, well inside STACK_BYTES
MAX_DEPTH = 1_000  # syntax tree levels: libcst's parse time grows with the square of the depth
MAX_BOOL_DEPTH = 5_000  # and/or operands nested in one expression (libcst nests one level per operand)
LIBCST_MAX_STRINGS = 3000  # libcst refuses longer implicit string concatenations

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


def lint_source(source: str, filename: str, codes: list[str], project: Project[FileContext] | None = None,
                matching: Collection[str] | None = None) -> list[Finding]:
    """Findings for one file's text, before noqa and per-file ignores are applied.

    A leading byte-order mark is dropped: positions and fixes refer to the text after it.

    Rules whose trigger words do not occur are skipped; when none remain the file is only
    compiled to catch syntax errors, which is much cheaper than building a libcst tree.
    A text that cannot be analysed gives one TTL000 finding, never an exception.
    """
    text = source[1:] if source.startswith(BOM) else source
    rules = [r for r in iter_checks(codes) if (r.code in matching if matching is not None else r.may_match(text))]
    report = PARSE_ERROR in codes
    if not rules and not report:
        return []
    try:
        found = deep_call(_lint, text, filename, rules, project)
    except RecursionError:
        found = [_unanalysable(filename, "too deeply nested for the linter's parser", 1, 1)]
    except MemoryError:
        found = [_unanalysable(filename, "the linter ran out of memory analysing it", 1, 1)]
    return found if report else [f for f in found if f.code != PARSE_ERROR]


def _lint(text: str, filename: str, rules: list[Rule], project: Project[FileContext] | None) -> list[Finding]:
    ctx = project.loaded(filename) if project is not None and rules else None
    if ctx is not None and ctx.source == text:  # parsed already for another file's question
        return _run_rules(ctx, rules)
    problem = _compile(text, filename, measure=bool(rules))
    if problem is not None or not rules:
        return [problem] if problem is not None else []
    try:
        module = parse(text)
    except cst.ParserSyntaxError as exc:  # CPython read it: not a syntax error
        if "STRING" in exc.message:
            why = (f"more than {LIBCST_MAX_STRINGS} implicitly concatenated strings in one expression: valid "
                   "Python, but more than libcst, the parser the rules use, reads")
        else:
            why = ("valid Python that libcst, the parser the rules use, cannot read "
                   f"({first_line(exc.message, default='invalid syntax')})")
        return [_unanalysable(filename, why, exc.raw_line, exc.raw_column + 1)]
    ctx = FileContext(module, text, filename, project)
    if project is not None:
        project.add(filename, ctx)
    return _run_rules(ctx, rules)


def _run_rules(ctx: FileContext, rules: list[Rule]) -> list[Finding]:
    findings: list[Finding] = []
    for rule_ in rules:
        findings.extend(rule_.check(ctx))  # type: ignore[misc]
    return sorted(set(findings), key=lambda f: f.sort_key)


def load_context(filename: str, project: Project[FileContext]) -> FileContext | None:
    """Another file of the project, parsed for the rules' questions about it: None when it
    cannot be read, decoded or analysed (the same guards as for a linted file)."""
    try:
        text, problem = decode(read_source(Path(filename)), filename)
    except OSError:
        return None
    if text is None or problem is not None:
        return None
    text = text[1:] if text.startswith(BOM) else text
    if _compile(text, filename, measure=True) is not None:
        return None
    try:
        return FileContext(parse(text), text, filename, project)
    except (cst.ParserSyntaxError, RecursionError, MemoryError):
        return None


_unchecked = threading.local()  # .active: this thread is inside ``parse``
_unchecked_lock = threading.Lock()
_unchecked_users = 0
_validating_post_init = cst.CSTNode.__post_init__


def _post_init(node: cst.CSTNode) -> None:
    """``CSTNode.__post_init__`` while ``parse`` runs: validates, except in a thread that is parsing."""
    if not getattr(_unchecked, "active", False):
        _validating_post_init(node)


def parse(text: str) -> cst.Module:
    """``cst.parse_module`` without the check every node's constructor makes of its fields.

    The check (``CSTNode._validate``) is for trees built by hand: libcst's own comment on it
    suggests skipping it for parsed files. The parser's output, from a text CPython has just
    compiled, passes it, and it cost 8% of a cold run on timm. It is skipped only in the
    thread that parses, only while it parses: other threads building nodes meanwhile are
    checked as usual, and ``CSTNode`` is back as it was once no parse runs."""
    global _unchecked_users
    with _unchecked_lock:
        if _unchecked_users == 0:
            cst.CSTNode.__post_init__ = _post_init  # type: ignore[method-assign]
        _unchecked_users += 1
    _unchecked.active = True
    try:
        return cst.parse_module(text)
    finally:
        _unchecked.active = False
        with _unchecked_lock:
            _unchecked_users -= 1
            if _unchecked_users == 0:
                cst.CSTNode.__post_init__ = _validating_post_init  # type: ignore[method-assign]


def project_for(tree: Tree) -> Project[FileContext]:
    """A project over ``tree`` whose files are parsed on demand in this process."""
    project: Project[FileContext] = Project(tree, lambda path: load_context(path, project),
                                           release=FileContext.release)
    return project


def _compile(text: str, filename: str, measure: bool) -> Finding | None:
    """CPython's verdict: None, or the TTL000 finding for a text it rejects, gives up on, or
    (with ``measure``) nests deeper than libcst parses in reasonable time.

    Run at the raised recursion limit, so the verdict does not depend on how deep the
    caller's stack happens to be."""
    try:
        tree = compile(text, filename, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        return _syntax_finding(filename, exc.msg, exc.lineno or 1, exc.offset or 1)
    except ValueError as exc:  # null bytes
        return _syntax_finding(filename, str(exc), 1, 1)
    except (RecursionError, MemoryError) as exc:  # valid grammar, beyond the nesting CPython handles
        detail = f" ({exc})" if str(exc) else ""
        return _unanalysable(filename, f"too deeply nested for Python's own parser{detail}", 1, 1)
    if not measure:
        return None
    depth, chain, row = _depth(tree)
    if depth > MAX_DEPTH:
        return _unanalysable(filename, f"nested {depth} levels deep (the linter analyses up to {MAX_DEPTH})", row, 1)
    if chain > MAX_BOOL_DEPTH:
        return _unanalysable(filename, f"an and/or chain {chain} operands deep (the linter analyses up to "
                                       f"{MAX_BOOL_DEPTH})", row, 1)
    return None


def _depth(tree: ast.AST) -> tuple[int, int, int]:
    """Deepest nesting of the tree, deepest nesting of and/or operands (CPython keeps a chain
    flat, libcst nests one level per operand), and the row of a node beyond a limit (else 1)."""
    deepest = chain = row = 0
    stack: list[tuple[ast.AST, int, int, int]] = [(tree, 1, 0, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth, bools, line = pop()
        line = getattr(node, "lineno", line)
        if node.__class__ is ast.BoolOp:
            bools += len(node.values) - 1  # type: ignore[attr-defined]
            if bools > chain:
                chain = bools
                if chain > MAX_BOOL_DEPTH:
                    row = line
        if depth > deepest:
            deepest = depth
            if depth > MAX_DEPTH:
                row = line
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, ast.AST):
                push((value, depth + 1, bools, line))
            elif value.__class__ is list:
                for child in value:
                    if isinstance(child, ast.AST):
                        push((child, depth + 1, bools, line))
    return deepest, chain, row or 1


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
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))

    with _limit_lock:
        if _limit_users == 0:
            _limit_saved = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_limit_saved, RECURSION_LIMIT))
        _limit_users += 1
        thread = _start(target, STACK_BYTES)
        if thread is None:
            _release_limit()
    if thread is not None:
        try:
            thread.join()
        finally:  # also when interrupted: the limit never stays raised
            with _limit_lock:
                _release_limit()
    else:  # address space limits (ulimit -v): a smaller stack at the normal limit, else this thread
        with _limit_lock:  # stack_size() is process-wide too
            thread = _start(target, SMALL_STACK_BYTES)
        if thread is None:
            target()
        else:
            thread.join()
    ok, value = outcome[0]  # type: ignore[misc]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def _release_limit() -> None:
    global _limit_users
    _limit_users -= 1
    if _limit_users == 0:
        sys.setrecursionlimit(_limit_saved)


def _start(target: Callable[[], None], size: int) -> threading.Thread | None:
    """A started thread with a stack of ``size`` bytes, or None where that is not granted."""
    previous = threading.stack_size()
    try:
        threading.stack_size(size)
        thread = threading.Thread(target=target, name="tf2torch-lint-analysis", daemon=True)
        thread.start()
        return thread
    except (RuntimeError, ValueError, MemoryError):
        return None
    finally:
        threading.stack_size(previous)


def _syntax_finding(filename: str, message: str, row: int, column: int) -> Finding:
    first = first_line(message, default="invalid syntax")
    return Finding(PARSE_ERROR, f"syntax error: {first}; fix it so the file can be linted",
                   filename, row, column, row, column + 1)


def _unanalysable(filename: str, why: str, row: int, column: int) -> Finding:
    return Finding(PARSE_ERROR, f"cannot be analysed: {why}", filename, row, column, row, column + 1)
