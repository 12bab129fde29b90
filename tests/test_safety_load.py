"""Guarantee: a model.pt2 that would run code when loaded is refused before loading (docs/guarantees.md).

Each payload is planted in a real converted model.pt2. A control run of plain ``torch.export.load``
(in a child process) proves the payload is live; ``tf2torch parity``, ``migrate.load`` and the pytest
plugin must refuse the file with one line and never write the payload's marker file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fixtures.models import model_dir
from tests.cli_helpers import user_pytest
from tests.safety_helpers import ROOT, env_with_tmpdir, leftovers, one_line, tf2torch


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> None:
    """Copy the zip ``src`` to ``dst`` with some members (paths below the archive root) replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            zout.writestr(info.filename, replace.get(rel, zin.read(info.filename)))


def _model_json_with(archive: Path, edit) -> bytes:
    with zipfile.ZipFile(archive) as z:
        program = json.loads(z.read(next(n for n in z.namelist() if n.endswith("models/model.json"))))
    edit(program)
    return json.dumps(program).encode()


def plant(kind: str, converted: Path, target: Path, marker: Path) -> None:
    """A copy of ``converted`` whose model.pt2 runs ``touch marker`` when loaded (or when run)."""
    import torch

    shutil.copytree(converted, target)
    pt2 = converted / "model.pt2"
    command = f"touch {marker}"
    buffer = io.BytesIO()
    torch.save(_Payload(marker), buffer)
    if kind == "pickled-weight":
        with zipfile.ZipFile(pt2) as z:
            config = json.loads(z.read("model/data/weights/model_weights_config.json"))
        first = next(iter(config["config"]))
        config["config"][first]["use_pickle"] = True
        weight = config["config"][first]["path_name"]
        replace = {f"data/weights/{weight}": buffer.getvalue(),
                   "data/weights/model_weights_config.json": json.dumps(config).encode()}
    elif kind == "sample-inputs":
        replace = {"data/sample_inputs/model.pt": buffer.getvalue()}
    elif kind == "symbolic-expression":
        def edit(program):
            for node in _nodes_with(program, "expr_str"):
                node["expr_str"] = f"__import__('os').system({command!r})"
        replace = {"models/model.json": _model_json_with(pt2, edit)}
    elif kind == "guard-code":
        def edit(program):
            program["guards_code"] = [f"__import__('os').system({command!r}) or True"]
        replace = {"models/model.json": _model_json_with(pt2, edit)}
    else:
        raise ValueError(kind)
    _rewrite(pt2, target / "model.pt2", replace)


def _nodes_with(program, key):
    stack = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


PAYLOADS = ["pickled-weight", "sample-inputs", "symbolic-expression", "guard-code"]
#: Plain torch.export.load, then one call of the module (the mlp fixture takes ``features[N, 16]``).
UNCHECKED_LOAD = ("import sys, torch\n"
                  "try:\n    torch.export.load(sys.argv[1]).module()(torch.zeros(2, 16))\n"
                  "except Exception:\n    pass\n")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """(SavedModel, a converted output) shared by every test here: conversions are slow."""
    root = tmp_path_factory.mktemp("load")
    source = model_dir("mlp") / "saved_model"
    proc = tf2torch("convert", source, "-o", root / "out", "-q", tmpdir=root / "tmp")
    assert proc.returncode == 0, proc.stderr
    return source, root / "out"


@pytest.mark.parametrize("kind", PAYLOADS)
def test_model_pt2_that_would_run_code_is_refused_before_loading(mlp, tmp_path, kind):
    source, out = mlp
    marker = tmp_path / "marker"
    bad = tmp_path / "bad"
    plant(kind, out, bad, marker)

    # Control: plain torch.export.load really runs this payload.
    subprocess.run([sys.executable, "-c", UNCHECKED_LOAD, str(bad / "model.pt2")], check=False, capture_output=True,
                   env=env_with_tmpdir(tmp_path / "tmp"))
    assert marker.exists(), f"the {kind} payload did not run under plain torch.export.load"
    marker.unlink()

    # tf2torch parity: exit 2, one line, nothing ran.
    proc = tf2torch("parity", source, bad, tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "tf2torch parity: error: ", f"{bad / 'model.pt2'}: refused to load")
    assert proc.stdout == "" and not marker.exists()

    # migrate.load and the pytest plugin, in a fresh process each.
    load = ("import sys\nfrom migrate import load\nfrom migrate.core.errors import InputError\n"
            "try:\n    load(sys.argv[1])\nexcept InputError as exc:\n    print(exc)\n    sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", load, str(bad)], check=False, capture_output=True, text=True, cwd=ROOT,
                          env=env_with_tmpdir(tmp_path / "tmp"))
    assert proc.returncode == 2 and "refused to load" in proc.stdout, proc.stdout + proc.stderr
    assert not marker.exists()
    assert leftovers(tmp_path / "tmp") == []


def test_pytest_plugin_refuses_a_planted_model_pt2(mlp, tmp_path):
    source, out = mlp
    marker = tmp_path / "marker"
    plant("pickled-weight", out, tmp_path / "bad", marker)
    (tmp_path / "test_user.py").write_text(
        "def test_model(tf2torch_parity):\n"
        f"    tf2torch_parity({str(source)!r}, {str(tmp_path / 'bad')!r})\n")
    proc = user_pytest(tmp_path / "test_user.py", env_with_tmpdir(tmp_path / "tmp"))
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout + proc.stderr
    assert "tf2torch parity could not run" in proc.stdout and "refused to load" in proc.stdout
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "plain-pickle", "graph-calls-os-system"])
def test_damaged_or_foreign_model_pt2_is_one_line_without_torch_warnings(mlp, tmp_path, damage):
    source, out = mlp
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = (out / "model.pt2").read_bytes()
    if damage == "truncated":
        (bad / "model.pt2").write_bytes(data[: len(data) // 2])
        needle = "not a torch.export archive"
    elif damage == "plain-pickle":
        import pickle

        (bad / "model.pt2").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
        needle = "not a torch.export archive"
    else:
        def edit(program):
            next(_nodes_with(program, "target"))["target"] = "torch.os.system"
        _rewrite(out / "model.pt2", bad / "model.pt2", {"models/model.json": _model_json_with(out / "model.pt2", edit)})
        needle = "its graph calls 'torch.os.system'"
    proc = tf2torch("parity", source, bad, "--no-onnx", tmpdir=tmp_path / "tmp")
    one_line(proc, 2, "tf2torch parity: error: ", needle)
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr


def test_a_real_conversion_passes_the_check(mlp):
    from migrate.conversion.pt2_check import check_pt2

    check_pt2(mlp[1] / "model.pt2")
