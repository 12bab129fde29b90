"""Guarantee: ``--force`` replaces only a directory tf2torch wrote, and never SOURCE or the working directory.

Every refusal is exit 2 with one line, before any work: the source tree and its neighbours keep their
checksums, and nothing is left beside OUT or in $TMPDIR (docs/guarantees.md, "What --force may delete").
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from fixtures.models import model_dir
from tests.safety_helpers import fingerprint, leftovers, one_line, spawn, tf2torch


@pytest.fixture
def project(tmp_path):
    """A user's project: ``proj/train.py``, ``proj/notes.txt`` and ``proj/models/sm`` (a SavedModel)."""
    proj = tmp_path / "proj"
    (proj / "models").mkdir(parents=True)
    shutil.copytree(model_dir("mlp") / "saved_model", proj / "models" / "sm")
    (proj / "train.py").write_text("print('train')\n")
    (proj / "notes.txt").write_text("my notes\n")
    return proj


@pytest.fixture(scope="module")
def earlier_output(tmp_path_factory):
    """A directory a previous ``tf2torch convert`` wrote (converted once for the module)."""
    root = tmp_path_factory.mktemp("earlier")
    proc = tf2torch("convert", model_dir("mlp") / "saved_model", "-o", root / "out", "-q", tmpdir=root / "tmp")
    assert proc.returncode == 0, proc.stderr
    return root / "out"


CASES = {
    # name: (OUT relative to the working directory, working directory relative to proj, needle)
    "out-is-source": ("models/sm", ".", "is the source"),
    "out-contains-source": ("proj", "..", "contains the source"),
    "out-inside-source": ("models/sm/converted", ".", "lies inside the source"),
    "out-is-cwd": (".", ".", "is the working directory or one of its parents"),
    "out-is-parent-of-cwd": ("..", "models", "is the working directory or one of its parents"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_force_never_deletes_the_source_or_the_working_directory(project, tmp_path, case):
    out, cwd, needle = CASES[case]
    before = fingerprint(tmp_path)
    proc = tf2torch("convert", "sm" if cwd == "models" else project / "models" / "sm", "-o", out, "--force", "-q",
                    cwd=(project / cwd).resolve(), tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "tf2torch convert: error: ", needle)
    assert fingerprint(tmp_path) == dict(before, tmp="dir")
    assert leftovers(tmp_path, project, tmp_path / "tmp") == []


@pytest.mark.parametrize("foreign", ["notes.txt", ".hidden", "sub/"])
def test_force_never_replaces_a_directory_tf2torch_did_not_write(earlier_output, tmp_path, foreign):
    out = tmp_path / "out"
    shutil.copytree(earlier_output, out)
    if foreign.endswith("/"):
        (out / foreign).mkdir()
    else:
        (out / foreign).write_text("user data\n")
    before = fingerprint(tmp_path)
    proc = tf2torch("convert", model_dir("mlp") / "saved_model", "-o", out, "--force", tmpdir=tmp_path / "tmp")
    one_line(proc, 2, f"{out} is not a tf2torch output (it holds {foreign.rstrip('/')!r}, which tf2torch did not "
                      "write); --force only replaces a directory tf2torch wrote")
    assert fingerprint(tmp_path) == dict(before, tmp="dir")
    assert leftovers(tmp_path, tmp_path / "tmp") == []


def test_force_never_replaces_a_directory_without_our_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt2").write_text("someone else's file\n")
    proc = tf2torch("convert", model_dir("mlp") / "saved_model", "-o", out, "--force", tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "is not a tf2torch output (it has no manifest.json)")
    (out / "manifest.json").write_text(json.dumps({"name": "not ours"}))
    proc = tf2torch("convert", model_dir("mlp") / "saved_model", "-o", out, "--force", tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "is not a tf2torch output (its manifest.json is not one tf2torch wrote)")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.pt2"]


def test_force_replaces_an_earlier_output_through_a_symlink_and_leaves_nothing(earlier_output, tmp_path):
    """The manifest records what the command wrote; a symlinked OUT keeps its link and gets new contents."""
    manifest = json.loads((earlier_output / "manifest.json").read_text())
    assert manifest["files"] == ["model.onnx", "model.pt2"]
    real = tmp_path / "runs" / "out"
    real.parent.mkdir()
    shutil.copytree(earlier_output, real)
    stamp = (real / "model.pt2").stat().st_mtime_ns
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)
    proc = tf2torch("convert", model_dir("mlp") / "saved_model", "-o", link, "--force", "-q", tmpdir=tmp_path / "tmp")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "model.pt2").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in real.iterdir()) == ["manifest.json", "model.onnx", "model.pt2"]
    assert leftovers(tmp_path, real.parent, tmp_path / "tmp") == []


@pytest.mark.parametrize("case", ["read-only-parent", "file-in-the-way", "out-is-a-file"])
def test_user_mistakes_about_out_are_one_clear_line_not_internal_errors(tmp_path, case):
    (tmp_path / "file").write_text("x\n")
    parent = tmp_path / "ro"
    parent.mkdir()
    read_only = Path("/sys") if os.geteuid() == 0 else parent  # root ignores directory permissions; not sysfs's
    out, needle = {
        "read-only-parent": (read_only / "tf2torch-test-out", "permission denied"),
        "file-in-the-way": (tmp_path / "file" / "out", "a file stands where a directory is needed"),
        "out-is-a-file": (tmp_path / "file", "exists and is not a directory"),
    }[case]
    parent.chmod(0o555)
    try:
        before = fingerprint(tmp_path)
        proc = tf2torch("convert", model_dir("mlp") / "saved_model", "-o", out, "--force", tmpdir=tmp_path / "tmp")
        line = one_line(proc, 2, "tf2torch convert: error: ", needle)
        assert "internal error" not in line
        assert fingerprint(tmp_path) == dict(before, tmp="dir")
    finally:
        parent.chmod(0o755)


def test_force_never_replaces_a_file_added_to_out_while_the_command_ran(earlier_output, tmp_path):
    """OUT is checked again, under the lock, just before it is replaced."""
    out = tmp_path / "out"
    shutil.copytree(earlier_output, out)
    run = spawn("convert", model_dir("mlp") / "saved_model", "-o", out, "--force", "-q", tmpdir=tmp_path / "tmp")
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()) and run.poll() is None:
        assert time.monotonic() < deadline, "the run never staged its output"
        time.sleep(0.05)
    (out / "notes.txt").write_text("written during the run\n")
    _, stderr = run.communicate(timeout=300)
    one_line((run.returncode, stderr), 2, "is not a tf2torch output (it holds 'notes.txt'")
    assert (out / "notes.txt").read_text() == "written during the run\n"
    assert fingerprint(out) == dict(fingerprint(earlier_output), **{"notes.txt": fingerprint(out)["notes.txt"]})
    assert leftovers(tmp_path, tmp_path / "tmp") == []


def test_force_puts_out_back_when_a_file_lands_between_the_last_check_and_the_swap(earlier_output, tmp_path):
    """The swap itself re-checks OUT after moving it aside: a file that arrived in between is never deleted."""
    from migrate.core.artifacts import _replace
    from migrate.core.errors import InputError

    out, staging = tmp_path / "out", tmp_path / ".out.partial-new"
    shutil.copytree(earlier_output, out)
    staging.mkdir()
    (staging / "model.pt2").write_bytes(b"new")
    (out / "late.txt").write_text("arrived after the check\n")
    before = fingerprint(out)
    with pytest.raises(InputError, match="changed while tf2torch ran .*'late.txt'"):
        _replace(out, staging)
    assert fingerprint(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.old")] == []
