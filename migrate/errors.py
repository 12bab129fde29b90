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
