"""The lint command line: output formats, exit codes, errors, config, noqa, discovery."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checks.lint.__main__ import main
from checks.lint.cli import add_parser, run

ROOT = Path(__file__).resolve().parents[2]

BAD = """import torch
import torch.nn.functional as F

for x, y in loader:
    loss = F.cross_entropy(F.softmax(model(x), dim=1), y)
    loss.backward()
    optimizer.step()
"""
CLEAN = """import torch

def add(a, b):
    return torch.add(a, b)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "train.py").write_text(BAD)
    (tmp_path / "util.py").write_text(CLEAN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def lint(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_format_and_exit_1(project: Path, capsys) -> None:
    code, out, err = lint(capsys)
    assert code == 1
    assert out.splitlines() == [
        ("train.py:5:28: TTL201 F.cross_entropy applies log_softmax itself, so this softmax is applied twice; "
        "pass the logits"),
        ("train.py:7:5: TTL101 gradients are never reset in this loop, so every backward() adds to the last; "
        "call optimizer.zero_grad() once per iteration"),
    ]
    assert "Found 2 findings (2 fixable with --fix) in 2 files." in err


def test_clean_exit_0_and_exit_zero(project: Path, capsys) -> None:
    assert lint(capsys, "util.py")[0] == 0
    assert lint(capsys, "--exit-zero")[0] == 0


def test_json_format_has_ruff_keys(project: Path, capsys) -> None:
    code, out, _ = lint(capsys, "--output-format", "json")
    data = json.loads(out)
    assert code == 1 and len(data) == 2
    for item in data:
        assert set(item) == {"code", "message", "filename", "location", "end_location", "fix", "url"}
        assert set(item["location"]) == {"row", "column"} and set(item["end_location"]) == {"row", "column"}
        assert item["url"].startswith("https://") and f"#{item['code'].lower()}-" in item["url"]
        assert item["fix"]["applicability"] == "safe"
        for edit in item["fix"]["edits"]:
            assert set(edit) == {"content", "location", "end_location"}
    softmax = next(i for i in data if i["code"] == "TTL201")
    assert softmax["location"] == {"row": 5, "column": 28}
    assert softmax["end_location"] == {"row": 5, "column": 54}  # end is exclusive, like ruff
    assert softmax["fix"]["edits"][0]["content"] == "model(x)"


def test_json_clean_is_empty_array(project: Path, capsys) -> None:
    code, out, _ = lint(capsys, "util.py", "--output-format", "json")
    assert code == 0 and json.loads(out) == []


def test_sarif_format(project: Path, capsys) -> None:
    code, out, _ = lint(capsys, "--output-format", "sarif")
    log = json.loads(out)
    assert code == 1
    assert log["version"] == "2.1.0" and "sarif" in log["$schema"]
    run_ = log["runs"][0]
    rules = run_["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert "TTL101" in ids and "TTL501" in ids
    assert len(run_["results"]) == 2
    for result in run_["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in {"error", "warning", "note"}
        assert result["message"]["text"]
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == "train.py"
        assert location["region"]["startLine"] >= 1 and location["region"]["startColumn"] >= 1


def test_sarif_validates_against_schema_subset(project: Path, capsys) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).parent / "sarif_subset.schema.json").read_text())
    jsonschema.validate(json.loads(lint(capsys, "--output-format", "sarif")[1]), schema)


def test_github_format(project: Path, capsys) -> None:
    code, out, _ = lint(capsys, "--output-format", "github")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 2
    assert all(line.startswith("::error file=train.py,line=") for line in lines)
    assert lines[0].startswith("::error file=train.py,line=5,col=28,endLine=5,endColumn=54,title=TTL201::TTL201 ")


def test_select_and_ignore(project: Path, capsys) -> None:
    code, out, _ = lint(capsys, "--select", "TTL1")
    assert code == 1 and [line.split()[1] for line in out.splitlines()] == ["TTL101"]
    code, out, _ = lint(capsys, "--ignore", "TTL101,TTL201")
    assert code == 0 and out == ""


def test_unknown_code_is_a_usage_error(project: Path, capsys) -> None:
    code, out, err = lint(capsys, "--select", "XYZ9")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["tf2torch lint: error: unknown rule code or prefix 'XYZ9'"]


def test_missing_path_is_exit_2_without_traceback(project: Path, capsys) -> None:
    code, _out, err = lint(capsys, "nope.py")
    assert code == 2
    assert err.strip() == "tf2torch lint: error: nope.py: no such file or directory"
    assert "Traceback" not in err


def test_syntax_error_and_non_utf8_are_findings_and_the_run_goes_on(project: Path, capsys) -> None:
    (project / "broken.py").write_text("def f(:\n    pass\n")
    (project / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (project / "broken_no_trigger.py").write_text("x = (\n")
    code, out, _ = lint(capsys, "--output-format", "json")
    data = json.loads(out)
    by_file = {}
    for item in data:
        by_file.setdefault(item["filename"], []).append(item["code"])
    assert code == 1
    assert by_file["broken.py"] == ["TTL000"]
    assert by_file["broken_no_trigger.py"] == ["TTL000"]
    assert by_file["latin1.py"] == ["TTL000"]
    assert sorted(by_file["train.py"]) == ["TTL101", "TTL201"]
    latin = next(i for i in data if i["filename"] == "latin1.py")
    assert latin["location"] == {"row": 1, "column": 6} and "UTF-8" in latin["message"]


def test_noqa(project: Path, capsys) -> None:
    source = BAD.replace("dim=1), y)", "dim=1), y)  # noqa: TTL201").replace(
        "optimizer.step()", "optimizer.step()  # noqa")
    (project / "train.py").write_text(source)
    assert lint(capsys)[:2] == (0, "")
    (project / "train.py").write_text(BAD.replace("dim=1), y)", "dim=1), y)  # noqa: TTL101"))
    code, out, _ = lint(capsys)
    assert code == 1 and {line.split()[1] for line in out.splitlines()} == {"TTL101", "TTL201"}


def test_pyproject_config(project: Path, capsys) -> None:
    (project / "pyproject.toml").write_text(
        '[tool.tf2torch.lint]\nignore = ["TTL101"]\nexclude = ["legacy"]\n'
        '[tool.tf2torch.lint.per-file-ignores]\n"scripts/*.py" = ["TTL2"]\n')
    (project / "legacy").mkdir()
    (project / "legacy" / "old.py").write_text(BAD)
    (project / "scripts").mkdir()
    (project / "scripts" / "run.py").write_text(BAD)
    code, out, _ = lint(capsys)
    assert code == 1 and out.splitlines() == [line for line in out.splitlines() if line.startswith("train.py")]
    assert [line.split()[1] for line in out.splitlines()] == ["TTL201"]
    # exclude also applies to files named explicitly (pre-commit passes file lists)
    assert lint(capsys, "legacy/old.py")[:2] == (0, "")
    # found from a sub-folder too, and --select on the command line overrides select
    os.chdir(project / "scripts")
    assert lint(capsys, ".")[0] == 0
    code, out, _ = lint(capsys, ".", "--select", "TTL1")
    assert code == 0 and out == ""  # TTL101 is still ignored by the config


@pytest.mark.parametrize("body, message", [
    ('select = "TTL1"', "select must be a list of strings"),
    ('selekt = ["TTL1"]', "unknown key 'selekt'"),
    ('select = ["NOPE1"]', "unknown rule code or prefix 'NOPE1'"),
    ('select = [', "invalid TOML"),
])
def test_bad_config_is_exit_2(project: Path, capsys, body: str, message: str) -> None:
    (project / "pyproject.toml").write_text(f"[tool.tf2torch.lint]\n{body}\n")
    code, out, err = lint(capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_discovery_skips_virtualenvs_and_build_folders(project: Path, capsys) -> None:
    for folder in (".git", ".venv", "build", "dist", "__pycache__", "node_modules", ".tox", "myenv"):
        (project / folder).mkdir()
        (project / folder / "bad.py").write_text(BAD)
    (project / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    (project / "pkg").mkdir()
    (project / "pkg" / "bad.py").write_text(BAD)
    (project / "notes.txt").write_text(BAD)
    _code, out, _ = lint(capsys)
    assert {line.split(":")[0] for line in out.splitlines()} == {"train.py", os.path.join("pkg", "bad.py")}


def test_fix_and_diff_exit_codes(project: Path, capsys) -> None:
    code, out, _ = lint(capsys, "--diff")
    assert code == 1 and out.startswith("--- a/train.py\n+++ b/train.py\n")
    assert "+    optimizer.zero_grad()\n" in out
    assert (project / "train.py").read_text() == BAD
    code, out, err = lint(capsys, "--fix")
    assert code == 0 and out == "" and "Fixed 2" in err
    assert lint(capsys, "--diff")[:2] == (0, "")


def test_add_parser_contract(project: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="tf2torch")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lint", "train.py", "--select", "TTL2", "--output-format", "json"])
    assert args.func is run
    assert args.func(args) == 1
    assert [i["code"] for i in json.loads(capsys.readouterr().out)] == ["TTL201"]


def test_module_entry_point(project: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "checks.lint", "--no-cache", "train.py", "nothere"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "checks.lint", "--no-cache", "train.py"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and done.stdout.count("\n") == 2


def test_never_imports_the_linted_code_nor_tensorflow_or_torch(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    target = tmp_path / "evil.py"
    target.write_text(f"open({str(marker)!r}, 'w').close()\nimport torch\n" + BAD)
    script = (
        "import sys\nfrom checks.lint import lint_paths\n"
        f"found = lint_paths([{str(target)!r}], cache=False)\n"
        "assert [f.code for f in found] == ['TTL201', 'TTL101'], found\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def test_config_found_from_the_linted_path_and_explicit_config(tmp_path: Path, monkeypatch, capsys) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "train.py").write_text(BAD)
    (repo / "pyproject.toml").write_text('[tool.tf2torch.lint]\nselect = ["TTL2"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _ = lint(capsys, str(repo / "src"))
    assert code == 1 and [line.split()[1] for line in out.splitlines()] == ["TTL201"]
    other = elsewhere / "other.toml"
    other.write_text('[tool.tf2torch.lint]\nselect = ["TTL1"]\n')
    code, out, _ = lint(capsys, str(repo / "src"), "--config", str(other))
    assert code == 1 and [line.split()[1] for line in out.splitlines()] == ["TTL101"]
    code, _, err = lint(capsys, str(repo / "src"), "--config", str(elsewhere / "missing.toml"))
    assert code == 2 and "cannot read" in err


def test_tf2torch_entry_point(project: Path, capsys) -> None:
    from migrate import cli

    assert cli.main(["lint", "--select", "TTL1", "--no-cache"]) == 1
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["TTL101"]
    assert cli.main(["lint", "missing_dir"]) == 2


def test_info_rules_are_notes_in_sarif_and_notices_on_github(tmp_path: Path, monkeypatch, capsys) -> None:
    """TTL304 is advice (Keras optimizer defaults in a port): SARIF level "note", GitHub "::notice"."""
    source = ROOT / "fixtures" / "lint" / "TTL304" / "positive_keras_training_port.py"
    (tmp_path / "port.py").write_text(source.read_text())
    monkeypatch.chdir(tmp_path)
    code, out, _ = lint(capsys, "--select", "TTL304", "--output-format", "sarif")
    log = json.loads(out)
    driver = log["runs"][0]["tool"]["driver"]
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in driver["rules"]}
    assert levels["TTL304"] == "note" and levels["TTL101"] == "error"
    assert code == 1 and log["runs"][0]["results"]
    assert {r["level"] for r in log["runs"][0]["results"]} == {"note"}
    _, out, _ = lint(capsys, "--select", "TTL304", "--output-format", "github")
    assert out and all(line.startswith("::notice file=port.py,") for line in out.splitlines())
