"""Every rule catches its positives and is silent on its negatives (fixtures/lint/TTLxxx/)."""
from __future__ import annotations

from pathlib import Path

import pytest

from checks.lint import all_rules, lint_source
from checks.lint.registry import resolve

from .helpers import FIXTURES, expected_findings, rule_fixture_files

ALL = resolve(None, None)


def _findings(path: Path) -> set[tuple[int, str]]:
    return {(f.row, f.code) for f in lint_source(path.read_text(encoding="utf-8"), str(path), ALL)}


@pytest.mark.parametrize("path", rule_fixture_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_findings_match_expect_markers(path: Path) -> None:
    expected = expected_findings(path.read_text(encoding="utf-8"))
    if path.name.startswith("positive"):
        assert any(code == path.parent.name for _, code in expected), "a positive fixture must expect its rule"
    else:
        assert path.name.startswith("negative"), "fixture names start with positive_ or negative_"
        assert not expected
    assert _findings(path) == expected


@pytest.mark.parametrize("code", [c for c in all_rules() if c != "TTL000"])
def test_every_rule_has_positive_and_negative_fixtures(code: str) -> None:
    folder = FIXTURES / code
    assert list(folder.glob("positive_*.py")), f"no positive fixture for {code}"
    assert list(folder.glob("negative_*.py")), f"no negative fixture for {code}"


@pytest.mark.parametrize("path", sorted((FIXTURES / "clean").glob("*.py")), ids=lambda p: p.name)
def test_correct_pytorch_code_has_no_findings(path: Path) -> None:
    assert _findings(path) == set()


def test_rules_have_stable_codes_and_one_line_summaries() -> None:
    rules = all_rules()
    assert all(code.startswith("TTL") and len(code) == 6 and code[3:].isdigit() for code in rules)
    assert len({r.name for r in rules.values()}) == len(rules)
    assert all("\n" not in r.summary for r in rules.values())


DOCS = FIXTURES.parents[1] / "docs" / "lint.md"


@pytest.mark.parametrize("code", list(all_rules()))
def test_every_rule_has_a_complete_docs_entry(code: str) -> None:
    """docs/lint.md has '### CODE name' (the anchor the JSON 'url' points at) with each part."""
    rule_ = all_rules()[code]
    text = DOCS.read_text(encoding="utf-8")
    heading = f"### {code} {rule_.name}\n"
    assert heading in text
    entry = text.split(heading, 1)[1].split("\n### ", 1)[0]
    for part in ("**What.**", "**Why.**", "**Wrong.", "**Right.", "**Fix"):
        assert part in entry, f"{code}: missing {part}"
    assert ("**Fix (safe).**" in entry) == rule_.fixable
    assert f"#{code.lower()}-{rule_.name}" in text  # linked from the rules table


def test_pre_commit_hooks_run_the_lint_subcommand() -> None:
    hooks = (FIXTURES.parents[1] / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    assert "- id: tf2torch-lint\n" in hooks and "  entry: tf2torch lint\n" in hooks
    assert "- id: tf2torch-lint-fix\n" in hooks and "  entry: tf2torch lint --fix\n" in hooks
    assert hooks.count("  language: python\n") == 2 and hooks.count("  types: [python]\n") == 2
