"""Which files a run lints (``*.py`` under the given folders, minus tool and build folders), and reading them."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .config import Config

# Folders that never hold the project's own sources (ruff's defaults, plus caches).
SKIP_DIRS = frozenset({
    ".bzr", ".direnv", ".eggs", ".git", ".git-rewrite", ".hg", ".ipynb_checkpoints", ".mypy_cache", ".nox",
    ".pants.d", ".pyenv", ".pytest_cache", ".pytype", ".ruff_cache", ".svn", ".tox", ".venv", ".vscode",
    "__pycache__", "__pypackages__", "_build", "buck-out", "build", "dist", "node_modules", "site-packages",
    "venv", ".tf2torch_cache",
})


class PathError(Exception):
    """A path given on the command line does not exist or cannot be listed."""


def _skip_dir(entry: os.DirEntry) -> bool:
    return entry.name in SKIP_DIRS or entry.name.endswith(".egg-info") or os.path.exists(
        os.path.join(entry.path, "pyvenv.cfg"))


def discover(paths: Iterable[str], config: Config, errors: list[str],
             warnings: list[str] | None = None) -> list[Path]:
    """Files to lint, sorted and without duplicates.

    Folders recurse over ``*.py``; a file named explicitly is linted whatever its suffix.
    The config's ``exclude`` applies to both, so pre-commit's file lists honour it.
    Paths that do not exist stop the run (PathError). A path named explicitly that is not
    a regular file or folder (``/dev/null``, a FIFO, a symbolic link loop) is appended to
    ``errors``; so are sub-folders that cannot be listed. Inside folders, ``*.py`` entries
    that are link loops or special files go to ``warnings``; links to nowhere (editor lock
    files) are skipped silently. Nothing is ever opened but folders.
    """
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            if not os.path.lexists(path):
                raise PathError(f"{raw}: no such file or directory") from None
            if not config.is_excluded(path):
                errors.append(f"{raw}: {_why(exc)}")
            continue
        if config.is_excluded(path):
            continue
        if stat.S_ISREG(mode):
            found.setdefault(os.path.normpath(raw), Path(os.path.normpath(raw)))
        elif not stat.S_ISDIR(mode):
            errors.append(f"{raw}: {_kind(mode)}, not a Python file; skipped")
        elif not os.access(path, os.R_OK | os.X_OK):
            raise PathError(f"{raw}: permission denied")
        else:
            for file in _walk(path, config, errors, warnings if warnings is not None else errors):
                found.setdefault(str(file), file)
    return sorted(found.values(), key=str)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop; skipped"
    if exc.errno == errno.ENOENT:
        return "symbolic link to a missing file; skipped"
    return f"cannot read: {exc.strerror or exc}; skipped"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _walk(root: Path, config: Config, errors: list[str], warnings: list[str]) -> Iterable[Path]:
    stack = [os.path.normpath(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            errors.append(f"{folder}: cannot list folder: {exc.strerror or exc}")
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not _skip_dir(entry) and not config.is_excluded(Path(entry.path)):
                    stack.append(entry.path)
            elif entry.name.endswith(".py") and not config.is_excluded(Path(entry.path)):
                try:  # both follow links; is_file() needs no system call for plain files
                    mode = stat.S_IFREG if entry.is_file() else entry.stat().st_mode
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        warnings.append(f"{os.path.normpath(entry.path)}: {_why(exc)}")
                    continue
                if stat.S_ISREG(mode):
                    yield Path(entry.path)
                elif not stat.S_ISDIR(mode):  # links to folders are not followed
                    warnings.append(f"{os.path.normpath(entry.path)}: {_kind(mode)}, not a Python file; skipped")


def read_source(path: Path) -> bytes:
    """The bytes of a regular file. Opened without blocking and checked after opening, so a
    path swapped for a FIFO or a device since discovery raises OSError instead of hanging."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{_kind(mode)}, not a Python file")
        return handle.read()
