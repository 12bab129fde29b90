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
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from checks.parity.train.report import Check, TrainReport, check
from migrate.core.compare import max_abs_error, scale_of, tolerance
from migrate.core.errors import InputError

#: (atol factor on the reference's scale, rtol) per stage.
FORWARD, GRADIENT = (1e-5, 1e-4), (1e-4, 1e-3)
STEP_ATOL, STATS_ATOL, WEIGHT_ATOL = 1e-3, 1e-2, 1e-6
#: Keras layers whose torch counterpart may return every step where Keras returns the last one.
RECURRENT = ("LSTM", "GRU", "SimpleRNN")
#: Explanations for the first divergence, by stage.
WHY = {"forward": "its training-mode output differs first (check its parameters, weight layout, activation)",
       "output": "a model output differs although every compared layer matches",
       "loss": "the loss differs on equal outputs (loss function, from_logits, a softmax before the loss)",
       "gradient": "its gradient differs first on equal outputs and loss (a regulariser, a frozen weight)",
       "weight": "its value after the optimizer steps differs first (optimizer mapping: epsilon, weight decay, "
                 "momentum, clipping)",
       "buffer": "this running statistic differs after the steps"}


def compare_train(source: str | Path, out: str | Path, *, optimizer: str | None = None, loss: str | None = None,
                  steps: int = 1, inputs: str | Path | None = None, targets: str | Path | None = None,
                  weights_map: str | Path | None = None, seed: int = 0, batch_size: int = 4,
                  debug: bool = False, init: str | None = None, trust_model_py: bool = False) -> TrainReport:
    """Compare a Keras training step on SOURCE with the torch module in OUT (a port output).

    ``optimizer``/``loss`` (``adam``, ``sgd:learning_rate=0.1,momentum=0.9``,
    ``sparse_categorical_crossentropy:from_logits=true``) replace or supply the compiled ones.
    OUT may be ``FILE.py:CLASS``, a hand-written module (``init``: ``CLASS(k=v)``) whose weights are loaded
    from Keras through ``weights_map`` (``migrate.transferring.mapfile``), or the map ``tf2torch transfer`` finds.
    A port output's model.py and train.py are code, imported only with ``trust_model_py=True`` or
    ``out="port:DIR"``; naming a ``FILE.py:CLASS`` is asking for it.
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
    if str(out).startswith("port:"):
        out, trust_model_py = str(out)[len("port:"):], True
    hand_written = weights_map is not None or str(out).rpartition(":")[0].endswith(".py")
    if not hand_written:
        manifest = _port_manifest(Path(out), trust_model_py)
        request["custom_objects"] = manifest["source"].get("custom_objects") or []  # custom layers' modules
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="tf2torch-train-") as tmp:
        request["result_npz"] = str(Path(tmp, "keras.npz"))
        answer = run_worker("train", request, debug=debug, module="migrate.tf.train_worker")
        with np.load(request["result_npz"], allow_pickle=False) as data:
            keras = {k: data[k] for k in data.files}
        if hand_written:
            module, manifest = _mapped_module(source, str(out), None if weights_map is None else Path(weights_map),
                                              answer, keras, init)
            _all_layers(source, answer, keras, Path(tmp), debug)
        else:
            import migrate

            module = migrate.load_port(out)
        script = None if hand_written else Path(out) / "train.py"
        if script is None or not script.is_file() or optimizer or loss:
            from migrate.porting.train_script import render

            script = Path(tmp, "train.py")
            script.write_text(render(answer["config"], manifest))
        train = _import(script)
        exact = copy.deepcopy(module).double()
        file = Path(out) / "model.py" if weights_map is None else Path(str(out).rpartition(":")[0])
        torch_side = _run_torch(module, train, manifest, answer, keras, steps, source=file)
        gaps = _noise(torch_side, _run_torch(exact, train, manifest, answer, keras, steps, double=True))
    report = _report(answer, manifest, keras, torch_side, steps, script.parent == Path(out), gaps)
    report.seed, report.atol, report.rtol = (None if inputs is not None else seed), *FORWARD
    report.inputs = [{"name": n, "values": f"{keras[f'in/{n}'].dtype} {tuple(keras[f'in/{n}'].shape)}",
                      "reason": f"--inputs {inputs}" if inputs is not None else
                      f"drawn by the Keras worker for its layers (seed {seed})"} for n in answer["inputs"]]
    from checks.parity.versions import runtime_versions

    report.versions = runtime_versions()
    return report


#: What to check first when a layer's training-mode output differs, by torch module class (prefix).
HINTS = {"LayerNorm": "LayerNorm eps and the normalized axes", "BatchNorm": "BatchNorm eps, momentum and batch statistics",
         "KerasBatchNorm": "BatchNorm eps, momentum and batch statistics", "Conv": "kernel layout, padding and strides",
         "Linear": "the kernel's transpose and the bias", "Embedding": "the table and the ids' range",
         "GroupNorm": "GroupNorm eps and groups", "MultiheadAttention": "head split, scaling and masks"}


def layer_hint(detail: str) -> str:
    """The first-divergence explanation for a layer, naming its own class and parameters (``detail``)."""
    cls = detail.split("(", 1)[0].strip()
    what = next((h for prefix, h in HINTS.items() if cls.startswith(prefix)), "its parameters and weight layout")
    return f"its training-mode output differs first: {detail}; check {what}"


def _source_lines(module: Any, file: Path | None) -> tuple[list[str], int, str]:
    """The top module's class source in ``file`` (model.py, or the hand-written FILE.py), the line number its
    ``class`` statement is on, and the file's name (the file is read: port modules are imported off sys.path)."""
    try:
        lines = file.read_text().splitlines() if file is not None else []
    except OSError:
        lines = []
    start = next((i for i, line in enumerate(lines) if line.startswith(f"class {type(module).__name__}(")), None)
    if start is None:
        return [], 0, "model.py"
    return lines[start:], start + 1, file.name


