"""Helpers for the linter tests: fixture discovery and ``# expect:`` markers."""
from __future__ import annotations

import re
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lint"
_EXPECT = re.compile(r"#\s*expect:\s*([A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)")


def expected_findings(source: str) -> set[tuple[int, str]]:
    """(row, code) pairs declared by ``# expect: CODE[, CODE]`` comments."""
    out = set()
    for row, line in enumerate(source.splitlines(), start=1):
        match = _EXPECT.search(line)
        if match:
            out.update((row, code.strip()) for code in match.group(1).split(","))
    return out


def rule_fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("TTL*/*.py"))
