"""Run the ``tf2torch`` CLI as a user does: ``python -m migrate.cli`` in a child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tf2torch(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m migrate.cli ARGS`` from ``cwd`` (default: the repository root); never raises on a non-zero exit."""
    return subprocess.run([sys.executable, "-m", "migrate.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, check=False)
