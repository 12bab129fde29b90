"""--fix reproduces the after-files, is idempotent, keeps files parseable; --diff writes nothing."""
from __future__ import annotations

import shutil
from pathlib import Path

import libcst as cst
import pytest

from checks.lint import check, lint_source
from checks.lint.registry import resolve

from .helpers import FIXTURES

CASES = sorted(p for p in (FIXTURES / "fixes").iterdir() if (p / "before.py").exists())


@pytest.fixture(params=CASES, ids=lambda p: p.name)
def case(request, tmp_path: Path) -> tuple[Path, str]:
    target = tmp_path / "case.py"
    shutil.copyfile(request.param / "before.py", target)
    return target, (request.param / "after.py").read_text(encoding="utf-8")


def test_fix_matches_after_file(case: tuple[Path, str]) -> None:
    path, expected = case
    report = check([str(path)], fix=True, cache=False)
    assert report.fixed > 0
    assert path.read_text(encoding="utf-8") == expected
    cst.parse_module(path.read_text(encoding="utf-8"))
    assert not any(f.fix for f in report.findings), "fixable findings left after --fix"


def test_second_fix_changes_nothing(case: tuple[Path, str]) -> None:
    path, expected = case
    check([str(path)], fix=True, cache=False)
    again = check([str(path)], fix=True, cache=False)
    assert again.fixed == 0
    assert path.read_text(encoding="utf-8") == expected


def test_diff_shows_the_fix_and_writes_nothing(case: tuple[Path, str]) -> None:
    path, expected = case
    before = path.read_bytes()
    report = check([str(path)], diff=True, cache=False)
    assert path.read_bytes() == before
    assert len(report.diffs) == 1
    added = [line[1:] for line in report.diffs[0].splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added and all(line in expected.splitlines() for line in added)


def test_after_files_have_no_fixable_findings() -> None:
    for case_dir in CASES:
        after = case_dir / "after.py"
        findings = lint_source(after.read_text(encoding="utf-8"), str(after), resolve(None, None))
        assert not any(f.fix for f in findings), case_dir.name
    assert any(lint_source((c / "before.py").read_text(encoding="utf-8"), "x.py", resolve(None, None))
               for c in CASES)


def test_fix_keeps_crlf_bom_and_mode(tmp_path: Path) -> None:
    source = (FIXTURES / "fixes" / "TTL301-momentum" / "before.py").read_text(encoding="utf-8")
    path = tmp_path / "crlf.py"
    path.write_bytes(b"\xef\xbb\xbf" + source.replace("\n", "\r\n").encode())
    path.chmod(0o640)
    check([str(path)], fix=True, cache=False)
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert b"momentum=0.01" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert path.stat().st_mode & 0o777 == 0o640


def test_files_are_not_touched_without_fix(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    shutil.copyfile(FIXTURES / "fixes" / "combined" / "before.py", path)
    stat = path.stat()
    report = check([str(path)], cache=False)
    assert {f.code for f in report.findings} == {"TTL101", "TTL201", "TTL301"}
    assert path.stat().st_mtime_ns == stat.st_mtime_ns


def test_a_fix_that_would_break_the_file_is_not_written(tmp_path: Path, monkeypatch) -> None:
    from checks.lint import runner

    path = tmp_path / "case.py"
    shutil.copyfile(FIXTURES / "fixes" / "TTL301-momentum" / "before.py", path)
    before = path.read_bytes()
    monkeypatch.setattr(runner, "apply_fixes", lambda text, fixes: (text + "(((\n", 1) if fixes else (text, 0))
    report = check([str(path)], fix=True, cache=False)
    assert path.read_bytes() == before
    assert report.fixed == 0 and "file left unchanged" in report.errors[0]
