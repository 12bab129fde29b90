"""Guarantee: hostile port outputs and parity report paths are one line, a documented exit code, nothing
half-written (docs/guarantees.md). Built from a real ``tf2torch port`` of the mlp fixture."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from fixtures.models import model_dir
from tests.safety_helpers import fingerprint, one_line, tf2torch


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    root = tmp_path_factory.mktemp("port")
    source = model_dir("mlp") / "model.keras"
    proc = tf2torch("port", source, "-o", root / "out", "-q", tmpdir=root / "tmp")
    assert proc.returncode == 0, proc.stderr
    return source, root / "out"


@pytest.mark.parametrize("header", ["huge", "malformed"])
def test_a_safetensors_file_with_a_bad_header_is_one_line(ported, tmp_path, header):
    source, out = ported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = (bad / "weights.safetensors").read_bytes()
    (bad / "weights.safetensors").write_bytes(struct.pack("<Q", 2**62) + data[8:] if header == "huge"
                                              else struct.pack("<Q", 12) + b"{not json!!}" + bytes(16))
    proc = tf2torch("parity", source, bad, "--trust-model-py", tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "tf2torch parity: error: ", "weights.safetensors: not a readable safetensors file")


def test_a_port_manifest_listing_files_outside_out_touches_nothing_outside(ported, tmp_path):
    source, out = ported
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    target = tmp_path / "work" / "out"
    shutil.copytree(out, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"] = [*manifest["files"], "../../victim.txt", str(victim), "/etc/hostname"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    before = fingerprint(tmp_path / "work")
    proc = tf2torch("port", source, "-o", target, "--force", "-q", tmpdir=tmp_path / "tmp")
    assert victim.read_text() == "keep me\n"
    if proc.returncode == 0:  # replaced: the new manifest lists only what port wrote
        assert json.loads((target / "manifest.json").read_text())["files"] == sorted(
            p.name for p in target.iterdir() if p.name != "manifest.json")
    else:
        one_line(proc, 2, "tf2torch port: error: ")
        assert fingerprint(tmp_path / "work") == before


@pytest.mark.parametrize("flag", ["--output", "--report"])
@pytest.mark.parametrize("target", ["directory", "read-only", "the source", "inside converted"])
def test_a_parity_report_aimed_at_a_directory_a_read_only_file_or_an_input_is_one_line(ported, tmp_path, target,
                                                                                       flag):
    """Checked before TensorFlow runs (except read-only, known only when writing): nothing is written."""
    import os
    import stat

    source, out = ported
    if target == "directory":
        report = tmp_path / "reports"
        report.mkdir()
    elif target == "read-only":
        report = tmp_path / "report.txt"
        report.write_text("old\n")
        report.chmod(stat.S_IRUSR)
        if os.access(report, os.W_OK):  # root writes through file modes; nobody creates files in /proc
            report = Path("/proc/tf2torch-report.txt")
    else:
        report = source if target == "the source" else out / "report.txt"
    before = fingerprint(source.parent), fingerprint(out)
    proc = tf2torch("parity", source, out, "--trust-model-py", flag, report, tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "tf2torch parity: error: ", f"{flag} {report}")
    assert (fingerprint(source.parent), fingerprint(out)) == before


@pytest.mark.parametrize("case", ["directory", "the source", "a port output", "same as --report"])
def test_node_data_aimed_wrong_is_one_line_before_anything_runs(ported, tmp_path, case):
    """--node-data gets the same checks as the other reports, and a port output (no model.pt2) is refused
    before TensorFlow starts."""
    source, out = ported
    extra = []
    if case == "directory":
        nodes = tmp_path / "nodes"
        nodes.mkdir()
    elif case == "the source":
        nodes = source
    else:
        nodes = tmp_path / "nodes.json"
        if case == "same as --report":
            extra = ["--report", nodes]
    (tmp_path / "tmp").mkdir()
    before = fingerprint(source.parent), fingerprint(out), fingerprint(tmp_path)
    proc = tf2torch("parity", source, out, "--trust-model-py", *extra, "--node-data", nodes,
                    tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "tf2torch parity: error: ", "--node-data")
    assert (fingerprint(source.parent), fingerprint(out), fingerprint(tmp_path)) == before


def test_a_second_port_into_the_same_out_fails_while_the_first_runs(ported, tmp_path):
    import time

    from tests.safety_helpers import leftovers, spawn

    source, _ = ported
    out = tmp_path / "out"
    first = spawn("port", source, "-o", out, "-q", tmpdir=tmp_path / "tmp")
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()) and first.poll() is None:
        assert time.monotonic() < deadline, "the first run never staged its output"
        time.sleep(0.05)
    second = tf2torch("port", source, "-o", out, "--force", "-q", tmpdir=tmp_path / "tmp")
    one_line(second, 2, f"another tf2torch run is writing {out} right now")
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.py", "weights.safetensors"]
    assert leftovers(tmp_path, tmp_path / "tmp") == []
