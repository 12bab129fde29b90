"""Line splitting that agrees with the parser: only \\n, \\r\\n and \\r end a line."""
from __future__ import annotations

import re

_EOL = re.compile(r"\r\n|\r|\n")


def line_offsets(text: str) -> list[int]:
    """Offset of the first character of each line (row 1 is index 0)."""
    return [0] + [m.end() for m in _EOL.finditer(text)]


def split_lines(text: str) -> list[str]:
    """Lines with their endings, unlike ``str.splitlines`` which also splits on form feeds."""
    starts = line_offsets(text)
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def offset(starts: list[int], row: int, column: int) -> int:
    """Offset of a 1-based (row, column) position."""
    return starts[row - 1] + column - 1
