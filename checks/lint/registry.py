"""The rule registry: every rule's code, name, trigger words and check function.

Codes are ``TTL`` plus three digits; the first digit is the family (1 training loop,
2 losses and activations, 3 Keras defaults, 4 layouts and ported weights, 5 eval mode),
so ``--select TTL2`` picks a whole family. ``TTL000`` is reserved for files that cannot
be parsed. Codes are never reused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from .context import FileContext
    from .finding import Finding

DOCS_URL = "https://github.com/tf2torch/tf2torch/blob/main/docs/lint.md"
PARSE_ERROR = "TTL000"


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    summary: str
    triggers: tuple[str, ...]
    check: Callable[["FileContext"], Iterable["Finding"]] | None
    fixable: bool = False

    def may_match(self, source: str) -> bool:
        """Cheap text prefilter, so files that cannot match are never parsed.

        Each trigger is a regular expression and all of them must be found in the source.
        """
        return all(pattern.search(source) for pattern in _compiled(self.triggers))


@lru_cache(maxsize=None)
def _compiled(triggers: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(t) for t in triggers)


REGISTRY: dict[str, Rule] = {
    PARSE_ERROR: Rule(PARSE_ERROR, "parse-error",
                      "File is not valid UTF-8 or has a syntax error, so it cannot be linted.",
                      (), None),
}


def rule(code: str, name: str, summary: str, triggers: tuple[str, ...], fixable: bool = False
         ) -> Callable[[Callable], Callable]:
    """Register a check function under a stable code."""

    def register(func: Callable) -> Callable:
        if code in REGISTRY:
            raise ValueError(f"duplicate rule code {code}")
        REGISTRY[code] = Rule(code, name, summary, triggers, func, fixable)
        return func

    return register


def shared_analysis(key: str, analyse: Callable[["FileContext"], list["Finding"]]
                    ) -> Callable[[str], Callable[["FileContext"], Iterator["Finding"]]]:
    """Several codes from one analysis: run ``analyse`` once per file, give each code its findings."""

    def for_code(code: str) -> Callable[["FileContext"], Iterator["Finding"]]:
        def check(ctx: "FileContext") -> Iterator["Finding"]:
            return (f for f in ctx.memo(key, lambda: analyse(ctx)) if f.code == code)  # type: ignore[union-attr]

        return check

    return for_code


def all_rules() -> dict[str, Rule]:
    from . import rules  # noqa: F401  (registers the rules on import)

    return dict(sorted(REGISTRY.items()))


def rule_url(code: str) -> str:
    rule_ = REGISTRY.get(code)
    anchor = f"{code}-{rule_.name}".lower() if rule_ else code.lower()
    return f"{DOCS_URL}#{anchor}"


class UnknownCode(ValueError):
    pass


def expand(selectors: Iterable[str]) -> set[str]:
    """Codes matched by selectors: exact codes, prefixes such as ``TTL2``, or ``ALL``."""
    codes = all_rules()
    out: set[str] = set()
    for raw in selectors:
        sel = raw.strip().upper()
        if not sel:
            continue
        matched = list(codes) if sel == "ALL" else [c for c in codes if c.startswith(sel)]
        if not matched:
            raise UnknownCode(f"unknown rule code or prefix {raw!r}")
        out.update(matched)
    return out


def resolve(select: Iterable[str] | None, ignore: Iterable[str] | None) -> list[str]:
    """The enabled codes. Parse errors stay on unless ignored explicitly."""
    enabled = expand(select) if select else set(all_rules())
    enabled.add(PARSE_ERROR)
    enabled -= expand(ignore or ())
    return sorted(enabled)


def iter_checks(codes: Iterable[str]) -> Iterator[Rule]:
    rules_ = all_rules()
    for code in codes:
        if rules_[code].check is not None:
            yield rules_[code]
