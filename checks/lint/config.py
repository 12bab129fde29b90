"""``[tool.tf2torch.lint]`` in pyproject.toml: discovery, validation, path matching.

The nearest ``pyproject.toml`` with that table, searching upward from the first path
linted and then from the working directory, configures the whole run. Patterns are
globs relative to the folder of that file; a pattern without ``/`` also matches any
single path component (``legacy`` excludes every ``legacy`` folder).
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import UnknownCode, expand

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with tomli installed
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

KEYS = {"select", "ignore", "per-file-ignores", "exclude"}


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the user."""


@dataclass
class Config:
    root: Path
    source: Path | None = None
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)

    def is_excluded(self, path: Path) -> bool:
        return bool(self.exclude) and _matches_any(self._relative(path), self.exclude)

    def ignored_codes(self, path: Path) -> set[str]:
        rel = self._relative(path)
        codes: set[str] = set()
        for pattern, selectors in self.per_file_ignores.items():
            if _matches_any(rel, [pattern]):
                codes |= expand(selectors)
        return codes

    def _relative(self, path: Path) -> str:
        absolute = Path(os.path.abspath(path))
        try:
            return absolute.relative_to(self.root).as_posix()
        except ValueError:
            return absolute.as_posix()


def _matches_any(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        pattern = pattern.removeprefix("./")
        if "/" in pattern:
            if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
                return True
        elif any(fnmatch.fnmatchcase(p, pattern) for p in parts):
            return True
    return False


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has ``[tool.tf2torch.lint]``."""
    current = Path(os.path.abspath(start))
    if not current.is_dir():
        current = current.parent
    for folder in (current, *current.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and _lint_table(candidate) is not None:
            return candidate
    return None


def _read(path: Path) -> dict[str, Any]:
    if _toml is None:
        raise ConfigError(f"{path}: reading pyproject.toml needs Python 3.11+ or the 'tomli' package")
    try:
        with open(path, "rb") as handle:
            return _toml.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _lint_table(path: Path) -> dict[str, Any] | None:
    try:
        data = _read(path)
    except ConfigError:
        return {}  # found but broken: load_config reports it
    table = data.get("tool", {}).get("tf2torch", {}).get("lint")
    return table if isinstance(table, dict) or table is None else {"": table}


def load_config(pyproject: Path | None, root: Path | None = None) -> Config:
    """Read and validate the lint table; no file means the defaults (all rules)."""
    if pyproject is None:
        return Config(root=Path(os.path.abspath(root or ".")))
    data = _read(pyproject)
    table = data.get("tool", {}).get("tf2torch", {}).get("lint", {})
    where = f"{pyproject}: [tool.tf2torch.lint]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {min(unknown)!r} (expected one of {', '.join(sorted(KEYS))})")
    config = Config(root=Path(os.path.abspath(pyproject.parent)), source=pyproject)
    for key in ("select", "ignore", "exclude"):
        if key in table:
            value = table[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {key} must be a list of strings")
            setattr(config, key, list(value))
    pfi = table.get("per-file-ignores", {})
    if not isinstance(pfi, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in pfi.values()):
        raise ConfigError(f"{where}: per-file-ignores must map glob patterns to lists of codes")
    config.per_file_ignores = dict(pfi)
    try:
        for selectors in (config.select or [], config.ignore, *config.per_file_ignores.values()):
            expand(selectors)
    except UnknownCode as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config
