"""Errors that carry a one-line user message and the documented CLI exit code."""

from __future__ import annotations


class Tf2TorchError(Exception):
    """Base: ``str(err)`` is the single line the CLI prints; ``exit_code`` is what it returns."""

    exit_code = 1


class InputError(Tf2TorchError):
    """Bad usage or unreadable input (exit 2): a missing path, a corrupt model, an unknown signature."""

    exit_code = 2


class ConversionError(Tf2TorchError):
    """The input is fine but could not be converted (exit 1): an unsupported op, a failed export."""

    exit_code = 1


def first_line(error: BaseException | str, limit: int | None = None, default: str = "") -> str:
    """The first line of a message (at most ``limit`` characters), for one-line errors; ``default`` if it is blank."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else default


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that cleanup runs as for Ctrl-C (exit 128 + signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum
