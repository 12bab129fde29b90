"""``# noqa`` comments: a bare one silences every finding on its line, ``# noqa: A, B`` only those codes."""
from __future__ import annotations

import re

from .finding import Finding
from .lines import split_lines

_NOQA = re.compile(r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)


def suppressions(source: str) -> dict[int, frozenset[str] | None]:
    """Row -> codes silenced there (None: all). Only rows that carry a noqa comment appear."""
    out: dict[int, frozenset[str] | None] = {}
    if "noqa" not in source.lower():
        return out
    for row, line in enumerate(split_lines(source), start=1):
        match = _NOQA.search(line)
        if match is None:
            continue
        codes = match.group("codes")
        out[row] = None if codes is None else frozenset(c.upper() for c in re.split(r"[,\s]+", codes) if c)
    return out


def is_suppressed(finding: Finding, table: dict[int, frozenset[str] | None]) -> bool:
    if finding.row not in table:
        return False
    codes = table[finding.row]
    return codes is None or finding.code in codes
