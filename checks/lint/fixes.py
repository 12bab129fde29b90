"""Applying fixes to text, showing them as diffs, and writing them to users' files safely."""
from __future__ import annotations

import difflib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .discovery import read_source
from .finding import Fix
from .lines import line_ending, line_offsets, offset, split_lines, with_line_endings


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
        spans = [(offset(starts, e.row, e.column), offset(starts, e.end_row, e.end_column),
                  _same_line_endings(e.content, text, starts, e.row)) for e in fix.edits]
        if any(_overlaps(a, b, x, y) for a, b, _ in spans for x, y in taken):
            continue
        taken.extend((a, b) for a, b, _ in spans)
        chosen.extend(spans)
        applied += 1
    for start, end, content in sorted(chosen, key=lambda s: (s[0], s[1]), reverse=True):
        text = text[:start] + content + text[end:]
    return text, applied


def _same_line_endings(content: str, text: str, starts: list[int], row: int) -> str:
    """``content`` with its line breaks written like the one ending the edited line, so a
    fix never puts a \\n into a \\r\\n or \\r-only file."""
    if "\n" not in content and "\r" not in content:
        return content
    return with_line_endings(content, line_ending(text, starts, row))


def _overlaps(a: int, b: int, x: int, y: int) -> bool:
    if a == b or x == y:  # insertions clash only at the same point or strictly inside
        return a == x or x < a < y or a < x < b
    return a < y and x < b


def unified_diff(before: str, after: str, filename: str) -> str:
    name = filename.replace(os.sep, "/")
    old, new = (name, name) if os.path.isabs(filename) else (f"a/{name}", f"b/{name}")
    lines = difflib.unified_diff(split_lines(before), split_lines(after), fromfile=old, tofile=new)
    return "".join(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n"
                   for line in lines)


class NotWritten(Exception):
    """The fixed text was not written; the message says why, in a few words."""


def write_fix(path: Path, expected: bytes, data: bytes) -> bool:
    """Replace the file ``path`` names with ``data`` if it still holds ``expected``.

    The file a symbolic link points to is written and the link kept. Returns False when
    the file already holds ``data`` (fixed through another link in the same run). Raises
    NotWritten, leaving the file alone, when it is read-only, has other hard links (a new
    file would split them), changed since it was read, or cannot be written.
    """
    target = Path(os.path.realpath(path))
    try:
        info = os.stat(target)
        if not info.st_mode & 0o222 or not os.access(target, os.W_OK):
            raise NotWritten("read-only")
        if info.st_nlink > 1:
            raise NotWritten(f"it has {info.st_nlink} hard links, which a rewrite would separate")
        current = read_source(target)
        if current == data:
            return False
        if current != expected:
            raise NotWritten("changed since it was read; run again")
        write_atomic(target, data, info)
    except OSError as exc:
        raise NotWritten(f"cannot write: {exc.strerror or exc}") from None
    return True


def write_atomic(path: Path, data: bytes, info: os.stat_result | None = None) -> None:
    """Write via a temporary file in the same folder and ``os.replace``, keeping the mode bits
    and, where allowed, the owner."""
    info = info or path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(info.st_mode))
        if hasattr(os, "chown") and (info.st_uid, info.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(tmp, info.st_uid, info.st_gid)
            except OSError:
                pass  # only root may give a file away; the mode bits are kept all the same
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
