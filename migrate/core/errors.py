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
    """The informative line of a message (at most ``limit`` characters), for one-line errors; ``default`` if blank.

    TensorFlow's runtime errors open with 'Graph execution error:' and put the cause (``indices[0,4] = 50 is not
    in [0, 12)``) after the node's stack trace: those lines are skipped and the node is named after the cause.
    """
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    cause = [ln for ln in lines if not ln.startswith(_NOISE) and not ln.endswith("(most recent call last):")]
    node = next((ln.split("Detected at node", 1)[1].split(" defined at")[0].strip()
                 for ln in lines if ln.startswith("Detected at node")), None)
    text = (cause or lines or [default])[0]
    return (f"{text} (at node {node})" if node else text)[:limit]


#: Lines of TensorFlow's error text that carry no cause.
_NOISE = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[{{node", "File \"")


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that cleanup runs as for Ctrl-C (exit 128 + signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum
