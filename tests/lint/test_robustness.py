"""Hostile and odd inputs: the run never crashes, every other file is still reported, and
``--fix`` never writes the wrong file. Each test builds its inputs in tmp_path."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from checks.lint import check, runner
from checks.lint.__main__ import main
from checks.lint.engine import MAX_BOOL_DEPTH

ROOT = Path(__file__).resolve().parents[2]
BAD = "import torch\nfor x in data:\n    model(x).sum().backward()\n    optimizer.step()\n"
FIXED = "import torch\nfor x in data:\n    optimizer.zero_grad()\n    model(x).sum().backward()\n    optimizer.step()\n"
MISSING_ZERO_GRAD = "train.py:4:5: TTL101 gradients are never reset in this loop"


def lint(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["--no-cache", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "train.py").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _findings(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if line.startswith(f"{name}:")]


@pytest.mark.parametrize("name, body, why", [
    ("parens.py", "x = " + "(" * 2000 + "1" + ")" * 2000, "syntax error: too many nested parentheses"),
    ("attributes.py", "x = a" + ".b" * 20_000, "cannot be analysed: nested 2000"),
    ("minuses.py", "x = " + "-" * 10_000 + "1", "cannot be analysed: too deeply nested for Python's own parser"),
    ("sum.py", "x = " + "+".join(["1"] * 5000), "cannot be analysed: nested 500"),
])
def test_nesting_beyond_pythons_parser_is_one_ttl000_and_other_files_are_reported(
        project: Path, capsys, name: str, body: str, why: str) -> None:
    (project / name).write_text(BAD + body + "\n")
    code, out, err = lint(capsys)
    assert code == 1
    [finding] = _findings(out, name)
    assert f" TTL000 {why}" in finding
    assert _findings(out, "train.py")[0].startswith(MISSING_ZERO_GRAD)
    assert err == ["Found 2 findings (1 fixable with --fix) in 2 files."]


@pytest.mark.parametrize("body", ["x = " + "+".join(["1"] * 400), "x = " + "-" * 500 + "1",
                                  "x = " + " and ".join(["a"] * 2000)])
def test_valid_deep_python_is_analysed_not_reported_as_an_error(tmp_path: Path, body: str) -> None:
    path = tmp_path / "deep.py"
    path.write_text(BAD + body + "\n")
    limit = sys.getrecursionlimit()
    report = check([str(path)], cache=False)
    assert [f.code for f in report.findings] == ["TTL101"] and report.errors == []
    assert sys.getrecursionlimit() == limit  # raised only while analysing


def test_twenty_thousand_concatenated_strings_are_not_called_a_syntax_error(project: Path, capsys) -> None:
    strings = "x = (" + " ".join(["'a'"] * 20_000) + ")\n"
    (project / "strings.py").write_text(BAD + strings)
    (project / "data.py").write_text(strings)  # no rule's trigger words: only compiled, and CPython accepts it
    code, out, _ = lint(capsys)
    assert code == 1
    [finding] = _findings(out, "strings.py")
    assert "TTL000 cannot be analysed: more than 3000 implicitly concatenated strings" in finding
    assert "syntax error" not in finding
    assert _findings(out, "data.py") == [] and _findings(out, "train.py")


def test_an_and_chain_deeper_than_the_parser_handles_is_one_ttl000(tmp_path: Path) -> None:
    path = tmp_path / "chain.py"
    path.write_text(BAD + "ok = " + " and ".join(["a"] * (MAX_BOOL_DEPTH + 2)) + "\n")
    [finding] = check([str(path)], cache=False).findings
    assert finding.code == "TTL000" and finding.row == 5 and "and/or chain" in finding.message


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork",
                    reason="the crash is injected into the workers by forking this process")
def test_a_worker_that_dies_costs_only_its_file(tmp_path: Path, monkeypatch) -> None:
    for i in range(19):
        (tmp_path / f"m{i:02}.py").write_text(BAD)
    (tmp_path / "crash.py").write_text(BAD)
    original = runner.lint_source

    def segfault_on_crash_py(text: str, filename: str, codes: list[str], *project):
        if filename.endswith("crash.py"):
            os.kill(os.getpid(), signal.SIGSEGV)  # what a native stack overflow does
        return original(text, filename, codes, *project)

    monkeypatch.setattr(runner, "lint_source", segfault_on_crash_py)
    report = check([str(tmp_path)], jobs=2)
    assert report.errors == []
    by_file = {Path(f.filename).name: f for f in report.findings}
    assert len(report.findings) == 20 and by_file["crash.py"].code == "TTL000"
    assert "killed by SIGSEGV" in by_file["crash.py"].message
    assert all(f.code == "TTL101" for name, f in by_file.items() if name != "crash.py")
    monkeypatch.setattr(runner, "lint_source", original)
    assert {f.code for f in check([str(tmp_path)], jobs=2).findings} == {"TTL101"}  # the crash was not cached


def test_symlink_loop_in_a_folder_is_reported_and_the_run_goes_on(project: Path, capsys) -> None:
    (project / "src").mkdir()
    (project / "src" / "self.py").symlink_to("self.py")
    (project / "src" / "lock.py").symlink_to("user@host.1234")  # an editor's lock file: a link to nowhere
    code, out, err = lint(capsys)
    assert code == 1 and _findings(out, "train.py")[0].startswith(MISSING_ZERO_GRAD)
    assert err == [f"tf2torch lint: warning: {os.path.join('src', 'self.py')}: symbolic link loop; skipped",
                   "Found 1 finding (1 fixable with --fix) in 1 file."]


def test_special_files_are_reported_one_line_each_and_never_read(project: Path, capsys) -> None:
    os.mkfifo(project / "pipe.py")  # reading it would block forever
    (project / "loop.py").symlink_to("loop.py")
    (project / "pkg").mkdir()
    os.mkfifo(project / "pkg" / "queue.py")
    code, out, err = lint(capsys, "/dev/null", "pipe.py", "loop.py", "train.py", "pkg")
    assert code == 2 and _findings(out, "train.py")[0].startswith(MISSING_ZERO_GRAD)
    assert err == [
        f"tf2torch lint: warning: {os.path.join('pkg', 'queue.py')}: named pipe, not a Python file; skipped",
        "tf2torch lint: error: /dev/null: character device, not a Python file; skipped",
        "tf2torch lint: error: pipe.py: named pipe, not a Python file; skipped",
        "tf2torch lint: error: loop.py: symbolic link loop; skipped",
        "Found 1 finding (1 fixable with --fix) in 1 file.",
    ]


@pytest.mark.parametrize("output_format", ["text", "json"])
def test_a_file_name_that_is_not_utf8_is_printed_not_a_crash(tmp_path: Path, output_format: str) -> None:
    folder = os.fsencode(tmp_path)
    with open(folder + b"/caf\xe9.py", "wb") as handle:
        handle.write(BAD.encode())
    (tmp_path / "train.py").write_text(BAD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}  # strict: no surrogates allowed
    done = subprocess.run([sys.executable, "-m", "checks.lint", "--no-cache", "--output-format", output_format, "."],
                          capture_output=True, env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    if output_format == "text":
        assert done.stdout.startswith(b"caf\xe9.py:4:5: TTL101 ")  # the name's own bytes, as ls prints them
        assert b"\ntrain.py:4:5: TTL101 " in done.stdout
    else:
        names = [item["filename"] for item in json.loads(done.stdout)]
        assert names == ["caf\udce9.py", "train.py"]  # os.fsencode() gives the bytes back
        assert os.fsencode(names[0]) == b"caf\xe9.py"


def test_fix_writes_the_symlink_target_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "train.py"
    target.write_text(BAD)
    link = tmp_path / "train.py"
    link.symlink_to(Path("real") / "train.py")
    report = check([str(link)], fix=True, cache=False)
    assert report.fixed == 1 and report.findings == [] and report.warnings == []
    assert link.is_symlink() and os.readlink(link) == os.path.join("real", "train.py")
    assert target.read_text() == FIXED
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["real", "train.py", "train.py"]  # no temp files left


def test_fix_never_overwrites_a_file_changed_since_read(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "train.py"
    path.write_text(BAD)
    edited = BAD + "# typed by the user while the linter ran\n"
    original = runner.lint_source

    def user_edits_meanwhile(text: str, filename: str, codes: list[str], *project):
        path.write_text(edited)
        return original(text, filename, codes, *project)

    monkeypatch.setattr(runner, "lint_source", user_edits_meanwhile)
    report = check([str(path)], fix=True, cache=False)
    assert path.read_text() == edited
    assert report.fixed == 0 and [f.code for f in report.findings] == ["TTL101"]
    assert report.warnings == [f"{path}: changed since it was read; run again; 1 fix not written"]


def test_fix_leaves_read_only_files_alone(project: Path, capsys) -> None:
    (project / "train.py").chmod(0o444)
    code, out, err = lint(capsys, "--fix")
    assert code == 1 and (project / "train.py").read_text() == BAD
    assert _findings(out, "train.py")[0].startswith(MISSING_ZERO_GRAD)
    assert err[0] == "tf2torch lint: warning: train.py: read-only; 1 fix not written"
    assert (project / "train.py").stat().st_mode & 0o777 == 0o444


def test_fix_leaves_hard_linked_files_alone(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(BAD)
    os.link(path, tmp_path / "copy.txt")
    report = check([str(path)], fix=True, cache=False)
    assert path.read_text() == BAD == (tmp_path / "copy.txt").read_text()
    assert report.fixed == 0 and "2 hard links" in report.warnings[0]


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"])
def test_fix_keeps_the_files_line_endings(tmp_path: Path, newline: str) -> None:
    path = tmp_path / "train.py"
    path.write_bytes(BAD.replace("\n", newline).encode())
    check([str(path)], fix=True, cache=False)
    assert path.read_bytes() == FIXED.replace("\n", newline).encode()


def test_fix_through_two_links_writes_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text(BAD)
    (tmp_path / "alias.py").symlink_to("train.py")
    report = check([str(tmp_path)], fix=True, cache=False)
    assert path.read_text() == FIXED and (tmp_path / "alias.py").is_symlink()
    assert report.fixed == 1 and report.findings == [] and report.warnings == []


def test_where_no_large_stack_can_be_had_deep_files_still_cost_at_most_one_finding(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    from checks.lint import engine

    monkeypatch.setattr(engine, "STACK_BYTES", 1 << 62)  # more address space than any machine grants
    monkeypatch.setattr(engine, "SMALL_STACK_BYTES", 1 << 62)
    deep, plain = tmp_path / "deep.py", tmp_path / "train.py"
    deep.write_text(BAD + "x = " + "-" * 900 + "1\n")
    plain.write_text(BAD)
    limit = sys.getrecursionlimit()
    report = check([str(tmp_path)], cache=False)
    [found] = [f for f in report.findings if f.filename == str(deep)]
    assert found.code == "TTL101" or "too deeply nested for the linter's parser" in found.message  # analysed here
    assert [f.code for f in report.findings if f.filename == str(plain)] == ["TTL101"] and report.errors == []
    assert sys.getrecursionlimit() == limit
