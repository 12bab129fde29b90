"""Guarantees on signals, concurrent runs, special files and odd inputs (docs/guarantees.md).

SIGTERM cleans up like Ctrl-C; a SIGKILLed run's worker dies with it and its partial output is removed
by the next run; a second conversion into the same OUT fails at once; FIFOs are refused instead of
read; TensorFlow's temporary files never stay in $TMPDIR; odd models and paths get one clear line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures.models import model_dir
from tests.safety_helpers import (
    env_with_tmpdir,
    fingerprint,
    leftovers,
    one_line,
    spawn,
    tf2torch,
)

MLP = model_dir("mlp") / "saved_model"


def _wait_for(condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _worker_of(pid: int) -> int | None:
    """The pid of the TF worker child of ``pid``, if it runs."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if b"migrate.tf.export_worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        except OSError:
            continue
    return None


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    """One conversion of a .keras file with a private TMPDIR: (OUT, TMPDIR) for the tests below."""
    root = tmp_path_factory.mktemp("keras")
    proc = tf2torch("convert", model_dir("cnn") / "model.keras", "-o", root / "out", "-q", tmpdir=root / "tmp")
    assert proc.returncode == 0, proc.stderr
    return root / "out", root / "tmp"


def test_keras_conversion_leaves_nothing_in_tmpdir(keras_run):
    """TensorFlow's autograph files and Keras' export land in a directory the worker client removes."""
    out, tmpdir = keras_run
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.pt2"]
    assert leftovers(tmpdir, out.parent) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_removes_partial_output_and_temporary_directories(tmp_path):
    out = tmp_path / "out"
    proc = spawn("convert", MLP, "-o", out, "-q", tmpdir=tmp_path / "tmp")
    _wait_for(lambda: _worker_of(proc.pid) is not None or proc.poll() is not None, what="the worker")
    worker = _worker_of(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    one_line((proc.returncode, stderr), 128 + signal.SIGTERM, "tf2torch convert: terminated")
    assert worker is None or _gone(worker)
    assert not out.exists()
    assert leftovers(tmp_path, tmp_path / "tmp") == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_worker_dies_with_a_killed_run_and_the_next_run_removes_its_partial(tmp_path):
    out = tmp_path / "out"
    proc = spawn("convert", MLP, "-o", out, "-q", tmpdir=tmp_path / "tmp")
    _wait_for(lambda: _worker_of(proc.pid) is not None, what="the worker")
    worker = _worker_of(proc.pid)
    proc.kill()
    proc.wait()
    _wait_for(lambda: _gone(worker), timeout=10, what="the orphaned worker to die")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]  # the killed run's
    proc = tf2torch("convert", MLP, "-o", out, "-q", tmpdir=tmp_path / "tmp")
    assert proc.returncode == 0, proc.stderr
    assert leftovers(tmp_path) == []


def test_a_second_conversion_into_the_same_out_fails_while_the_first_runs(tmp_path):
    out = tmp_path / "out"
    first = spawn("convert", MLP, "-o", out, "-q", tmpdir=tmp_path / "tmp")
    _wait_for(lambda: any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()) or first.poll() is not None,
              what="the first run's staging directory")
    second = tf2torch("convert", MLP, "-o", out, "--force", "-q", tmpdir=tmp_path / "tmp")
    one_line(second, 2, f"another tf2torch run is writing {out} right now")
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.pt2"]
    assert leftovers(tmp_path, tmp_path / "tmp") == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_are_refused_instead_of_read(keras_run, tmp_path):
    out, _ = keras_run
    os.mkfifo(tmp_path / "model.keras")
    os.mkfifo(tmp_path / "inputs.npz")
    proc = subprocess.run([sys.executable, "-m", "migrate.cli", "convert", str(tmp_path / "model.keras"),
                           "-o", str(tmp_path / "o")], check=False, capture_output=True, text=True, timeout=120,
                          env=env_with_tmpdir(tmp_path / "tmp"))
    one_line(proc, 2, f"{tmp_path / 'model.keras'}: is a FIFO (named pipe), not a model file")
    proc = subprocess.run([sys.executable, "-m", "migrate.cli", "parity", str(model_dir("cnn") / "model.keras"),
                           str(out), "--inputs", str(tmp_path / "inputs.npz")], check=False, capture_output=True,
                          text=True, timeout=120, env=env_with_tmpdir(tmp_path / "tmp"))
    one_line(proc, 2, f"{tmp_path / 'inputs.npz'}: is a FIFO (named pipe), not an .npz file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs.npz", "model.keras", "tmp"]


def test_signature_without_inputs_is_one_clear_line(tmp_path):
    script = ("import sys, tensorflow as tf\n"
              "class M(tf.Module):\n"
              "    def __init__(self):\n"
              "        self.v = tf.Variable([1.0, 2.0])\n"
              "    @tf.function(input_signature=[])\n"
              "    def f(self):\n"
              "        return {'out': self.v * 2.0}\n"
              "m = M()\n"
              "tf.saved_model.save(m, sys.argv[1], signatures={'serving_default': m.f})\n")
    build = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sm")], check=False, capture_output=True,
                           text=True, env=dict(env_with_tmpdir(tmp_path / "tmp"), TF_CPP_MIN_LOG_LEVEL="3"))
    assert build.returncode == 0, build.stderr[-2000:]
    proc = tf2torch("convert", tmp_path / "sm", "-o", tmp_path / "out", tmpdir=tmp_path / "tmp")
    one_line((proc.returncode, proc.stderr.splitlines()[-1]), 2,
             "signature 'serving_default' takes no inputs, so its outputs are constants")
    assert "internal error" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["source", "out"])
def test_a_path_that_is_not_utf8_is_named_as_such(tmp_path, which):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/m\xff"))
    source, out, needle = {
        "source": (odd, tmp_path / "out", "which TensorFlow cannot open; rename it"),
        "out": (MLP, odd, "which torch cannot write to; choose another name for OUT"),
    }[which]
    if which == "source":
        shutil.copytree(MLP, odd)
    before = fingerprint(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "migrate.cli", "convert", os.fsencode(source), "-o",
                           os.fsencode(out)], check=False, capture_output=True, text=True,
                          env=env_with_tmpdir(tmp_path / "t"))
    one_line(proc, 2, f"{tmp_path}/m\\xff: the path has bytes that are not UTF-8", needle)
    assert "corrupt" not in proc.stderr
    assert fingerprint(tmp_path) == dict(before, t="dir")


@pytest.mark.parametrize("case", ["converted-is-a-file", "source-missing", "inputs-missing"])
def test_bad_parity_paths_are_one_line_not_internal_errors(keras_run, tmp_path, case):
    out, _ = keras_run
    (tmp_path / "file").write_text("x\n")
    np.savez(tmp_path / "ok.npz", image=np.zeros((1, 32, 32, 3), np.float32))
    args, needle = {
        "converted-is-a-file": ([model_dir("cnn") / "model.keras", tmp_path / "file"], "not a directory"),
        "source-missing": ([tmp_path / "nope.keras", out, "--no-onnx"], "no such file or directory"),
        "inputs-missing": ([model_dir("cnn") / "model.keras", out, "--inputs", tmp_path / "no.npz"],
                           "no.npz"),
    }[case]
    proc = tf2torch("parity", *args, tmpdir=tmp_path / "tmp")
    line = one_line(proc, 2, "tf2torch parity: error: ", needle)
    assert "internal error" not in line
