"""Python API: ``port`` a Keras model into readable PyTorch source plus weights; ``load_port`` it back.

Pipeline: the Keras worker (child process) describes the layer graph and writes the weights and reference
outputs; the emitters render ``model.py``; the module is imported, loaded with the transformed weights and
checked against Keras before OUT is published (atomically, like ``convert``).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.core.artifacts import MANIFEST, read_manifest, staged_output, write_json
from migrate.core.errors import ConversionError, InputError, first_line
from migrate.core.progress import Progress
from migrate.core.requirements import installed_version, require
from migrate.tf import custom_objects as custom
from migrate.tf.source_kind import port_source_kind

MODEL_PY = "model.py"
WEIGHTS = "weights.safetensors"
PORT = ("numpy", "torch", "safetensors")
#: TF layout -> torch layout names per rank, as in convert's manifest.
LAYOUTS = {4: ("NHWC", "NCHW"), 5: ("NDHWC", "NCDHW")}


@dataclass
class PortResult:
    """What :func:`port` produced: the loaded module, the manifest and the artifact paths."""

    module: Any
    manifest: dict[str, Any]
    out: Path
    paths: dict[str, Path] = field(default_factory=dict)


def port(source: str | Path, out: str | Path, *, keep_layout: bool = False, class_name: str | None = None,
         force: bool = False, quiet: bool = True, debug: bool = False,
         custom_objects: custom.CustomObjects = None) -> PortResult:
    """Port the Keras model in SOURCE (.keras, .h5, Keras-2 SavedModel) to OUT: model.py, weights, manifest.

    Keras runs in a child process. OUT appears only if the rendered module reproduces Keras' outputs.
    ``custom_objects`` names where the file's custom classes are defined, as for ``convert``; a custom
    layer class also needs an emitter (docs/port.md).
    """
    require("port", PORT)
    from migrate.tf.client import run_worker

    source, out = Path(source), Path(out)
    custom_specs = custom.specs(custom_objects)
    if class_name is not None and not class_name.isidentifier():
        raise InputError(f"--class-name {class_name!r} is not a Python identifier")
    port_source_kind(source)
    from migrate.porting.scan import unsupported_layers

    _raise_unsupported(unsupported_layers(source), [])
    progress = Progress(total=3, quiet=quiet)
    started = time.perf_counter()
    with staged_output(out, force, source=source) as stage, tempfile.TemporaryDirectory(prefix="tf2torch-") as scratch:
        files = {k: str(Path(scratch, f"{k}.{ext}")) for k, ext in
                 (("graph", "json"), ("weights", "npz"), ("reference", "npz"))}
        with progress.stage("keras", "reading the Keras layer graph and weights (child process)"):
            from migrate.porting.emitters import EMITTERS

            emitted = sorted(key for key in EMITTERS if ">" in key)  # library classes: "keras_hub>Name"
            run_worker("describe", {"source": str(source), "custom_objects": custom_specs, "emitters": emitted, **files},
                       debug=debug, module="migrate.tf.keras_worker")
        graph = json.loads(Path(files["graph"]).read_text())
        with progress.stage("render", "writing model.py (layer emitters)"):
            from migrate.porting.render import Renderer

            renderer = Renderer(graph, class_name=class_name, keep_layout=keep_layout)
            _raise_unsupported(renderer.unsupported, renderer.problems)
            (stage / MODEL_PY).write_text(renderer.source())
        with progress.stage("verify", "loading the weights and checking the module against Keras"):
            module = _import_class(stage / MODEL_PY, renderer.top.name)()
            weights = _load_keras_weights(module, renderer, Path(files["weights"]))
            inputs, outputs = _io_manifest(graph, renderer, keep_layout)
            errors = _verify(module, Path(files["reference"]), inputs, outputs)
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(stage / WEIGHTS))
        import torch

        manifest = {
            "format": 1,
            "kind": "port",
            "source": {"path": str(source), "kind": graph["source_kind"], "signature": None,
                       "custom_objects": custom_specs},
            "class_name": renderer.top.name,
            "inputs": inputs,
            "outputs": outputs,
            "weights": weights,
            "train_semantics": renderer.train_semantics,
            "added_loss": renderer.top.added_loss,  # forward sets model.added_loss (add_loss in a custom layer)
            "verified_max_abs_err": errors,
            "versions": {"tf2torch": installed_version("tf2torch"), **graph["versions"], "torch": torch.__version__},
            "timings_s": dict(progress.timings),
        }
        write_json(stage / MANIFEST, manifest)
        from migrate.porting.train_script import saved_compiled, write_train_script

        no_train = write_train_script(stage, source, manifest, debug=debug, custom_objects=custom_specs)  # OUT/train.py when saved compiled
    progress.say(f"ported {source} -> {out} in {time.perf_counter() - started:.1f}s: class {renderer.top.name}, "
                 f"{len(weights)} Keras weights; max abs error vs Keras {max(errors.values(), default=0.0):.2g}")
    for note in dict.fromkeys(renderer.notes):
        _warn(note, progress)
    if no_train and saved_compiled(source):  # the user compiled the model and may expect train.py
        _warn(f"no train.py written: {no_train}", progress)
    paths = {"out": out, "model": out / MODEL_PY, "weights": out / WEIGHTS, "manifest": out / MANIFEST}
    return PortResult(module=load_port(out), manifest=read_manifest(out), out=out, paths=paths)


def _warn(line: str, progress: Progress) -> None:
    """On stderr (CLI), or as a Python warning when quiet (API), like convert's warnings."""
    if progress.quiet:
        warnings.warn(line, stacklevel=3)
    else:
        progress.say(f"warning: {line}")


