"""The rule registry: every rule's code, name, trigger words and check function.

Codes are ``TTL`` plus three digits; the first digit is the family (1 training loop,
2 losses and activations, 3 Keras defaults, 4 layouts and ported weights, 5 train/eval mode,
6 loading checkpoints), so ``--select TTL2`` picks a whole family. ``TTL000`` is reserved for
files that cannot be parsed. Codes are never reused. Rules register themselves through
``rule.rule``; this module imports the rule modules and answers questions about the table.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import rules  # noqa: F401  (importing the rule modules registers them)
from .rule import PARSE_ERROR, RULES, Rule, rule, shared_analysis

__all__ = ["DOCS_URL", "PARSE_ERROR", "REGISTRY", "Rule", "UnknownCode", "all_rules", "expand", "iter_checks",
           "resolve", "rule", "rule_url", "shared_analysis"]

DOCS_URL = "https://github.com/tf2torch/tf2torch/blob/main/docs/lint.md"
REGISTRY = RULES


def all_rules() -> dict[str, Rule]:
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
