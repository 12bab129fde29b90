"""``tf2torch convert --compile``: model.aoti.pt2 loads in a bare torch process and matches model.pt2.

AOTInductor compiles C++ for each model (a minute or more on 2 cores), so the compiled conversions are
made once per module and shared; those tests are slow-marked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures.models import model_dir
from migrate.cli import build_parser, main
from tests.conftest import random_tf_inputs, to_torch_layout

ROOT = Path(__file__).resolve().parents[1]

#: Runs in a fresh interpreter with nothing but torch and numpy: loads both artifacts, runs every batch.
_CHILD = """
import sys, time
import numpy as np, torch
out_dir, names, paths = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
started = time.perf_counter()
compiled = torch._inductor.aoti_load_package(out_dir + "/model.aoti.pt2")
load_s = time.perf_counter() - started
eager = torch.export.load(out_dir + "/model.pt2").module()
for path in paths:
    with np.load(path) as data:
        args = [torch.from_numpy(data[n]) for n in names]
    with torch.no_grad():
        want, got = eager(*args), compiled(*args)
    want = want if isinstance(want, (tuple, list)) else (want,)
    got = got if isinstance(got, (tuple, list)) else (got,)
    assert len(want) == len(got), (len(want), len(got))
    for w, g in zip(want, got):
        assert w.shape == g.shape, (path, w.shape, g.shape)
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
leaked = sorted(m for m in ("tensorflow", "onnx2torch", "migrate", "keras", "checks") if m in sys.modules)
assert not leaked, leaked
print(f"load {load_s:.3f}s")
"""


def test_compile_flag_is_documented_in_the_cli():
    args = build_parser(["convert"]).parse_args(["convert", "src", "-o", "out", "--compile"])
    assert args.compile is True
    assert (ROOT / "docs" / "convert.md").read_text().count("--compile") >= 2


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """``compiled(name)`` -> (source, OUT) converted with --compile, once per module."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in done:
            source = model_dir(name) / "saved_model"
            out = tmp_path_factory.mktemp(f"aoti-{name}") / "out"
            assert main(["convert", str(source), "-o", str(out), "--compile", "-q"]) == 0
            done[name] = (source, out)
        return done[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "mlp", "rnn_embedding_lstm"])
def test_aoti_package_loads_without_compiling_and_matches_model_pt2(compiled, tmp_path, name):
    import json

    _, out = compiled(name)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.aoti.pt2", "model.onnx", "model.pt2"]
    specs = json.loads((out / "manifest.json").read_text())["inputs"]
    paths = []
    for batch in (2, 5):  # two batch sizes: the batch dim stays dynamic in the package
        feeds = random_tf_inputs(specs, batch, seed=batch)
        path = tmp_path / f"in{batch}.npz"
        np.savez(path, **{s["name"]: to_torch_layout(feeds[s["tf_name"]], s) for s in specs})
        paths.append(str(path))
    # No C++ compiler on PATH and an empty inductor cache: loading or running would fail if it compiled.
    env = dict(os.environ, PATH=str(Path(sys.executable).parent), CXX="/nonexistent/c++", CC="/nonexistent/cc",
               TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor-cache"))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), ",".join(s["name"] for s in specs), *paths],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("load ")
