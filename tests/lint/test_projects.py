"""Project-wide analysis: fixtures/lint/projects/<name>/ are small repositories linted as one tree.

Each file's ``# expect: CODE`` markers say where findings must be; every other line of every
file must stay silent (the traps). Paths in the comparison are relative to the project."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import libcst as cst
import pytest

from checks.lint import check, runner
from checks.lint.config import Config
from checks.lint.engine import project_for
from checks.lint.project import Tree

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


def _tree(tmp_path: Path, files: dict[str, str]) -> tuple[Tree, dict[str, str]]:
    paths = {}
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths[name] = os.path.normpath(str(path))
    return Tree.build({p: (tmp_path / n).read_text() for n, p in paths.items()}, [str(tmp_path)]), paths


def test_imports_resolved_between_files_of_the_tree(tmp_path: Path) -> None:
    tree, p = _tree(tmp_path, {
        "pkg/__init__.py": "from .model import Net\n",
        "pkg/model.py": "import torch\n",
        "pkg/utils/__init__.py": "",
        "pkg/utils/metrics.py": "from .. import model\nfrom ..model import Net as N\n",
        "pkg/train.py": "from pkg.utils.metrics import accuracy\nimport pkg.model as m\nfrom . import (\n    Net,\n)\n",
        "scripts/run.py": "import network as net\nfrom helpers import go  # a sibling module\nimport numpy as np\n",
        "scripts/network.py": "",
        "scripts/helpers.py": "",
    })
    assert set(tree.edges[p["pkg/__init__.py"]]) == {p["pkg/model.py"]}  # relative
    assert set(tree.edges[p["pkg/utils/metrics.py"]]) == {p["pkg/model.py"], p["pkg/__init__.py"]}  # .. and ..model
    assert set(tree.edges[p["pkg/train.py"]]) == {p["pkg/utils/metrics.py"], p["pkg/model.py"], p["pkg/__init__.py"]}
    assert set(tree.edges[p["scripts/run.py"]]) == {p["scripts/network.py"], p["scripts/helpers.py"]}  # numpy: not ours
    assert tree.dependencies(p["pkg/model.py"]) >= {p["pkg/__init__.py"], p["pkg/utils/metrics.py"], p["pkg/train.py"]}
    assert p["scripts/run.py"] not in tree.dependencies(p["pkg/model.py"])


def test_names_resolve_to_their_definitions_across_files(tmp_path: Path) -> None:
    tree, p = _tree(tmp_path, {
        "pkg/__init__.py": "from .model import Net\n",
        "pkg/model.py": "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    pass\n\n\ndef build():\n    return Net()\n",
        "pkg/train.py": "from . import Net\nimport pkg.model as m\nfrom pkg.model import build as make\n"
                        "a = Net()\nb = m.Net()\nc = make()\nd = m.missing()\n",
    })
    project = project_for(tree)
    train = project.context(p["pkg/train.py"])
    calls = {train.code(c): c for c in train.nodes(cst.Call)}
    for code in ("Net()", "m.Net()"):  # the constructor call is here; the class is in model.py
        there, built = train.origin(calls[code])
        assert there is train and built is calls[code]
        home, cls = train.find_class(train.callee(built))
        assert home.filename == p["pkg/model.py"] and cls.name.value == "Net"
    there, built = train.origin(calls["make()"])  # a builder: what it returns, in its own file
    assert there.filename == p["pkg/model.py"] and there.code(built) == "Net()"
    assert train.find(train.callee(calls["m.missing()"])) is None
