"""``tf2torch port`` on the small models: eval parity with Keras, the generated source, the exit-code contract.

Keras runs only in the Keras worker (child process); references are ``model(x, training=False)`` there.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from migrate.tf.client import run_worker
from tests.cli_helpers import ROOT, tf2torch
from tests.conftest import assert_close

#: fixture -> the Keras file ported
SMALL = {"port_keras2_saved_model": "saved_model", "port_mlp_dropout": "model.keras", "cnn": "model.keras", "cnn_h5": "model.h5", "port_frozen": "model.keras",
         "port_rnn": "model.keras", "port_shared_nested": "model.keras", "port_layers": "model.keras",
         "port_transformer": "model.keras", "port_attention": "model.keras", "port_text_masked": "model.keras",
         "port_einsum_transpose": "model.keras"}
RECURRENT = ("port_rnn", "port_text_masked")


def keras_predict(source: Path, batches: list[dict[str, np.ndarray]], training: bool = False) -> list[dict]:
    """``model(x, training=...)`` in the Keras worker for each batch (keyed by Keras input name)."""
    with tempfile.TemporaryDirectory() as tmp:
        ins = [str(Path(tmp, f"in{i}.npz")) for i in range(len(batches))]
        outs = [str(Path(tmp, f"out{i}.npz")) for i in range(len(batches))]
        for path, feeds in zip(ins, batches):
            np.savez(path, **feeds)
        run_worker("predict", {"source": str(source), "inputs": ins, "outputs": outs, "training": training},
                   module="migrate.tf.keras_worker")
        results = []
        for path in outs:
            with np.load(path) as data:
                results.append({k: data[k] for k in data.files})
        return results


def keras_inputs(manifest: dict, batch: int, seed: int, length: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest["inputs"]:
        shape = [batch if i == 0 else (length if d is None else d) for i, d in enumerate(spec["tf_shape"])]
        if spec["dtype"].startswith("float"):
            feeds[spec["tf_name"]] = rng.standard_normal(shape).astype(spec["dtype"])
        else:
            feeds[spec["tf_name"]] = rng.integers(0, 10, shape).astype(spec["dtype"])
    return feeds


def to_module(array: np.ndarray, spec: dict) -> torch.Tensor:
    if spec["layout"] and spec["layout"] != spec["tf_layout"]:
        array = np.moveaxis(array, -1, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def from_module(tensor: torch.Tensor, spec: dict) -> np.ndarray:
    array = tensor.detach().numpy()
    return np.moveaxis(array, 1, -1) if spec["layout"] and spec["layout"] != spec["tf_layout"] else array


def run_module(module: torch.nn.Module, manifest: dict, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        got = module(*[to_module(feeds[s["tf_name"]], s) for s in manifest["inputs"]])
    got = got if isinstance(got, tuple) else (got,)
    return {s["tf_name"]: from_module(t, s) for s, t in zip(manifest["outputs"], got)}


def assert_port_matches_keras(source: Path, out: Path, name: str, seed: int) -> None:
    """``migrate.load_port(OUT)`` vs Keras ``training=False`` at batch 1 and 3, and two lengths where an input's
    time dim is None."""
    import migrate

    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out)
    dynamic = any(d is None for s in manifest["inputs"] for d in s["tf_shape"][1:])
    cases = [(batch, length) for batch in (1, 3) for length in ((7, 4) if dynamic else (7,))]
    batches = [keras_inputs(manifest, batch, seed=seed + batch, length=length) for batch, length in cases]
    for (batch, length), feeds, want in zip(cases, batches, keras_predict(source, batches)):
        got = run_module(module, manifest, feeds)
        for key, expected in want.items():
            assert_close(got[key], expected, what=f"{name} {key} batch {batch} length {length}")


@pytest.fixture(scope="module")
def ported(tmp_path_factory, fixture_model):
    """fixture name -> (source, OUT) ported once per module (the CLI, as a user runs it)."""
    done = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in done:
            source = fixture_model(name.removesuffix("_h5")) / SMALL[name]
            out = tmp_path_factory.mktemp("port") / name
            proc = tf2torch("port", str(source), "-o", str(out), "-q")
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == "" and proc.stderr == ""
            done[name] = (source, out)
        return done[name]

    return get


@pytest.mark.parametrize("name", list(SMALL))
def test_eval_matches_keras_at_batch_1_and_3(ported, name):
    """Batch 1 and 3; two sequence lengths where an input has a None time dimension."""
    if name == "port_keras2_saved_model" and importlib.util.find_spec("tf_keras") is None:
        pytest.skip("Keras 2 SavedModels need tf_keras (pip install tf-keras)")
    source, out = ported(name)
    assert_port_matches_keras(source, out, name, seed=10)


@pytest.mark.parametrize("name", ["port_mlp_dropout", "cnn", "port_rnn", "port_shared_nested", "port_layers",
                                  "port_text_masked", "port_einsum_transpose"])
def test_generated_source_is_clean_and_loads_without_tf2torch(ported, name, tmp_path):
    """ruff passes; model.py + weights.safetensors load in a process that imports only torch (+ safetensors)."""
    _, out = ported(name)
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", str(out / "model.py")],
                          check=False, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = (out / "model.py").read_text()
    imports = [ln for ln in text.splitlines() if ln.startswith(("import ", "from "))]
    assert all(ln.split()[1].split(".")[0] == "torch" for ln in imports), imports
    assert not any(f"x{i} " in text for i in range(1, 10))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "port" and manifest["format"] == 1
    feeds = keras_inputs(manifest, 2, seed=3)
    np.savez(tmp_path / "in.npz", **{s["tf_name"]: to_module(feeds[s["tf_name"]], s).numpy() for s in manifest["inputs"]})
    code = (
        "import importlib.util, sys, numpy as np\n"
        "from safetensors.torch import load_file\n"
        f"spec = importlib.util.spec_from_file_location('model', {str(out / 'model.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"net = getattr(mod, {manifest['class_name']!r})()\n"
        f"net.load_state_dict(load_file({str(out / 'weights.safetensors')!r}), strict=True)\n"
        f"data = np.load({str(tmp_path / 'in.npz')!r})\n"
        "import torch\n"
        f"y = net.eval()(*[torch.from_numpy(data[k]) for k in {[s['tf_name'] for s in manifest['inputs']]!r}])\n"
        "y = y[0] if isinstance(y, tuple) else y\n"
        "leaked = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'migrate', 'checks')]\n"
        "assert not leaked, leaked\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, y.detach().numpy())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (want,) = keras_predict(ported(name)[0], [feeds])
    first = manifest["outputs"][0]
    assert_close(from_module(torch.from_numpy(np.load(tmp_path / "out.npy")), first), want[first["tf_name"]])


@pytest.mark.parametrize("name", ["port_mlp_dropout", "cnn", "port_rnn", "port_shared_nested", "port_transformer",
                                  "port_text_masked"])
def test_torch_export_dynamic_batch_and_compile_fullgraph(ported, name):
    import migrate

    _, out = ported(name)
    manifest = json.loads((out / "manifest.json").read_text())
    module = migrate.load_port(out)
    args = tuple(to_module(keras_inputs(manifest, 3, seed=5)[s["tf_name"]], s) for s in manifest["inputs"])
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, args, dynamic_shapes=tuple({0: batch} for _ in args))
    small = tuple(a[:1] for a in args)
    # torch.compile skips nn.LSTM/GRU/RNN unless asked (docs/port.md, limits)
    with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=name in RECURRENT):
        torch.testing.assert_close(program.module()(*small), module(*small))
        compiled = torch.compile(module, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(*args), module(*args))


def test_manifest_maps_every_keras_weight(ported):
    _, out = ported("cnn")
    manifest = json.loads((out / "manifest.json").read_text())
    by_keras = {w["keras"]: w for w in manifest["weights"]}
    assert by_keras["conv2d/kernel"] == {"keras": "conv2d/kernel", "torch": "conv2d.weight",
                                         "transform": "permute(3,2,0,1)", "trainable": True}
    assert by_keras["batch_normalization/moving_mean"]["torch"] == "batch_normalization.running_mean"
    assert by_keras["depthwise_conv2d/kernel"]["transform"] == "permute(2,3,0,1); reshape(8,1,3,3)"
    assert manifest["train_semantics"][0] == {"layer": "batch_normalization", "momentum": 0.01, "eps": 0.001,
                                              "inference_mode_in_training": False}
    from safetensors.torch import load_file

    import migrate

    assert set(load_file(str(out / "weights.safetensors"))) == set(migrate.load_port(out).state_dict())
    (image,) = manifest["inputs"]
    assert image["shape"] == [None, 3, 32, 32] and image["tf_shape"] == [None, 32, 32, 3]
    assert (image["layout"], image["tf_layout"]) == ("NCHW", "NHWC")


def test_dropout_only_in_train_mode(ported):
    import migrate

    _, out = ported("port_mlp_dropout")
    module = migrate.load_port(out)
    x = torch.randn(64, 16)
    with torch.no_grad():
        assert torch.equal(module(x), module(x))
        module.train()
        assert not torch.equal(module(x), module(x))


def test_keep_layout_and_class_name(fixture_model, tmp_path):
    import migrate

    result = migrate.port(fixture_model("cnn") / "model.keras", tmp_path / "o", keep_layout=True, class_name="SmallCNN")
    assert "class SmallCNN(nn.Module):" in (tmp_path / "o" / "model.py").read_text()
    (image,) = result.manifest["inputs"]
    assert image["shape"] == [None, 32, 32, 3] and image["layout"] == "NHWC"
    assert result.module(torch.zeros(2, 32, 32, 3)).shape == (2, 10)


def _bad_sources(tmp: Path, saved_model: Path) -> dict[str, tuple[Path, list[str]]]:
    (tmp / "empty").mkdir()
    (tmp / "text" / "model.keras").parent.mkdir()
    (tmp / "text" / "model.keras").write_text("not a model\n")
    (tmp / "fake.h5").write_text("not hdf5\n")
    return {
        "missing": (tmp / "does-not-exist", ["no such file or directory"]),
        "empty-dir": (tmp / "empty", ["is empty", "not a SavedModel"]),
        "text-keras": (tmp / "text" / "model.keras", ["not a Keras model"]),
        "text-h5": (tmp / "fake.h5", ["not an HDF5 file"]),
        "exported-saved-model": (saved_model, ["no Keras layer graph", "use 'tf2torch convert'"]),
    }


@pytest.mark.parametrize("case", ["missing", "empty-dir", "text-keras", "text-h5", "exported-saved-model"])
def test_bad_input_exit_2_one_line_nothing_written(fixture_model, tmp_path, case):
    source, needles = _bad_sources(tmp_path, fixture_model("mlp") / "saved_model")[case]
    out = tmp_path / "sub" / "out"
    proc = tf2torch("port", str(source), "-o", str(out), "-q")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tf2torch port: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists() and not out.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_existing_out_refused_without_force(ported, tmp_path):
    source, _ = ported("port_mlp_dropout")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    proc = tf2torch("port", str(source), "-o", str(out))
    assert proc.returncode == 2 and "already exists; pass --force" in proc.stderr
    assert (out / "keep.txt").read_text() == "user data"


def test_lambda_layers_exit_1_one_line(fixture_model, tmp_path):
    out = tmp_path / "out"
    proc = tf2torch("port", str(fixture_model("port_unsupported") / "model.keras"), "-o", str(out))
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("tf2torch port: error: cannot port layer class(es) without an emitter: Lambda "
                                   "(2 layers, first: double, shift); register an emitter (docs/port.md) or use "
                                   "'tf2torch convert' for an inference program")
    assert not out.exists()


def test_user_registered_emitter_ports_a_layer_class(fixture_model, tmp_path):
    """The extension point: an emitter registered from user code, without editing tf2torch."""
    import migrate
    from migrate.porting.emitters import EMITTERS, emitter

    source = fixture_model("port_extension") / "model.keras"
    proc = tf2torch("port", str(source), "-o", str(tmp_path / "refused"))
    assert proc.returncode == 1 and "ActivityRegularization (1 layer, first: sparsity)" in proc.stderr

    @emitter("ActivityRegularization")
    def activity_regularization(layer, call, ctx):
        return call.input.var  # only adds a loss term in Keras; the identity in forward

    try:
        result = migrate.port(source, tmp_path / "o")
    finally:
        del EMITTERS["ActivityRegularization"]
    assert "logits = self.logits(dense)" in (tmp_path / "o" / "model.py").read_text()  # identity: no alias line
    assert result.module(torch.zeros(1, 8)).shape == (1, 2)


def test_custom_objects_load_a_custom_class_which_then_needs_an_emitter(fixture_model, tmp_path):
    """--custom-objects as in convert: the class loads; without an emitter its call is opened up and ported,
    with one registered from Python that emitter wins; without --custom-objects the load names the class."""
    import migrate
    from migrate.core.errors import InputError
    from migrate.porting.emitters import EMITTERS, emitter

    source = fixture_model("keras_custom_layer") / "model.keras"
    module = str(ROOT / "fixtures" / "models" / "keras_custom_layer.py")
    proc = tf2torch("port", str(source), "-o", str(tmp_path / "opened"), "--custom-objects", module, "-q")
    assert proc.returncode == 0, proc.stderr  # without an emitter, SensorNorm.call is opened up (traced)
    assert "class SensorNorm(nn.Module):" in (tmp_path / "opened" / "model.py").read_text()

    @emitter("SensorNorm")
    def sensor_norm(layer, call, ctx):
        gain = ctx.tensor(layer, "gain", f"torch.ones({layer.weight('gain').shape[0]})", keras_name="gain",
                          parameter=True)
        return f"torch.tanh(({call.input.var} - {layer.config['shift']!r}) * {gain})"

    try:
        with pytest.raises(InputError, match=r"custom class 'SensorNorm'.*--custom-objects"):
            migrate.port(source, tmp_path / "no_objects")
        result = migrate.port(source, tmp_path / "o", custom_objects=module)
    finally:
        del EMITTERS["SensorNorm"]
    assert not (tmp_path / "no_objects").exists()
    assert result.manifest == json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert "files" in result.manifest and result.manifest["verified_max_abs_err"]["scores"] < 1e-5


def test_a_compiled_model_without_a_loss_mapping_says_why_there_is_no_train_py(tmp_path):
    script = (
        "import keras\n"
        "x = keras.Input((4,), name='features')\n"
        "model = keras.Model(x, keras.layers.Dense(2, activation='softplus', name='rate')(x))\n"
        "model.compile(optimizer='sgd', loss='poisson')\n"
        f"model.save({str(tmp_path / 'model.keras')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    proc = tf2torch("port", str(tmp_path / "model.keras"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: no train.py written: ")]
    assert len(warning) == 1 and "poisson" in warning[0], proc.stderr
    assert not (tmp_path / "out" / "train.py").exists() and (tmp_path / "out" / "model.py").exists()
