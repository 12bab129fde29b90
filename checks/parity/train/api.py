"""``compare_train(source, out, ...) -> TrainReport``: one Keras training step against the ported module's.

Keras runs in ``migrate.tf.train_worker`` (child process). The torch side runs the same lines that
``OUT/train.py`` holds (that file when the port wrote one, else the same renderer's output), so the check
proves the generated training code too. Dropout-family layers are the identity on both sides: their
random masks cannot be drawn alike across frameworks.

Tolerances scale with what is compared: outputs, layer outputs and gradients with the largest |value| of
the Keras tensor (atol = 1e-5 * max(scale, 1), rtol = 1e-4 forward; 1e-4 * scale, rtol = 1e-3 for gradients,
which sum over the batch), weights and statistics after the steps with the largest change Keras made
(atol = 1e-3 * max|delta| + 1e-6 * max(1, max|w|)), so a wrong update shows however small the step is.
BatchNorm statistics get 1e-2 * max|delta|: under Adam a bias in front of a BatchNorm has a gradient that
is rounding noise, its update follows that noise (up to lr per step) and the moving mean carries it.
Every atol also gets NOISE x the torch side's own float32 error on that quantity, measured by running the
same steps on a float64 copy of the module: a deep net (training-mode BatchNorm over a few values per
channel) amplifies rounding far beyond the fixed factors, and a semantic error is far above that noise.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from checks.parity.train.report import Check, TrainReport, forward_stats
from migrate.core.errors import InputError

#: (atol factor on the reference's scale, rtol) per stage.
FORWARD, GRADIENT = (1e-5, 1e-4), (1e-4, 1e-3)
STEP_ATOL, STATS_ATOL, WEIGHT_ATOL = 1e-3, 1e-2, 1e-6
#: Every atol also gets NOISE x the torch side's own float32 error on that quantity (the same steps run in
#: float64). Keras' float32 error differs in size (other kernels, other summation order): measured on the
#: keras.applications fixtures, Keras - torch reaches 9x torch's own error (EfficientNetB0, docs/parity.md).
NOISE = 10.0
#: Explanations for the first divergence, by stage.
WHY = {"forward": "its training-mode output differs first (check BatchNorm eps/momentum, weight layout, "
                  "activations)",
       "output": "a model output differs although every compared layer matches",
       "loss": "the loss differs on equal outputs (loss function, from_logits, a softmax before the loss)",
       "gradient": "its gradient differs first on equal outputs and loss (a regulariser, a frozen weight)",
       "weight": "its value after the optimizer steps differs first (optimizer mapping: epsilon, weight decay, "
                 "momentum, clipping)",
       "buffer": "this running statistic differs after the steps (BatchNorm momentum)"}


def compare_train(source: str | Path, out: str | Path, *, optimizer: str | None = None, loss: str | None = None,
                  steps: int = 1, inputs: str | Path | None = None, targets: str | Path | None = None,
                  weights_map: str | Path | None = None, seed: int = 0, batch_size: int = 4,
                  debug: bool = False) -> TrainReport:
    """Compare a Keras training step on SOURCE with the torch module in OUT (a port output).

    ``optimizer``/``loss`` (``adam``, ``sgd:learning_rate=0.1,momentum=0.9``,
    ``sparse_categorical_crossentropy:from_logits=true``) replace or supply the compiled ones.
    With ``weights_map`` (JSON: Keras weight path -> torch key, or ``{"torch": KEY, "transform": ...}``)
    OUT is ``FILE.py:CLASS``, a hand-written module whose weights are loaded from Keras through the map.
    """
    from migrate.tf.client import run_worker
    from migrate.training import losses, optimizers

    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    request: dict[str, Any] = {"source": str(source), "steps": steps, "seed": seed, "batch": batch_size,
                               "optimizer": optimizers.parse_spec(optimizer) if optimizer else None,
                               "loss": losses.parse_spec(loss) if loss else None}
    for key, path in (("inputs", inputs), ("targets", targets)):
        if path is not None:
            if not Path(path).is_file():
                raise InputError(f"--{key} {path}: no such file")
            request[key] = str(path)
    if weights_map is None:
        manifest = _port_manifest(Path(out))
        request["custom_objects"] = manifest["source"].get("custom_objects") or []  # custom layers' modules
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="tf2torch-train-") as tmp:
        request["result_npz"] = str(Path(tmp, "keras.npz"))
        answer = run_worker("train", request, debug=debug, module="migrate.tf.train_worker")
        with np.load(request["result_npz"], allow_pickle=False) as data:
            keras = {k: data[k] for k in data.files}
        if weights_map is not None:
            module, manifest = _mapped_module(str(out), Path(weights_map), answer, keras)
        else:
            import migrate

            module = migrate.load_port(out)
        script = Path(out) / "train.py" if weights_map is None else None
        if script is None or not script.is_file() or optimizer or loss:
            from migrate.porting.train_script import render

            script = Path(tmp, "train.py")
            script.write_text(render(answer["config"], manifest))
        train = _import(script)
        exact = copy.deepcopy(module).double()
        torch_side = _run_torch(module, train, manifest, answer, keras, steps)
        gaps = _noise(torch_side, _run_torch(exact, train, manifest, answer, keras, steps, double=True))
    report = _report(answer, manifest, keras, torch_side, steps, script.parent == Path(out), gaps)
    report.seed, report.atol, report.rtol = (None if inputs is not None else seed), *FORWARD
    return report


def _port_manifest(out: Path) -> dict[str, Any]:
    from migrate.core.artifacts import read_manifest

    manifest = read_manifest(out)
    if manifest.get("kind") != "port":
        raise InputError(f"{out}: --train needs a 'tf2torch port' output (model.py), not a {manifest.get('kind')} "
                         "output; model.pt2 is an inference program")
    return manifest


def _import(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"tf2torch_train_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _specs(answer: dict[str, Any], keras: dict[str, Any], keep: bool) -> tuple[list[dict], list[dict]]:
    def spec(name: str, array: Any) -> dict[str, Any]:
        rank = array.ndim
        tf_layout = {4: "NHWC", 5: "NDHWC"}.get(rank) if array.dtype.kind == "f" else None
        layout = None if tf_layout is None else (tf_layout if keep else "NC" + tf_layout[1:-1])
        shape = list(array.shape)
        torch_shape = [shape[0], shape[-1], *shape[1:-1]] if layout and layout != tf_layout else shape
        return {"name": name, "tf_name": name, "dtype": str(array.dtype), "shape": torch_shape,
                "tf_shape": shape, "layout": layout, "tf_layout": tf_layout}

    return ([spec(n, keras[f"in/{n}"]) for n in answer["inputs"]],
            [spec(n, keras[f"out/{n}"]) for n in answer["outputs"]])


def _mapped_module(target: str, map_path: Path, answer: dict[str, Any], keras: dict[str, Any]) -> tuple[Any, dict]:
    """A hand-written module (``FILE.py:CLASS``) with Keras' initial weights loaded through the name map."""
    import torch

    from migrate.porting import transforms

    file, sep, cls = target.rpartition(":")
    if not sep or not Path(file).is_file():
        raise InputError(f"with --weights-map, CONVERTED is FILE.py:CLASS (a module to compare), got {target!r}")
    try:
        raw = json.loads(map_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--weights-map {map_path}: not a readable JSON file ({exc})") from None
    entries = raw.get("weights", raw) if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise InputError(f"--weights-map {map_path}: expected {{\"keras/path\": \"torch.key\", ...}}")
    module = getattr(_import(Path(file)), cls, None)
    if module is None:
        raise InputError(f"{file} defines no class {cls!r}")
    module = module()
    state = module.state_dict()
    weights = []
    for keras_name, entry in entries.items():
        entry = {"torch": entry} if isinstance(entry, str) else entry
        if f"before/{keras_name}" not in keras:
            raise InputError(f"--weights-map: the Keras model has no weight {keras_name!r}; it has "
                             f"{', '.join(answer['order'][:8])}...")
        if entry["torch"] not in state:
            raise InputError(f"--weights-map: the module has no parameter or buffer {entry['torch']!r}")
        value = transforms.apply(transforms.parse(entry.get("transform")), keras[f"before/{keras_name}"])
        if tuple(state[entry["torch"]].shape) != value.shape:
            raise InputError(f"--weights-map: Keras {keras_name} {value.shape} does not fit {entry['torch']} "
                             f"{tuple(state[entry['torch']].shape)}; give its transform, e.g. permute(1,0)")
        state[entry["torch"]] = torch.from_numpy(value)
        weights.append({"keras": keras_name, "torch": entry["torch"], "transform": entry.get("transform"),
                        "trainable": True})
    missing = [k for k in state if k not in {w["torch"] for w in weights} and not k.endswith("num_batches_tracked")]
    if missing:
        raise InputError(f"--weights-map: no Keras weight maps to {', '.join(missing[:5])}")
    module.load_state_dict(state)
    ins, outs = _specs(answer, keras, keep=bool(raw.get("keep_layout")) if "weights" in raw else False)
    return module, {"class_name": cls, "inputs": ins, "outputs": outs, "weights": weights}


def _layout(array: Any, spec: dict[str, Any]) -> Any:
    import numpy as np

    if spec["layout"] and spec["layout"] != spec["tf_layout"] and array.ndim == len(spec["tf_shape"]):
        return np.ascontiguousarray(np.moveaxis(array, -1, 1))
    return array


def _run_torch(module: Any, train: Any, manifest: dict[str, Any], answer: dict[str, Any], keras: dict[str, Any],
               steps: int, double: bool = False) -> dict[str, Any]:
    """The torch step: forward (hooks on the probed layers), loss, backward, clip, optimizer steps
    (``double``: a float64 module, float inputs and targets cast to float64)."""
    import torch

    def tensor(array: Any, spec: dict[str, Any]) -> Any:
        value = torch.from_numpy(_layout(array, spec))
        return value.double() if double and value.is_floating_point() else value

    for m in module.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
    module.train()
    torch_of = {w["keras"]: w["torch"] for w in manifest["weights"]}
    captured: dict[str, Any] = {}
    hooks = []
    names = dict(module.named_modules())
    for layer in answer["layers"]:
        keys = [torch_of[p].split(".")[:-1] for p in layer["weights"] if p in torch_of]
        path = ".".join(os.path.commonprefix(keys)) if keys else None  # the whole layer (SeparableConv: sep.0, sep.1)
        if path in names:
            def hook(_m: Any, _i: Any, output: Any, name: str = layer["name"]) -> None:
                captured.setdefault(name, (output[0] if isinstance(output, tuple) else output).detach().numpy())
            hooks.append(names[path].register_forward_hook(hook))
    inputs = [tensor(keras[f"in/{s['tf_name']}"], s) for s in manifest["inputs"]]
    targets = [tensor(keras[f"target/{s['tf_name']}"], s) for s in manifest["outputs"]]
    targets = targets[0] if len(targets) == 1 else tuple(targets)
    optimizer = train.make_optimizer(module)
    scheduler = train.make_scheduler(optimizer) if hasattr(train, "make_scheduler") else None
    result: dict[str, Any] = {}
    params = dict(module.named_parameters())
    for step in range(steps):
        optimizer.zero_grad()
        outputs = module(*inputs)
        data = train.compute_loss(outputs, targets)
        reg = train.regularization(module) if hasattr(train, "regularization") else torch.zeros(())
        (data + reg).backward()
        if step == 0:
            for h in hooks:
                h.remove()
            outs = outputs if isinstance(outputs, tuple) else (outputs,)
            result["outputs"] = [o.detach().numpy() for o in outs]
            result["layers"] = dict(captured)
            result["loss_total"], result["loss_reg"] = (data + reg).item(), reg.item()
            result["grads"] = {k: p.grad.detach().numpy().copy() for k, p in params.items() if p.grad is not None}
        if hasattr(train, "clip_gradients"):
            train.clip_gradients(module)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    result["state"] = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    result["parameters"] = set(params)
    return result


def _noise(got: dict[str, Any], exact: dict[str, Any]) -> dict[str, Any]:
    """Max |float32 - float64| of the torch side per compared quantity (keys as in ``got``)."""
    import numpy as np

    def gap(a: Any, b: Any) -> float:
        return float(np.abs(a.astype(np.float64) - b).max(initial=0.0)) if a.shape == b.shape else 0.0

    return {"outputs": [gap(a, b) for a, b in zip(got["outputs"], exact["outputs"])],
            "layers": {k: gap(v, exact["layers"][k]) for k, v in got["layers"].items() if k in exact["layers"]},
            "grads": {k: gap(v, exact["grads"][k]) for k, v in got["grads"].items() if k in exact["grads"]},
            "state": {k: gap(v, exact["state"][k]) for k, v in got["state"].items() if v.dtype.kind == "f"},
            "loss": abs(got["loss_total"] - got["loss_reg"] - exact["loss_total"] + exact["loss_reg"]),
            "regularization": abs(got["loss_reg"] - exact["loss_reg"])}


def _err(actual: Any, expected: Any, atol: float, rtol: float) -> tuple[float, bool, str | None]:
    import numpy as np

    if actual.shape != expected.shape:
        return float("inf"), False, f"shape {tuple(actual.shape)} vs Keras {tuple(expected.shape)}"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    worst = float(diff.max(initial=0.0))
    return worst, bool(np.all(diff <= atol + rtol * np.abs(expected))), None


def _scale(array: Any) -> float:
    import numpy as np

    return float(np.abs(array).max(initial=0.0)) if array.size else 0.0


def _forward_check(kind: str, name: str, actual: Any, expected: Any, spec: dict[str, Any] | None,
                   noise: float) -> Check | None:
    import numpy as np

    atol = FORWARD[0] * max(_scale(expected), 1.0) + NOISE * noise  # float32 rounding is absolute below 1
    if spec is not None:
        expected = _layout(expected, spec)
    elif actual.ndim >= 3 and np.moveaxis(actual, 1, -1).shape == expected.shape:
        # channels-first in torch; where both arrangements fit (C == W), the one that matches
        moved = np.moveaxis(actual, 1, -1)
        if actual.shape != expected.shape or _err(moved, expected, atol, 0)[0] < _err(actual, expected, atol, 0)[0]:
            actual = moved
    elif actual.shape != expected.shape:
        return None  # a layer whose torch module returns another arrangement (e.g. an RNN's state tuple)
    err, ok, message = _err(actual, expected, atol, FORWARD[1])
    return Check(kind, name, err, atol, ok, message=message, rtol=FORWARD[1],
                 stats=forward_stats(actual, expected, atol, FORWARD[1]))


def _report(answer: dict[str, Any], manifest: dict[str, Any], keras: dict[str, Any], got: dict[str, Any],
            steps: int, own_script: bool, gaps: dict[str, Any]) -> TrainReport:
    from migrate.porting import transforms
    from migrate.training.optimizers import map_optimizer

    config = answer["config"]
    opt = map_optimizer(config["optimizer"])
    report = TrainReport(steps=steps, optimizer=opt.summary(),
                         loss={"keras": float(keras["loss_total"]), "torch": got["loss_total"], "passed": True})
    for layer in answer["layers"]:
        if layer["name"] in got["layers"]:
            check = _forward_check("layer", layer["name"], got["layers"][layer["name"]], keras[f"layer/{layer['name']}"],
                                   None, gaps["layers"].get(layer["name"], 0.0))
            if check is not None:
                check.layer = layer["name"]
                report.checks.append(check)
    for spec, tensor, gap in zip(manifest["outputs"], got["outputs"], gaps["outputs"]):
        report.checks.append(_forward_check("output", spec["name"], tensor, keras[f"out/{spec['tf_name']}"], spec,
                                            gap))
    total_k, reg_k = float(keras["loss_total"]), float(keras["loss_reg"])
    for kind, want, have in (("loss", total_k - reg_k, got["loss_total"] - got["loss_reg"]),
                             ("regularization", reg_k, got["loss_reg"])):
        atol = 1e-6 + 1e-4 * abs(want) + NOISE * gaps[kind]
        check = Check(kind, kind, abs(have - want), atol, abs(have - want) <= atol,
                      message=None if abs(have - want) <= atol else f"torch {have:.7g}, Keras {want:.7g}")
        report.checks.append(check)
    report.loss["passed"] = all(c.passed for c in report.checks if c.kind in ("loss", "regularization"))
    floor = GRADIENT[0] * 0.1 * max([_scale(v) for k, v in keras.items() if k.startswith("grad/")], default=0.0)
    for entry in manifest["weights"]:
        keras_name, key = entry["keras"], entry["torch"]
        steps_fn = transforms.parse(entry.get("transform"))
        layer = keras_name.rpartition("/")[0]
        noise = False
        if key in got["parameters"]:
            grad_k, grad_t = keras.get(f"grad/{keras_name}"), got["grads"].get(key)
            if grad_k is None and grad_t is not None:
                report.checks.append(Check("gradient", key, _scale(grad_t), 0.0, not grad_t.any(), keras_name,
                                           layer, message="Keras does not train this weight (frozen); torch does"))
            elif grad_k is not None and grad_t is None:
                report.checks.append(Check("gradient", key, float("inf"), 0.0, False, keras_name, layer,
                                           message="Keras trains this weight; torch has no gradient for it"))
            elif grad_k is not None:
                want = transforms.apply(steps_fn, grad_k)
                noise = _scale(want) <= floor  # zero but for rounding (a bias before BatchNorm)
                atol = max(GRADIENT[0] * _scale(want), floor) + NOISE * gaps["grads"].get(key, 0.0)
                err, ok, message = _err(grad_t, want, atol, GRADIENT[1])
                report.checks.append(Check("gradient", key, err, atol, ok, keras_name, layer, message))
        before = transforms.apply(steps_fn, keras[f"before/{keras_name}"])
        after = transforms.apply(steps_fn, keras[f"after/{keras_name}"])
        delta = _scale(after - before)
        if noise:  # the update follows rounding noise: only its size is held to Keras'
            delta = max(delta, _scale(got["state"][key] - before)) * 2.0 / STEP_ATOL
        kind = "weight" if key in got["parameters"] else "buffer"
        atol = ((STEP_ATOL if kind == "weight" else STATS_ATOL) * delta + WEIGHT_ATOL * max(_scale(after), 1.0)
                + NOISE * gaps["state"].get(key, 0.0))
        err, ok, message = _err(got["state"][key], after, atol, 0.0)
        if noise:
            message = "its gradient is float rounding noise, so only the size of its update is compared"
        report.checks.append(Check(kind, key, err, atol, ok, keras_name, layer, message if not ok or noise else None))
    report.first_divergence = _first(report)
    report.notes.append("dropout-family layers were the identity on both sides (their random masks cannot match "
                        "across frameworks)" + (f": {', '.join(answer['disabled'])}" if answer["disabled"] else ""))
    report.notes.append("torch side: " + ("OUT/train.py" if own_script else "the training code tf2torch port "
                                          "renders for this Keras setup (make_optimizer, compute_loss)"))
    report.notes.extend(opt.notes)
    report.notes.extend(config.get("notes", []))
    return report


def _first(report: TrainReport) -> dict[str, Any] | None:
    """Graph order within a stage; stages in the order an error propagates (forward, loss, gradients, update)."""
    order = [("layer", "forward"), ("output", "output"), ("loss", "loss"), ("gradient", "gradient"),
             ("regularization", "loss"), ("weight", "weight"), ("buffer", "buffer")]
    for kind, stage in order:
        for c in report.checks:
            if c.kind == kind and not c.passed:
                return {"stage": stage, "name": c.name, "torch": c.name if kind in ("gradient", "weight", "buffer")
                        else None, "keras": c.keras, "layer": c.layer, "max_abs_err": c.max_abs_err,
                        "explanation": WHY[stage]}
    return None


__all__ = ["TrainReport", "compare_train"]