def _raise_unsupported(unsupported: dict[str, list[str]], problems: list[str]) -> None:
    """One line naming each layer class without an emitter (count, first names), or the first layer problem."""
    if unsupported:
        parts = [f"{cls} ({len(names)} layer{'s' if len(names) > 1 else ''}, first: {', '.join(names[:3])})"
                 for cls, names in sorted(unsupported.items())]
        raise ConversionError(f"cannot port layer class(es) without an emitter: {'; '.join(parts)}; register an "
                              "emitter (docs/port.md) or use 'tf2torch convert' for an inference program")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConversionError(f"cannot port layer {problems[0]}{more}; use 'tf2torch convert' for an "
                              "inference program")


def _import_class(path: Path, name: str) -> Any:
    """Import ``path`` as a fresh module (never via sys.path) and return its class ``name``."""
    spec = importlib.util.spec_from_file_location(f"tf2torch_port_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _load_keras_weights(module: Any, renderer: Any, npz: Path) -> list[dict[str, Any]]:
    """Transform every Keras weight into the module's state_dict; return the manifest's weight table."""
    import numpy as np
    import torch

    from migrate.porting import transforms

    state = module.state_dict()
    table = []
    with np.load(npz) as arrays:
        for m in renderer.weights:
            value = transforms.apply(m.steps, arrays[m.key])
            if m.torch not in state or tuple(state[m.torch].shape) != value.shape:
                raise ConversionError(f"internal: Keras weight {m.keras} {value.shape} does not fit torch "
                                      f"{m.torch} {tuple(state[m.torch].shape) if m.torch in state else '(missing)'}; "
                                      "this is a tf2torch bug, please report it")
            state[m.torch] = torch.from_numpy(value).to(state[m.torch].dtype)
            table.append({"keras": m.keras, "torch": m.torch, "transform": transforms.describe(m.steps),
                          "trainable": m.trainable})
    module.load_state_dict(state, strict=True)
    return table


def _io_manifest(graph: dict[str, Any], renderer: Any, keep_layout: bool) -> tuple[list[dict], list[dict]]:
    """Inputs/outputs with names, dtypes, torch and Keras shapes and layouts (convert's manifest keys)."""
    def spec(io: dict[str, Any], name: str, channels_first: bool) -> dict[str, Any]:
        shape = io["shape"]
        tf_layout, layout = LAYOUTS.get(len(shape), (None, None)) if channels_first else (None, None)
        torch_shape = [shape[0], shape[-1], *shape[1:-1]] if layout and not keep_layout else shape
        extra = {"token_ids": io["token_ids"]} if "token_ids" in io else {}  # float token ids below this
        return {"name": name, "tf_name": io["name"], "dtype": io["dtype"], "shape": torch_shape, "tf_shape": shape,
                "layout": tf_layout if keep_layout else layout, "tf_layout": tf_layout, **extra}

    def image(io: dict[str, Any]) -> bool:
        return len(io["shape"]) in LAYOUTS and io["dtype"].startswith("float")

    ins = [spec(io, name, image(io)) for io, name in zip(graph["io_inputs"], renderer.top.forward_args)]
    outs = [spec(io, io["name"], image(io)) for io in graph["io_outputs"]]
    for out, activation in zip(outs, renderer.output_activations()):
        if activation:
            out["activation"] = activation  # train.py takes a probability cross-entropy from the logits
    if renderer.output_mask:
        outs[0]["masked"] = True  # forward sets model.output_mask; train.py averages the loss over its steps
    return ins, outs


def to_torch_layout(array: Any, spec: dict[str, Any]) -> Any:
    """A Keras-layout array in the layout the module takes/returns (per a manifest entry)."""
    import numpy as np

    if spec["layout"] and spec["layout"] != spec["tf_layout"]:
        return np.ascontiguousarray(np.moveaxis(array, -1, 1))
    return array


def _verify(module: Any, reference: Path, inputs: list[dict], outputs: list[dict]) -> dict[str, float]:
    """Run every reference case; raise ConversionError on the first output that differs from Keras."""
    import numpy as np
    import torch

    from migrate.core.compare import compare, scale_of, tolerance

    module.eval()
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # RandomDraw (keras.random in a custom layer) draws its mean, as the Keras reference does
    worst: dict[str, float] = {}
    with np.load(reference) as ref, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = sorted({k.split("/")[0] for k in ref.files})
        for case in cases:
            args = [torch.from_numpy(to_torch_layout(ref[f"{case}/in/{s['tf_name']}"], s)) for s in inputs]
            got = module(*args)
            got = got if isinstance(got, tuple) else (got,)
            for spec, tensor in zip(outputs, got):
                want = to_torch_layout(ref[f"{case}/out/{spec['tf_name']}"], spec)
                have = tensor.numpy()
                if have.shape != want.shape:
                    raise ConversionError(f"the ported module's output {spec['name']} has shape {have.shape}, Keras "
                                          f"{want.shape}; this is a tf2torch bug, please report it")
                scale = max(1.0, scale_of(want))
                stats = compare(have, want, tolerance((1e-4, scale), rtol=1e-3), strict_dtype=False)
                if not stats.passed:
                    raise ConversionError(f"the ported module's output {spec['name']} differs from Keras by up to "
                                          f"{stats.max_abs_err:.3g} (Keras values up to {scale:.3g}); this is a "
                                          "tf2torch bug, please report it")
                worst[spec["name"]] = max(worst.get(spec["name"], 0.0), stats.max_abs_err)
            if f"{case}/loss/added" in ref.files and hasattr(module, "added_loss"):
                _verify_added_loss(module, ref[f"{case}/loss/added"], worst)
    return worst


def _verify_added_loss(module: Any, want: Any, worst: dict[str, float]) -> None:
    """``model.added_loss`` (plus ``activity_loss``: Keras keeps both among a layer's own losses) against the
    sum of Keras' add_loss terms: a loss term is checked like an output (CTC endpoints)."""
    from migrate.core.compare import compare, scale_of, tolerance

    have = module.added_loss + getattr(module, "activity_loss", 0.0)
    scale = max(1.0, scale_of(want))
    stats = compare(have.detach().numpy().astype("float32"), want, tolerance((1e-4, scale), rtol=1e-3),
                    strict_dtype=False)
    if not stats.passed:
        raise ConversionError(f"the ported module's add_loss terms (model.added_loss) differ from Keras' by "
                              f"{stats.max_abs_err:.3g} (Keras {float(want):.6g}); this is a tf2torch bug, please "
                              "report it")
    worst["added_loss"] = max(worst.get("added_loss", 0.0), stats.max_abs_err)


def load_port(out: str | Path) -> Any:
    """The module in ``OUT/model.py`` with ``OUT/weights.safetensors`` loaded (no pickle anywhere)."""
    require("port", PORT)
    from safetensors.torch import load_file

    out = Path(out)
    manifest = read_manifest(out)
    if manifest.get("kind") != "port":
        raise InputError(f"{out}: not written by 'tf2torch port' (manifest kind {manifest.get('kind')!r}); "
                         "use migrate.load for a convert output")
    module = _import_class(out / MODEL_PY, manifest["class_name"])()
    try:
        weights = load_file(str(out / WEIGHTS))  # the header is checked (size, JSON) before any tensor is read
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError) on a damaged file
        raise InputError(f"{out / WEIGHTS}: not a readable safetensors file ({first_line(exc, 160)}); "
                         "re-run 'tf2torch port'") from None
    module.load_state_dict(weights, strict=True)
    return module.eval()
