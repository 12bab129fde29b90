"""Result cache (content, rule set and version in the key) and the parallel path."""
from __future__ import annotations

import gc
from pathlib import Path

import libcst as cst
import pytest

from checks.lint import cache as cache_module
from checks.lint import check, engine, runner
from checks.lint.cache import Cache
from checks.lint.project import Project, Tree

BAD = "import torch\nfor x in data:\n    model(x).sum().backward()\n    optimizer.step()\n"
FIXED = "import torch\nfor x in data:\n    optimizer.zero_grad()\n    model(x).sum().backward()\n    optimizer.step()\n"


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which files really get linted (cache misses)."""
    calls: list[str] = []
    original = runner.lint_source

    def spy(text, filename, codes, *project):
        calls.append(filename)
        return original(text, filename, codes, *project)

    monkeypatch.setattr(runner, "lint_source", spy)
    return calls


def test_warm_run_reads_the_cache_and_edits_invalidate(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.py"
    path.write_text(BAD)
    calls = _spy(monkeypatch)
    first = check([str(path)])
    assert [f.code for f in first.findings] == ["TTL101"] and calls == [str(path)]
    second = check([str(path)])
    assert second.findings == first.findings and calls == [str(path)]  # served from the cache
    path.write_text(FIXED)
    third = check([str(path)])
    assert third.findings == [] and len(calls) == 2


def test_rule_selection_and_version_are_part_of_the_key(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.py"
    path.write_text(BAD)
    calls = _spy(monkeypatch)
    check([str(path)])
    assert check([str(path)], select=["TTL2"]).findings == []
    assert len(calls) == 2
    monkeypatch.setattr(cache_module, "fingerprint", lambda: "another version")
    check([str(path)])
    assert len(calls) == 3


def test_cached_results_keep_noqa_and_per_file_settings_live(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(BAD)
    assert len(check([str(path)]).findings) == 1
    assert check([str(path)], ignore=["TTL101"]).findings == []


def test_no_cache_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("TF2TORCH_CACHE_DIR", str(store))
    path = tmp_path / "train.py"
    path.write_text(BAD)
    check([str(path)], cache=False)
    assert not store.exists()
    check([str(path)])
    assert list(store.rglob("*.json"))


def test_corrupt_cache_entry_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(BAD)
    check([str(path)])
    for entry in Cache(runner.resolve(None, None)).directory.rglob("*.json"):
        entry.write_text("{not json")
    assert [f.code for f in check([str(path)]).findings] == ["TTL101"]


def test_parallel_run_equals_serial_run(tmp_path: Path) -> None:
    for i in range(runner.PARALLEL_MIN_FILES * 2):
        (tmp_path / f"m{i:02}.py").write_text(BAD if i % 3 else FIXED)
    (tmp_path / "broken.py").write_text("def (:\n")
    serial = check([str(tmp_path)], cache=False, jobs=1)
    parallel = check([str(tmp_path)], cache=False, jobs=2)
    assert serial.findings == parallel.findings
    assert len(serial.findings) == 2 * runner.PARALLEL_MIN_FILES * 2 // 3 + 1


def test_internal_error_in_a_rule_is_reported_and_the_run_goes_on(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a.py").write_text(BAD)
    (tmp_path / "b.py").write_text(BAD)

    def boom(text, filename, codes, *project):
        if filename.endswith("a.py"):
            raise RuntimeError("rule bug")
        return original(text, filename, codes, *project)

    original = runner.lint_source
    monkeypatch.setattr(runner, "lint_source", boom)
    report = check([str(tmp_path)], cache=False, jobs=1)
    assert [f.filename for f in report.findings] == [str(tmp_path / "b.py")]
    assert len(report.errors) == 1 and "RuntimeError: rule bug" in report.errors[0]


def test_parallel_run_with_files_that_crashed_the_parser_reports_every_file(tmp_path: Path) -> None:
    for i in range(19):
        (tmp_path / f"m{i:02}.py").write_text(BAD)
    (tmp_path / "parens.py").write_text(BAD + "x = " + "(" * 2000 + "1" + ")" * 2000 + "\n")
    (tmp_path / "chain.py").write_text(BAD + "x = a" + ".b" * 20_000 + "\n")
    report = check([str(tmp_path)], cache=False, jobs=2)
    codes = {Path(f.filename).name: f.code for f in report.findings}
    assert report.errors == [] and len(report.findings) == len(codes) == 21
    assert codes.pop("parens.py") == codes.pop("chain.py") == "TTL000"
    assert set(codes.values()) == {"TTL101"}


# --- what makes a cold run cheap must not change what it finds ------------------------------------
MODEL = ("import torch.nn as nn\nimport torch.nn.functional as F\n\n\nclass Net(nn.Module):\n"
         "    def forward(self, x):\n        return F.softmax(x, dim=1)\n")
TRAIN = ("import torch.nn as nn\n\nfrom model import Net\n\nnet, loss_fn = Net(), nn.CrossEntropyLoss()\n"
         "for x, y in loader:\n    optimizer.zero_grad()\n    loss_fn(net(x), y).backward()\n    optimizer.step()\n")


def test_a_file_asked_about_before_its_own_turn_is_parsed_once(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a_train.py").write_text(TRAIN)  # linted first: its analysis parses model.py
    (tmp_path / "model.py").write_text(MODEL)
    parsed: list[str] = []
    original = engine.parse

    def spy(text: str):
        parsed.append(text)
        return original(text)

    monkeypatch.setattr(engine, "parse", spy)
    report = check([str(tmp_path)], cache=False, jobs=1)
    assert [(Path(f.filename).name, f.row, f.code) for f in report.findings] == [("model.py", 7, "TTL201")]
    assert sorted(parsed) == sorted([TRAIN, MODEL])


def test_full_garbage_collections_wait_only_while_a_tree_is_linted(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "train.py").write_text(BAD)
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    original = runner.lint_source

    def spy(text, filename, codes, *project):
        during.append(gc.get_threshold())
        return original(text, filename, codes, *project)

    monkeypatch.setattr(runner, "lint_source", spy)
    assert [f.code for f in check([str(tmp_path)], cache=False, jobs=1).findings] == ["TTL101"]
    assert during == [(before[0], before[1], 1 << 30)] and gc.get_threshold() == before


def test_the_project_counts_the_parsed_files_it_lets_go_and_releases_the_rest_on_close(tmp_path: Path) -> None:
    files = {str(tmp_path / f"m{i}.py"): f"x = {i}\n" for i in range(3)}
    for name, text in files.items():
        Path(name).write_text(text)
    released: list[str] = []
    project = Project(Tree.build(files), lambda path: Path(path).read_text(), keep=2, release=released.append)
    assert [project.context(name) for name in files] == list(files.values())
    assert project.evicted == 1 and project.loaded(next(iter(files))) is None
    project.close()
    assert released == ["x = 1\n", "x = 2\n"] and all(project.loaded(name) is None for name in files)


def test_parse_skips_node_checks_only_while_it_parses() -> None:
    text = "def f(a, *, b=1):\n    return [x ** 2 for x in a if x]  # comment\n"
    assert engine.parse(text).deep_equals(cst.parse_module(text)) and engine.parse(text).code == text
    assert cst.CSTNode.__post_init__ is engine._validating_post_init
    with pytest.raises(cst.CSTValidationError):
        cst.SimpleWhitespace("not whitespace")
