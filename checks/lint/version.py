"""The linter's version: the installed distribution's, else a source checkout's marker."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tf2torch")
except PackageNotFoundError:  # running from a source checkout
    __version__ = "0.0.0+local"