def describe_module(sub: Any, path: str, source: tuple[list[str], int, str]) -> str:
    """``LayerNorm((1,), eps=1e-06, elementwise_affine=True) self.norm, model.py line 12``: the torch class with
    its parameters and the line where the top module assigns it."""
    text = f"{type(sub).__name__}({sub.extra_repr()}) self.{path}"
    lines, start, file = source
    attr = path.split(".")[0]
    index = next((i for i, line in enumerate(lines) if line.strip().startswith(f"self.{attr} =")), None)
    return text if index is None else f"{text}, {file} line {start + index}"


def _port_manifest(out: Path, trust_model_py: bool) -> dict[str, Any]:
    """The port manifest of OUT; its model.py and train.py are imported only when the caller asked (a manifest's
    "kind" is data anyone can write, so it never decides to run code)."""
    from migrate.core.artifacts import read_manifest

    manifest = read_manifest(out)
    if manifest.get("kind") != "port":
        raise InputError(f"{out}: --train needs a 'tf2torch port' output (model.py), not a {manifest.get('kind')} "
                         "output; model.pt2 is an inference program")
    if not trust_model_py:
        raise InputError(f"{out}: --train imports this port output's model.py and train.py, which are Python code; "
                         "pass --trust-model-py (or port:DIR), and only for a directory you or your CI wrote")
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


def _mapped_module(source: str | Path, target: str, map_path: Path | None, answer: dict[str, Any],
                   keras: dict[str, Any], init: str | None = None) -> tuple[Any, dict]:
    """A hand-written module (``FILE.py:CLASS``) with Keras' initial weights loaded through the map (without a map,
    the one ``tf2torch transfer`` finds)."""
    import torch

    from migrate.transferring import mapfile
    from migrate.transferring.api import build_module

    if map_path is None:
        from migrate.transferring.api import transfer

        found = transfer(source, target, init=init)
        if not found.report.complete:
            raise InputError(f"transfer found no complete mapping for {target}; run 'tf2torch transfer' for the "
                             "report, fix the module or pass --weights-map")
        table, zeros, keep = mapfile.entries(found.weights_map, "the found map")
    else:
        table, zeros, keep = mapfile.read(map_path)
    module = build_module(target, init)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    arrays = {k[len("before/"):]: v for k, v in keras.items() if k.startswith("before/")}
    state = mapfile.state_from(table, zeros, arrays, shapes)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    weights = [{"keras": name, "torch": item["torch"], "transform": item["transform"], "pack": item["pack"],
                "trainable": True} for name, items in table.items() for item in items]
    ins, outs = _specs(answer, keras, keep=keep)
    return module, {"class_name": target.rpartition(":")[2], "inputs": ins, "outputs": outs, "weights": weights, "zeros": zeros}


