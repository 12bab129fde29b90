"""Write the output directory atomically: build in a hidden sibling, rename into place at the end."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from migrate.errors import InputError

MANIFEST = "manifest.json"
MODEL_PT2 = "model.pt2"
MODEL_ONNX = "model.onnx"


@contextmanager
def staged_output(out: Path, force: bool, *, source: Path | None = None) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``out`` only if the block succeeds.

    ``source`` is the input the command reads: replacing ``out`` must never touch it.
    On failure nothing is left: not the staging directory, not parents created for it.
    """
    out = Path(os.path.abspath(out))
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another output path")
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make OUT private
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:
            try:
                parent.rmdir()
            except OSError:
                break
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_manifest(out: Path) -> dict[str, Any]:
    """Load ``OUT/manifest.json``, with a clear error when OUT is not a tf2torch output."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise InputError(f"{out}: no {MANIFEST}; pass a directory written by 'tf2torch convert'")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc}); re-run 'tf2torch convert'") from exc
    if manifest.get("format") != 1:
        raise InputError(f"{path}: unknown manifest format {manifest.get('format')!r}; re-run 'tf2torch convert'")
    return manifest
