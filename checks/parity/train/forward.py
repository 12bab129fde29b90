"""``compare_module(source, "FILE.py:CLASS")``: forward (eval-mode) parity of a hand-written module.

Keras runs in ``migrate.tf.transfer_worker`` (child process): the model's outputs and the output of every layer
with weights (recurrent and attention layers included). The module, loaded through the weights map (or the
one ``tf2torch transfer`` finds), runs in eval mode with forward hooks on the submodule that holds each Keras
layer's weights. The verdict uses parity's forward tolerance (atol = max(1e-6, 1e-3 x the Keras tensor's
largest |value|), rtol 1e-4); each layer is also held to float32 rounding (1e-5 x scale plus NOISE x the
module's own float32-vs-float64 gap), and a layer over that but within the verdict's tolerance is a
warning that names it: a tanh-GELU (6e-5 of scale) is below the coarse tolerance and far above rounding.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from checks.parity.train.api import RECURRENT, _forward_check, _layout, _mapped_module
from checks.parity.train.report import Check, TrainReport
from migrate.core.compare import NOISE
from migrate.core.compare import scale_of as _scale
from migrate.core.errors import InputError

#: The verdict's tolerance: parity's default for float32 outputs.
COARSE = (1e-3, 1e-4)


def compare_module(source: str | Path, target: str, *, weights_map: str | Path | None = None, init: str | None = None,
                   inputs: str | Path | None = None, seed: int = 0, batch_size: int = 4,
                   debug: bool = False) -> TrainReport:
    """Run SOURCE (Keras, inference) and the module ``target`` on the same inputs; compare outputs and layers."""
    import numpy as np

    from migrate.tf.client import run_worker

    request: dict[str, Any] = {"source": str(source), "seed": seed, "batch": batch_size}
    if inputs is not None:
        if not Path(inputs).is_file():
            raise InputError(f"--inputs {inputs}: no such file")
        request["inputs"] = str(inputs)
    with tempfile.TemporaryDirectory(prefix="tf2torch-forward-") as tmp:
        request["result_npz"] = str(Path(tmp, "keras.npz"))
        answer = run_worker("forward", request, debug=debug, module="migrate.tf.transfer_worker")
        with np.load(request["result_npz"], allow_pickle=False) as data:
            keras = {k: data[k] for k in data.files}
    module, manifest = _mapped_module(source, target, None if weights_map is None else Path(weights_map), answer,
                                      keras, init)
    got = _run(module, manifest, answer, keras)
    exact = _run(copy.deepcopy(module).double(), manifest, answer, keras, double=True)
    report = TrainReport(steps=0, optimizer={}, loss={}, title="forward parity (eval mode)",
                         seed=None if inputs is not None else seed, atol=COARSE[0], rtol=COARSE[1])
    warnings = []
    for layer in answer["layers"]:
        name = layer["name"]
        if name not in got["layers"]:
            continue
        actual, expected = got["layers"][name], keras[f"layer/{name}"]
        if layer["class_name"] in RECURRENT and actual.ndim == expected.ndim + 1:
            actual = actual[:, -1]  # the module returns the sequence, Keras (return_sequences=False) its last step
        noise = _gap(actual, exact["layers"].get(name))
        fine = _forward_check("layer", name, actual, expected, None, noise)
        if fine is None:
            continue
        coarse_atol = COARSE[0] * max(_scale(expected), 1e-3) + NOISE * noise
        fine.layer = name
        if not fine.passed and fine.message is None and fine.max_abs_err <= coarse_atol:
            fine.passed = True
            fine.message = (f"warning: differs by {fine.max_abs_err:.3g}, above float32 rounding ({fine.atol:.3g}) "
                            f"though within the forward tolerance ({coarse_atol:.3g}): a real difference (an "
                            "approximate GELU, an epsilon)?")
            warnings.append(f"layer {name} {fine.message}")
        report.checks.append(fine)
    for spec, tensor, exact_out in zip(manifest["outputs"], got["outputs"], exact["outputs"]):
        expected = _layout(keras[f"out/{spec['tf_name']}"], spec)
        atol = max(1e-6, COARSE[0] * _scale(expected)) + NOISE * _gap(tensor, exact_out)
        err, ok, message = _err(tensor, expected, atol)
        report.checks.append(Check("output", spec["name"], err, atol, ok, message=message, rtol=COARSE[1]))
    report.first_divergence = _first(report)
    report.notes += warnings
    report.notes.append("eval mode on both sides (dropout off, BatchNorm on its moving statistics)")
    return report


def _err(actual: Any, expected: Any, atol: float) -> tuple[float, bool, str | None]:
    import numpy as np

    if actual.shape != expected.shape:
        return float("inf"), False, f"shape {tuple(actual.shape)} vs Keras {tuple(expected.shape)}"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return float(diff.max(initial=0.0)), bool(np.all(diff <= atol + COARSE[1] * np.abs(expected))), None


def _gap(a: Any, b: Any) -> float:
    import numpy as np

    if b is None or a.shape != b.shape:
        return 0.0
    return float(np.abs(a.astype(np.float64) - b).max(initial=0.0))


def _first(report: TrainReport) -> dict[str, Any] | None:
    for kind in ("layer", "output"):
        for c in report.checks:
            if c.kind == kind and not c.passed:
                why = ("its output differs first (weights, eps, activation, padding, layout)" if kind == "layer"
                       else "a model output differs although every compared layer matches (a layer without weights: "
                            "an activation, a softmax left in forward, a merge, pooling)")
                return {"stage": "forward", "name": c.name, "torch": None, "keras": c.keras, "layer": c.layer,
                        "max_abs_err": c.max_abs_err, "explanation": why}
    return None


def _run(module: Any, manifest: dict[str, Any], answer: dict[str, Any], keras: dict[str, Any],
         double: bool = False) -> dict[str, Any]:
    """Eval-mode forward with a hook on the submodule holding each Keras layer's weights."""
    import os

    import torch

    from migrate.transferring.trace import first_tensor

    torch_of: dict[str, list[str]] = {}
    for w in manifest["weights"]:
        torch_of.setdefault(w["keras"], []).append(w["torch"])
    names = dict(module.named_modules())
    captured: dict[str, Any] = {}
    hooks = []
    for layer in answer["layers"]:
        keys = [k.split(".")[:-1] for p in layer["weights"] for k in torch_of.get(p, [])]
        path = ".".join(os.path.commonprefix(keys)) if keys else None
        if path in names:
            def hook(_m: Any, _i: Any, output: Any, name: str = layer["name"]) -> None:
                captured.setdefault(name, first_tensor(output))
            hooks.append(names[path].register_forward_hook(hook))
    args = []
    for spec in manifest["inputs"]:
        value = torch.from_numpy(_layout(keras[f"in/{spec['tf_name']}"], spec))
        args.append(value.double() if double and value.is_floating_point() else value)
    module.eval()
    try:
        with torch.no_grad():
            outputs = module(*args)
    finally:
        for h in hooks:
            h.remove()
    outs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {"outputs": [o.detach().numpy() for o in outs], "layers": captured}