def _all_layers(source: str | Path, answer: dict[str, Any], keras: dict[str, Any], tmp: Path, debug: bool) -> None:
    """Add the training-mode output of every Keras layer with weights (recurrent, attention: several inputs or a
    state) that the train worker does not probe, so that blame reaches them (``migrate.tf.transfer_worker``)."""
    import numpy as np

    from migrate.tf.client import run_worker

    np.savez(tmp / "inputs.npz", **{k[len("in/"):]: v for k, v in keras.items() if k.startswith("in/")})
    request = {"source": str(source), "inputs": str(tmp / "inputs.npz"), "training": True,
               "result_npz": str(tmp / "layers.npz")}
    extra = run_worker("forward", request, debug=debug, module="migrate.tf.transfer_worker")
    known = {layer["name"] for layer in answer["layers"]}
    with np.load(request["result_npz"], allow_pickle=False) as data:
        for layer in extra["layers"]:
            if layer["name"] not in known:
                answer["layers"].append(layer)
                keras[f"layer/{layer['name']}"] = data[f"layer/{layer['name']}"]
    order = {name: i for i, name in enumerate(layer["name"] for layer in extra["layers"])}
    answer["layers"].sort(key=lambda layer: order.get(layer["name"], len(order)))  # graph order for the blame


def _block(array: Any, pack: list[int] | None) -> Any:
    """The block of a packed tensor that one Keras weight fills (the whole tensor without ``pack``)."""
    if pack is None or array is None:
        return array
    size = array.shape[0] // pack[1]
    return array[pack[0] * size:(pack[0] + 1) * size]


def _layout(array: Any, spec: dict[str, Any]) -> Any:
    import numpy as np

    if spec["layout"] and spec["layout"] != spec["tf_layout"] and array.ndim == len(spec["tf_shape"]):
        return np.ascontiguousarray(np.moveaxis(array, -1, 1))
    return array


def _run_torch(module: Any, train: Any, manifest: dict[str, Any], answer: dict[str, Any], keras: dict[str, Any],
               steps: int, double: bool = False, source: Path | None = None) -> dict[str, Any]:
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
    torch_of: dict[str, str] = {}
    for w in manifest["weights"]:
        torch_of.setdefault(w["keras"], w["torch"])
    captured: dict[str, Any] = {}
    hooks = []
    names = dict(module.named_modules())
    modules: dict[str, str] = {}
    source_lines = _source_lines(module, source)
    for layer in answer["layers"]:
        keys = [torch_of[p].split(".")[:-1] for p in layer["weights"] if p in torch_of]
        path = ".".join(os.path.commonprefix(keys)) if keys else None  # the whole layer (SeparableConv: sep.0, sep.1)
        if path in names:
            modules[layer["name"]] = describe_module(names[path], path, source_lines)
            def hook(_m: Any, _i: Any, output: Any, name: str = layer["name"]) -> None:
                # a copy: an output that is a view of a parameter (a sliced position table) would otherwise
                # show the value after the optimizer steps
                captured.setdefault(name, (output[0] if isinstance(output, tuple) else output).detach().numpy().copy())
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
        mask = getattr(module, "output_mask", None)  # Keras averages the loss over the steps its output mask keeps
        data = train.compute_loss(outputs, targets) if mask is None else train.compute_loss(outputs, targets, mask)
        reg = train.regularization(module) if hasattr(train, "regularization") else torch.zeros(())
        (data + reg).backward()
        if step == 0:
            for h in hooks:
                h.remove()
            outs = outputs if isinstance(outputs, tuple) else (outputs,)
            result["outputs"] = [o.detach().numpy().copy() for o in outs]  # copies, as for the layers
            result["layers"] = dict(captured)
            result["modules"] = modules
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
    def gap(a: Any, b: Any) -> float:
        return max_abs_error(a, b) if a.shape == b.shape else 0.0

    return {"outputs": [gap(a, b) for a, b in zip(got["outputs"], exact["outputs"])],
            "layers": {k: gap(v, exact["layers"][k]) for k, v in got["layers"].items() if k in exact["layers"]},
            "grads": {k: gap(v, exact["grads"][k]) for k, v in got["grads"].items() if k in exact["grads"]},
            "state": {k: gap(v, exact["state"][k]) for k, v in got["state"].items() if v.dtype.kind == "f"},
            "loss": abs(got["loss_total"] - got["loss_reg"] - exact["loss_total"] + exact["loss_reg"]),
            "regularization": abs(got["loss_reg"] - exact["loss_reg"])}


