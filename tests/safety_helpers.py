"""Helpers for the tests/test_safety_*.py files: run the CLI with a private TMPDIR, fingerprint trees."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from tests import cli_helpers
from tests.cli_helpers import ROOT, env_with_root

#: Not leftovers of a run: torch's persistent compile cache and ONNX Runtime's session-id file.
LIBRARY_FILES = ("torchinductor_", ".ses")
#: Names ``tempfile`` gives without a prefix.
_TEMPFILE = re.compile(r"tmp[a-z0-9_]{8}")


def env_with_tmpdir(tmpdir: Path) -> dict[str, str]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    return env_with_root(TMPDIR=str(tmpdir))


def tf2torch(*args: str | Path, tmpdir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m migrate.cli ARGS`` with TMPDIR set to ``tmpdir``."""
    return cli_helpers.tf2torch(*args, cwd=cwd, env=env_with_tmpdir(tmpdir))


def spawn(*args: str | Path, tmpdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "migrate.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env_with_tmpdir(tmpdir))


def one_line(proc: subprocess.CompletedProcess | tuple[int, str], code: int, *needles: str) -> str:
    """Assert exit ``code`` and exactly one stderr line containing every needle; return the line."""
    returncode, stderr = (proc.returncode, proc.stderr) if hasattr(proc, "returncode") else proc
    lines = stderr.strip().splitlines()
    assert returncode == code, stderr
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def fingerprint(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (or link target / 'dir') of everything under ``root``."""
    prints = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                prints[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                prints[rel] = "dir"
            else:
                prints[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return prints


def leftovers(*dirs: Path) -> list[str]:
    """Hidden partials, locks, ``tf2torch-*`` and autograph files left in ``dirs`` (library caches excepted)."""
    found = []
    for folder in dirs:
        for entry in folder.iterdir() if folder.is_dir() else []:
            if entry.name.startswith(LIBRARY_FILES):
                continue
            ours = entry.name.startswith((".", "tf2torch", "__autograph_generated_file"))
            if ours or _TEMPFILE.fullmatch(entry.name):
                found.append(str(entry))
    return found
