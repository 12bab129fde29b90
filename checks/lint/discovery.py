"""Which files a run lints: ``*.py`` under the given folders, minus tool and build folders."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

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


def discover(paths: Iterable[str], config: Config, errors: list[str]) -> list[Path]:
    """Files to lint, sorted and without duplicates.

    Folders recurse over ``*.py``; a file named explicitly is linted whatever its suffix.
    The config's ``exclude`` applies to both, so pre-commit's file lists honour it.
    Sub-folders that cannot be listed are appended to ``errors`` and skipped.
    """
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise PathError(f"{raw}: no such file or directory")
        if config.is_excluded(path):
            continue
        if path.is_file():
            found.setdefault(os.path.normpath(raw), Path(os.path.normpath(raw)))
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            raise PathError(f"{raw}: permission denied")
        for file in _walk(path, config, errors):
            found.setdefault(str(file), file)
    return sorted(found.values(), key=str)


def _walk(root: Path, config: Config, errors: list[str]) -> Iterable[Path]:
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
            elif entry.name.endswith(".py") and entry.is_file():
                path = Path(entry.path)
                if not config.is_excluded(path):
                    yield path
