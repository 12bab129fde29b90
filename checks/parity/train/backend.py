"""``parity SOURCE --keras-backend torch``: the same ``.keras`` file under Keras' torch and TensorFlow backends.

The seeds' first migration path keeps the Keras code and sets ``KERAS_BACKEND=torch``. Both backends run
``migrate.tf.keras_torch_worker.backend_run`` in their own child process (TensorFlow's in
``migrate.tf.train_worker``, torch's in ``migrate.tf.keras_torch_worker``) on one batch: every output and
every single-call layer's output with ``training=False`` and ``training=True`` (dropout-family layers the
identity), and with ``train`` one ``train_on_batch`` step (loss, every variable after it). The first layer
whose output differs is named; a layer that cannot load or run under torch fails the run with Keras' message.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from checks.parity.train.report import Check, TrainReport, check
from migrate.core.compare import Tolerance, scale_of, tolerance
from migrate.core.errors import InputError

FORWARD = (1e-5, 1e-4)  # atol factor on max(scale, 1), rtol: as checks.parity.train.api
WEIGHT_ATOL = 1e-6


def compare_backends(source: str | Path, *, backend: str = "torch", train: bool = False, optimizer: str | None = None,
                     loss: str | None = None, inputs: str | Path | None = None, targets: str | Path | None = None,
                     seed: int = 0, batch_size: int = 4, custom_objects: Any = None, debug: bool = False) -> TrainReport:
    """Run SOURCE under Keras' TensorFlow and ``backend`` backends and compare what they compute."""
    import numpy as np

    from migrate.tf.client import run_worker
    from migrate.tf.custom_objects import specs
    from migrate.training import losses, optimizers

    if backend != "torch":
        raise InputError(f"--keras-backend: only 'torch' is compared with TensorFlow, not {backend!r}")
    if Path(source).suffix not in (".keras",):
        raise InputError(f"--keras-backend torch needs a .keras file (the Keras 3 format both backends load), "
                         f"got {source}")
    request: dict[str, Any] = {"source": str(source), "train": train, "seed": seed, "batch": batch_size,
                               "optimizer": optimizers.parse_spec(optimizer) if optimizer else None,
                               "loss": losses.parse_spec(loss) if loss else None,
                               "custom_objects": specs(custom_objects)}
    for key, path in (("user_inputs", inputs), ("user_targets", targets)):
        if path is not None:
            if not Path(path).is_file():
                raise InputError(f"--{key.removeprefix('user_')} {path}: no such file")
            request[key] = str(path)
    with tempfile.TemporaryDirectory(prefix="tf2torch-backend-") as tmp:
        batch, tf_npz, torch_npz = (str(Path(tmp, f"{n}.npz")) for n in ("batch", "tf", "torch"))
        answer = run_worker("backend_run", dict(request, batch_npz=batch, result_npz=tf_npz), debug=debug,
                            module="migrate.tf.train_worker")
        run_worker("backend_run", dict(request, inputs=batch, result_npz=torch_npz), debug=debug,
                   module="migrate.tf.keras_torch_worker")
        with np.load(tf_npz) as a, np.load(torch_npz) as b:
            want, got = {k: a[k] for k in a.files}, {k: b[k] for k in b.files}
    report = _report(answer, want, got, train, optimizer)
    report.seed, report.atol, report.rtol = (None if inputs is not None else seed), *FORWARD
    return report


def _check(kind: str, name: str, have: Any, want: Any, tol: Tolerance, layer: str | None = None) -> Check:
    if have is None:
        return Check(kind, name, float("inf"), tol.atol, False, layer=layer, message="missing under the torch backend")
    if have.shape != want.shape:
        return Check(kind, name, float("inf"), tol.atol, False, layer=layer,
                     message=f"shape {have.shape} under torch, {want.shape} under TensorFlow")
    return check(kind, name, have, want, tol, layer=layer, stats=True)


def _report(answer: dict[str, Any], want: dict[str, Any], got: dict[str, Any], train: bool,
            optimizer: str | None) -> TrainReport:
    report = TrainReport(steps=1 if train else 0,
                         optimizer={"keras": optimizer or "compiled", "torch": "the same Keras optimizer under "
                                    "KERAS_BACKEND=torch", "exact": True, "notes": []},
                         loss={"keras": float(want.get("loss", 0.0)), "torch": float(got.get("loss", 0.0)),
                               "passed": True}, title="Keras backend parity (torch vs TensorFlow)")
    names = answer["outputs_named"]
    for mode in ("eval", "train"):
        tag = "training=True" if mode == "train" else "training=False"
        for layer in answer["layers"]:
            key = f"{mode}/layer/{layer}"
            tol = tolerance((FORWARD[0], max(scale_of(want[key]), 1.0)), rtol=FORWARD[1])
            report.checks.append(_check("layer", f"{layer} ({tag})", got.get(key), want[key], tol, layer))
        for i, name in enumerate(names):
            key = f"{mode}/out/{i}"
            tol = tolerance((FORWARD[0], max(scale_of(want[key]), 1.0)), rtol=FORWARD[1])
            report.checks.append(_check("output", f"{name} ({tag})", got.get(key), want[key], tol))
    if train:
        lw, lt = float(want["loss"]), float(got["loss"])
        report.checks.append(check("loss", "loss", lt, lw, tolerance((1e-6, 1.0), (1e-4, abs(lw)))))
        report.loss["passed"] = report.checks[-1].passed
        for path in answer["order"]:
            key = f"after/{path}"
            tol = tolerance((WEIGHT_ATOL * 10, max(scale_of(want[key]), 1.0)), rtol=1e-5)
            report.checks.append(_check("weight", path, got.get(key), want[key], tol, path.rpartition("/")[0]))
    failed = next((c for c in report.checks if not c.passed), None)
    if failed is not None:
        report.first_divergence = {"stage": failed.kind, "name": failed.name, "torch": None, "keras": failed.name,
                                   "layer": failed.layer, "max_abs_err": failed.max_abs_err,
                                   "explanation": "it computes differently under KERAS_BACKEND=torch than under "
                                                  "TensorFlow (first in graph order)"}
    report.notes.append("both sides are Keras (TensorFlow backend vs torch backend), same file, same batch; "
                        "dropout-family layers were the identity on both sides")
    return report
