"""Cache of per-file results keyed by file content, the content of the files it depends on
(``project.Tree.dependencies``), enabled rules and tool version.

Entries live in ``$TF2TORCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/tf2torch/lint``, else
``~/.cache/tf2torch/lint``; one small JSON file per entry, written atomically, so
concurrent runs can share it. The key also hashes the linter's own source files, so
editing a rule invalidates old entries even without a version bump. Results are stored
before ``noqa`` and per-file ignores, which are cheap and applied on every run.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from .finding import Finding
from .version import __version__

FORMAT = 2  # 2: findings may be in another file (named), the key includes dependencies


def default_directory() -> Path:
    if os.environ.get("TF2TORCH_CACHE_DIR"):
        return Path(os.environ["TF2TORCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tf2torch" / "lint"


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """Tool version plus a hash of the linter's code."""
    digest = hashlib.sha256(f"{FORMAT}:{__version__}".encode())
    package = Path(__file__).parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


class Cache:
    def __init__(self, codes: Iterable[str], directory: Path | None = None) -> None:
        self.directory = directory or default_directory()
        self.salt = f"{fingerprint()}:{','.join(sorted(codes))}:".encode()

    def key(self, data: bytes, dependencies: Iterable[str] = ()) -> str:
        """The entry for a file's content and the content digests of the files it depends on."""
        digest = hashlib.sha256(self.salt + data)
        for dependency in dependencies:
            digest.update(dependency.encode())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str, filename: str) -> list[Finding] | None:
        try:
            with open(self._path(key), encoding="utf-8") as handle:
                raw = json.load(handle)
            return [Finding.from_json({**item, "filename": item["filename"] or filename}) for item in raw]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, findings: list[Finding], filename: str = "") -> None:
        """Best effort: a cache that cannot be written only costs speed."""
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump([{**f.to_json(), "filename": "" if f.filename == filename else f.filename}
                           for f in findings], handle)
            os.replace(tmp, target)
        except OSError:
            pass
