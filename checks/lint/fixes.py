"""Applying fixes to text, showing them as diffs, and writing files atomically."""
from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Iterable

from .finding import Fix
from .lines import line_offsets, offset


def apply_fixes(text: str, fixes: Iterable[Fix]) -> tuple[str, int]:
    """Apply every fix whose edits do not overlap an earlier one; return the text and how many.

    Overlapping fixes are left for the next round: the caller re-lints and tries again.
    """
    starts = line_offsets(text)
    taken: list[tuple[int, int]] = []
    chosen: list[tuple[int, int, str]] = []
    applied = 0
    ordered = sorted(fixes, key=lambda f: min((e.row, e.column) for e in f.edits))
    for fix in ordered:
        spans = [(offset(starts, e.row, e.column), offset(starts, e.end_row, e.end_column), e.content)
                 for e in fix.edits]
        if any(_overlaps(a, b, x, y) for a, b, _ in spans for x, y in taken):
            continue
        taken.extend((a, b) for a, b, _ in spans)
        chosen.extend(spans)
        applied += 1
    for start, end, content in sorted(chosen, key=lambda s: (s[0], s[1]), reverse=True):
        text = text[:start] + content + text[end:]
    return text, applied


def _overlaps(a: int, b: int, x: int, y: int) -> bool:
    if a == b or x == y:  # insertions clash only at the same point or strictly inside
        return a == x or x < a < y or a < x < b
    return a < y and x < b


def unified_diff(before: str, after: str, filename: str) -> str:
    name = filename.replace(os.sep, "/")
    old, new = (name, name) if os.path.isabs(filename) else (f"a/{name}", f"b/{name}")
    lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                 fromfile=old, tofile=new)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace``, keeping the mode bits."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
