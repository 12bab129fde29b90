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


def line_ending(text: str, starts: list[int], row: int) -> str:
    """The break that ends 1-based ``row``, else the text's first one, else ``\\n``."""
    end = starts[row] if row < len(starts) else len(text)
    found = _EOL.search(text, starts[min(row, len(starts)) - 1], end) or _EOL.search(text)
    return found.group() if found else "\n"


def with_line_endings(text: str, ending: str) -> str:
    """``text`` with every line break replaced by ``ending``."""
    return _EOL.sub(ending, text)
