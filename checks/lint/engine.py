"""Linting one source text: decode, prefilter, parse once, run the enabled rules."""
from __future__ import annotations

import ast

import libcst as cst

from .context import FileContext
from .finding import Finding
from .registry import PARSE_ERROR, iter_checks

BOM = "\ufeff"


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
    """
    text = source[1:] if source.startswith(BOM) else source
    rules = [r for r in iter_checks(codes) if r.may_match(text)]
    if not rules:
        if PARSE_ERROR not in codes:
            return []
        return _syntax_error(text, filename)
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        return [_syntax_finding(filename, exc.message, exc.raw_line, exc.raw_column + 1)] \
            if PARSE_ERROR in codes else []
    except RecursionError:
        return [_syntax_finding(filename, "too deeply nested for the parser", 1, 1)] \
            if PARSE_ERROR in codes else []
    ctx = FileContext(module, text, filename)
    findings: list[Finding] = []
    for rule_ in rules:
        findings.extend(rule_.check(ctx))  # type: ignore[misc]
    return sorted(set(findings), key=lambda f: f.sort_key)


def _syntax_error(text: str, filename: str) -> list[Finding]:
    try:
        compile(text, filename, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        return [_syntax_finding(filename, exc.msg, exc.lineno or 1, exc.offset or 1)]
    except ValueError as exc:  # null bytes
        return [_syntax_finding(filename, str(exc), 1, 1)]
    return []


def _syntax_finding(filename: str, message: str, row: int, column: int) -> Finding:
    first = message.strip().splitlines()[0] if message.strip() else "invalid syntax"
    return Finding(PARSE_ERROR, f"syntax error: {first}; fix it so the file can be linted",
                   filename, row, column, row, column + 1)
