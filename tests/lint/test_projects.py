"""Project-wide analysis: fixtures/lint/projects/<name>/ are small repositories linted as one tree.

Each file's ``# expect: CODE`` markers say where findings must be; every other line of every
file must stay silent (the traps). Paths in the comparison are relative to the project."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from checks.lint import check, runner
from checks.lint.config import Config

from .helpers import FIXTURES, expected_findings

PROJECTS = sorted(p for p in (FIXTURES / "projects").iterdir() if p.is_dir())


def _expected(root: Path) -> set[tuple[str, int, str]]:
    return {(path.relative_to(root).as_posix(), row, code)
            for path in root.rglob("*.py") for row, code in expected_findings(path.read_text(encoding="utf-8"))}


def _found(root: Path, **options) -> set[tuple[str, int, str]]:
    report = check([str(root)], config=Config(root), **options)  # the repository's config excludes fixtures
    assert report.errors == []
    return {(Path(f.filename).relative_to(root).as_posix(), f.row, f.code) for f in report.findings}


@pytest.mark.parametrize("root", PROJECTS, ids=lambda p: p.name)
def test_project_findings_match_expect_markers(root: Path) -> None:
    assert _found(root, cache=False, jobs=1) == _expected(root)


def test_parallel_run_of_all_projects_equals_the_serial_run(tmp_path: Path) -> None:
    for root in PROJECTS:  # enough files for the process pool, and each project in its own folder
        shutil.copytree(root, tmp_path / root.name)
    serial = check([str(tmp_path)], config=Config(tmp_path), cache=False, jobs=1).findings
    parallel = check([str(tmp_path)], config=Config(tmp_path), cache=False, jobs=2).findings
    assert serial == parallel and serial


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = runner.lint_source

    def spy(text, filename, codes, *project):
        calls.append(os.path.basename(filename))
        return original(text, filename, codes, *project)

    monkeypatch.setattr(runner, "lint_source", spy)
    return calls


ENGINE = """import torch.nn.functional as F


def train_one_epoch(model, loader, criterion, optimizer):
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(F.softmax(model(x), dim=1), y)
        loss.backward()
        optimizer.step()
"""
MAIN = """import torch
from torch import nn

from engine import train_one_epoch

model = nn.Linear(4, 3)
train_one_epoch(model, [], nn.{loss}(), torch.optim.SGD(model.parameters(), lr=0.1))
"""


def test_a_finding_that_depends_on_another_file_is_recomputed_when_that_file_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "engine.py").write_text(ENGINE)
    (tmp_path / "main.py").write_text(MAIN.format(loss="CrossEntropyLoss"))
    calls = _spy(monkeypatch)
    assert _found(tmp_path) == {("engine.py", 7, "TTL201")}  # the loss is chosen in main.py
    assert _found(tmp_path) == {("engine.py", 7, "TTL201")} and len(calls) == 2  # warm: nothing parsed again
    (tmp_path / "main.py").write_text(MAIN.format(loss="MSELoss"))
    assert _found(tmp_path) == set()
    assert sorted(calls[2:]) == ["engine.py", "main.py"]  # engine.py's entry depended on main.py
    (tmp_path / "unrelated.py").write_text("x = 1\n")
    assert _found(tmp_path) == set() and len(calls) == 5  # only the new file is linted


def test_fix_in_one_file_keeps_the_findings_it_causes_in_another(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        "import torch.nn as nn\nimport torch.nn.functional as F\n\n\nclass Net(nn.Module):\n"
        "    def forward(self, x):\n        return F.softmax(x, dim=1)\n")
    (tmp_path / "train.py").write_text(
        "import torch.nn as nn\n\nfrom model import Net\n\nnet, loss_fn = Net(), nn.CrossEntropyLoss()\n"
        "for x, y in loader:\n    loss_fn(net(x), y).backward()\n    optimizer.step()\n")
    report = check([str(tmp_path)], config=Config(tmp_path), fix=True, cache=False)
    assert report.fixed == 1 and "optimizer.zero_grad()" in (tmp_path / "train.py").read_text()
    assert [(Path(f.filename).name, f.row, f.code) for f in report.findings] == [("model.py", 7, "TTL201")]
    assert "(in " in report.findings[0].message and "train.py:7)" in report.findings[0].message
