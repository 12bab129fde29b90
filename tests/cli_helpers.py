"""Run ``tf2torch`` as a user does: ``python -m migrate.cli`` and pytest with the parity plugin, in child processes."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env_with_root(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra`` with the repository root on PYTHONPATH, so a child run elsewhere imports it."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                **extra)


def tf2torch(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m migrate.cli ARGS`` from ``cwd`` (default: the repository root); never raises on a non-zero exit."""
    return subprocess.run([sys.executable, "-m", "migrate.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, check=False)


def user_pytest(test_file: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """pytest on a user's ``test_file`` from its folder, with the tf2torch_parity plugin (entry point or ``-p``)."""
    installed = any(ep.value == "checks.parity.pytest_plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "checks.parity.pytest_plugin"]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, str(test_file)],
                          capture_output=True, text=True, cwd=test_file.parent, env=env, check=False)


def imported_packages(text: str) -> set[str]:
    """Top-level packages a generated file imports (a port's model.py must import only torch)."""
    return {alias.name.split(".")[0] for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}


def assert_ruff_clean(path: Path) -> None:
    """``ruff check --isolated`` passes on generated code (where ruff is installed)."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", str(path)],
                          capture_output=True, text=True, check=False)
    if "No module named ruff" not in proc.stderr:
        assert proc.returncode == 0, proc.stdout


def train_parity(source: Path, out: Path, optimizer: str, *extra: str) -> dict:
    """``parity --train --steps 3`` of a port (JSON), asserted to pass with the final losses within 1e-5 (relative
    above 1); the report's ``train`` part."""
    proc = tf2torch("parity", source, out, "--train", "--trust-model-py", "--steps", "3", "--optimizer", optimizer,
                    "--format", "json", *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    train = json.loads(proc.stdout)["train"]
    loss = train["loss"]
    assert loss["passed"] and abs(loss["keras"] - loss["torch"]) <= 1e-5 * max(1.0, abs(loss["keras"])), loss
    return train