def _forward_check(kind: str, name: str, actual: Any, expected: Any, spec: dict[str, Any] | None,
                   noise: float) -> Check | None:
    import numpy as np

    tol = tolerance((FORWARD[0], max(scale_of(expected), 1.0)), rtol=FORWARD[1], noise=noise)  # rounding is absolute below 1
    if spec is not None:
        expected = _layout(expected, spec)
    elif actual.ndim >= 3 and np.moveaxis(actual, 1, -1).shape == expected.shape:
        # channels-first in torch; where both arrangements fit (C == W), the one that matches
        moved = np.moveaxis(actual, 1, -1)
        if actual.shape != expected.shape or max_abs_error(moved, expected) < max_abs_error(actual, expected):
            actual = moved
    elif actual.shape != expected.shape:
        return None  # a layer whose torch module returns another arrangement (e.g. an RNN's state tuple)
    return check(kind, name, actual, expected, tol, stats=True)


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
            own = float(keras.get(f"own/layer/{layer['name']}", 0.0))
            actual, expected = got["layers"][layer["name"]], keras[f"layer/{layer['name']}"]
            if layer.get("class_name") in RECURRENT and actual.ndim == expected.ndim + 1:
                actual = actual[:, -1]  # the module returns every step, Keras (return_sequences=False) the last
            probed = _forward_check("layer", layer["name"], actual, expected, None,
                                    gaps["layers"].get(layer["name"], 0.0) + own)
            if probed is not None:
                probed.layer = layer["name"]
                probed.detail = got["modules"].get(layer["name"])
                report.checks.append(probed)
    for spec, tensor, gap in zip(manifest["outputs"], got["outputs"], gaps["outputs"]):
        own = float(keras.get(f"own/out/{spec['tf_name']}", 0.0))
        report.checks.append(_forward_check("output", spec["name"], tensor, keras[f"out/{spec['tf_name']}"], spec,
                                            gap + own))
    total_k, reg_k = float(keras["loss_total"]), float(keras["loss_reg"])
    for kind, want, have in (("loss", total_k - reg_k, got["loss_total"] - got["loss_reg"]),
                             ("regularization", reg_k, got["loss_reg"])):
        tol = tolerance((1e-6, 1.0), (1e-4, abs(want)), noise=gaps[kind])
        one = check(kind, kind, have, want, tol)
        one.message = None if one.passed else f"torch {have:.7g}, Keras {want:.7g}"
        report.checks.append(one)
    report.loss["passed"] = all(c.passed for c in report.checks if c.kind in ("loss", "regularization"))
    floor = GRADIENT[0] * 0.1 * max([scale_of(v) for k, v in keras.items() if k.startswith("grad/")], default=0.0)
    for entry in manifest["weights"]:
        keras_name, key = entry["keras"], entry["torch"]
        steps_fn = transforms.parse(entry.get("transform"))
        layer = keras_name.rpartition("/")[0]
        noise = False
        if key in got["parameters"]:
            grad_k, grad_t = keras.get(f"grad/{keras_name}"), _block(got["grads"].get(key), entry.get("pack"))
            if grad_k is None and grad_t is not None:
                report.checks.append(Check("gradient", key, scale_of(grad_t), 0.0, not grad_t.any(), keras_name,
                                           layer, message="Keras does not train this weight (frozen); torch does"))
            elif grad_k is not None and grad_t is None:
                report.checks.append(Check("gradient", key, float("inf"), 0.0, False, keras_name, layer,
                                           message="Keras trains this weight; torch has no gradient for it"))
            elif grad_k is not None:
                want = transforms.apply(steps_fn, grad_k)
                noise = scale_of(want) <= floor  # zero but for rounding (a bias before BatchNorm)
                tol = tolerance((GRADIENT[0], scale_of(want)), floor=floor, rtol=GRADIENT[1],
                                noise=gaps["grads"].get(key, 0.0))
                report.checks.append(check("gradient", key, grad_t, want, tol, keras_name, layer))
        before = transforms.apply(steps_fn, keras[f"before/{keras_name}"])
        after = transforms.apply(steps_fn, keras[f"after/{keras_name}"])
        delta = scale_of(after - before)
        if noise:  # the update follows rounding noise: only its size is held to Keras'
            delta = max(delta, scale_of(_block(got["state"][key], entry.get("pack")) - before)) * 2.0 / STEP_ATOL
        kind = "weight" if key in got["parameters"] else "buffer"
        tol = tolerance((STEP_ATOL if kind == "weight" else STATS_ATOL, delta), (WEIGHT_ATOL, max(scale_of(after), 1.0)),
                        noise=gaps["state"].get(key, 0.0))
        one = check(kind, key, _block(got["state"][key], entry.get("pack")), after, tol, keras_name, layer)
        if noise:
            one.message = "its gradient is float rounding noise, so only the size of its update is compared"
        report.checks.append(one)
    for key in manifest.get("zeros", []):  # no Keras counterpart: Keras' function has a constant zero there
        value = got["state"][key]
        report.checks.append(Check("weight" if key in got["parameters"] else "buffer", key, scale_of(value), 0.0,
                                   not value.any(), None, None, None if not value.any() else
                                   "Keras has no such weight (it is zero there); torch trains it: freeze it "
                                   "(requires_grad_(False)) or remove it"))
    _batchnorm_hints(report)
    report.first_divergence = _first(report)
    report.notes.append("dropout-family layers were the identity on both sides (their random masks cannot match "
                        "across frameworks)" + (f": {', '.join(answer['disabled'])}" if answer["disabled"] else ""))
    report.notes.append("torch side: " + ("OUT/train.py" if own_script else "the training code tf2torch port "
                                          "renders for this Keras setup (make_optimizer, compute_loss)"))
    report.notes.extend(opt.notes)
    report.notes.extend(config.get("notes", []))
    return report


