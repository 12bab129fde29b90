"""How a rule module registers its checks: the ``@rule`` decorator and the table it fills.

This module imports nothing from the rules, so rule modules can import it without an
import circle; ``registry`` imports the ``rules`` package (which registers everything)
and answers questions about the assembled table.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import FileContext
    from .finding import Finding

PARSE_ERROR = "TTL000"


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    summary: str
    triggers: tuple[str, ...]
    check: Callable[[FileContext], Iterable[Finding]] | None
    fixable: bool = False
    severity: str = "error"  # "error", or "info" for advice that is right only in some ports
    # A regular expression: when the file matches it, the trigger words may be in the files it depends on
    # (the loss call here, the model's softmax in model.py). None: all triggers must be in the file.
    across_files: str | None = None

    def may_match(self, source: str) -> bool:
        """Cheap text prefilter, so files that cannot match are never parsed.

        Each trigger is a regular expression and all of them must be found in the source.
        """
        return all(pattern.search(source) for pattern in _compiled(self.triggers))

    def patterns(self) -> tuple[re.Pattern[str], ...]:
        return _compiled(self.triggers)

    def across_pattern(self) -> re.Pattern[str] | None:
        return _compiled((self.across_files,))[0] if self.across_files else None


@cache
def _compiled(triggers: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(t) for t in triggers)


RULES: dict[str, Rule] = {
    PARSE_ERROR: Rule(PARSE_ERROR, "parse-error",
                      "File is not valid UTF-8 or has a syntax error, so it cannot be linted.",
                      (), None),
}


def rule(code: str, name: str, summary: str, triggers: tuple[str, ...], fixable: bool = False,
         severity: str = "error", across_files: str | None = None) -> Callable[[Callable], Callable]:
    """Register a check function under a stable code."""

    def register(func: Callable) -> Callable:
        if code in RULES:
            raise ValueError(f"duplicate rule code {code}")
        RULES[code] = Rule(code, name, summary, triggers, func, fixable, severity, across_files)
        return func

    return register


def shared_analysis(key: str, analyse: Callable[[FileContext], list[Finding]]
                    ) -> Callable[[str], Callable[[FileContext], Iterator[Finding]]]:
    """Several codes from one analysis: run ``analyse`` once per file, give each code its findings."""

    def for_code(code: str) -> Callable[[FileContext], Iterator[Finding]]:
        def check(ctx: FileContext) -> Iterator[Finding]:
            return (f for f in ctx.memo(key, lambda: analyse(ctx)) if f.code == code)  # type: ignore[union-attr]

        return check

    return for_code