def _batchnorm_hints(report: TrainReport) -> None:
    """Name the BatchNorm cause: a moving variance that alone differs is the variance update (torch's nn.BatchNorm
    uses the unbiased batch variance, Keras 3 the biased one); a moving mean that differs is the momentum."""
    buffers = {c.name: c for c in report.checks if c.kind == "buffer"}
    for name, buffer in buffers.items():
        if buffer.passed or not name.endswith(("running_var", "moving_variance")):
            continue
        mean = buffers.get(name.rsplit(".", 1)[0] + ".running_mean")
        if mean is not None and mean.passed:
            buffer.message = ("the running variance update differs while the running mean matches: torch's "
                             "nn.BatchNorm updates it with the unbiased batch variance, Keras 3 with the biased one "
                             "(update it with torch.var_mean(..., correction=0); docs/transfer.md)")
        elif mean is not None:
            buffer.message = mean.message = ("the running statistics move at another rate: BatchNorm momentum "
                                            "(torch momentum = 1 - Keras momentum)")


def _first(report: TrainReport) -> dict[str, Any] | None:
    """Graph order within a stage; stages in the order an error propagates (forward, loss, gradients, update)."""
    order = [("layer", "forward"), ("output", "output"), ("loss", "loss"), ("gradient", "gradient"),
             ("regularization", "loss"), ("weight", "weight"), ("buffer", "buffer")]
    for kind, stage in order:
        for c in report.checks:
            if c.kind == kind and not c.passed:
                return {"stage": stage, "name": c.name, "torch": c.name if kind in ("gradient", "weight", "buffer")
                        else None, "keras": c.keras, "layer": c.layer, "max_abs_err": c.max_abs_err,
                        "explanation": (c.message if stage == "buffer" and c.message else
                                        layer_hint(c.detail) if kind == "layer" and c.detail else WHY[stage])}
    return None


__all__ = ["TrainReport", "compare_train"]
