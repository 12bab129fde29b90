"""Render ``OUT/train.py``: a short PyTorch training loop equal to the Keras model's compiled training setup.

The optimizer and loss lines come from the registries in ``migrate.training`` (``optimizers``,
``losses``), so the file that users run is the code that ``tf2torch parity --train`` checks against a
Keras training step. Keras' regularisers become an explicit ``regularization(model)`` term, logits stay
logits (no softmax before ``F.cross_entropy``), and data is channels-first like the ported module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAIN_PY = "train.py"


def _names(specs: list[dict[str, Any]], fallback: str) -> list[str]:
    return [s["name"] if s["name"].isidentifier() else f"{fallback}{i}" for i, s in enumerate(specs)]


def _weighted(weight: float, expr: str) -> str:
    return expr if weight == 1.0 else f"{weight!r} * {expr}"


def _channels_first(spec: dict[str, Any]) -> bool:
    """The port moved this output's channels from Keras' last axis to dim 1 (an image output)."""
    return bool(spec.get("layout")) and spec["layout"] != spec.get("tf_layout")


def _class_last(spec: dict[str, Any]) -> bool:
    """Class scores on the last torch dim of a rank > 2 output: Keras' class axis, not moved by the port."""
    return len(spec["shape"]) > 2 and not _channels_first(spec)


def _loss_body(config: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    from migrate.training.losses import render

    outs = manifest["outputs"]
    by_output = {loss["output"]: loss for loss in config["losses"]}
    if len(outs) == 1:
        loss = by_output[outs[0]["tf_name"]]
        expr = render(loss, "outputs", "targets", _class_last(outs[0]), outs[0].get("activation"))
        masked = ["    if mask is not None:  # Keras' output mask (padding): the loss averages over the steps it keeps",
                  "        outputs, targets = outputs[mask], targets[mask]"] if outs[0].get("masked") else []
        return [*masked, f"    return {_weighted(loss['weight'], expr)}"]
    preds, targets = _names(outs, "output"), [f"{n}_target" for n in _names(outs, "output")]
    terms = [_weighted(by_output[s["tf_name"]]["weight"], render(by_output[s["tf_name"]], p, t, _class_last(s),
                                                                 s.get("activation")))
             for s, p, t in zip(outs, preds, targets)]
    return [f"    {', '.join(preds)} = outputs", f"    {', '.join(targets)} = targets",
            *_sum(terms)]


def _sum(terms: list[str]) -> list[str]:
    """``return a`` or ``return (\n a\n + b\n)`` for several terms."""
    if len(terms) == 1:
        return [f"    return {terms[0]}"]
    return ["    return (", f"        {terms[0]}", *[f"        + {t}" for t in terms[1:]], "    )"]


def _regularization(config: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    torch_key = {w["keras"]: w["torch"] for w in manifest["weights"]}
    terms = []
    for reg in config["regularizers"]:
        param = f'model.get_parameter("{torch_key[reg["keras"]]}")'
        if reg["l1"]:
            terms.append(f"{reg['l1']!r} * {param}.abs().sum()")
        if reg["l2"]:
            terms.append(f"{reg['l2']!r} * {param}.square().sum()")
    if config.get("activity"):
        terms.append("model.activity_loss")
    if manifest.get("added_loss"):
        terms.append("model.added_loss")
    if not terms:
        return []
    doc = "Keras' weight regularisers, added to the loss the way Keras adds them (l2 * sum(w**2))"
    if config.get("activity"):
        doc += (", and the activity regularisers of " + ", ".join(config["activity"])
                + " (model.activity_loss, set by the last forward)")
    if manifest.get("added_loss"):
        doc += ", and the custom layers' add_loss terms (model.added_loss, set by the last forward)"
    return ["", "", "def regularization(model: torch.nn.Module) -> torch.Tensor:", f'    """{doc}."""', *_sum(terms)]


def _synthetic(manifest: dict[str, Any], config: dict[str, Any]) -> list[str]:
    from migrate.training.losses import LOSSES, canonical

    lines = ["", "", "def synthetic_batch(batch_size: int) -> tuple[tuple[torch.Tensor, ...], Any]:",
             '    """Random inputs and targets shaped like the model\'s; replace with your DataLoader."""']
    dynamic = any(d is None for spec in [*manifest["inputs"], *manifest["outputs"]] for d in spec["tf_shape"][1:])
    if dynamic:
        lines.append("    length = 16  # any length: the model's time dimension is dynamic")
    names = []
    for i, spec in enumerate(manifest["inputs"]):
        name = spec["name"] if spec["name"].isidentifier() else f"input{i}"
        names.append(name)
        shape = ", ".join("length" if d is None else str(d) for d in spec["tf_shape"][1:])
        if spec.get("token_ids"):
            line = (f"    {name} = torch.randint(0, {spec['token_ids']}, (batch_size, {shape})).float()"
                    "  # token ids, held as floats like the Keras model's input")
        elif spec["dtype"].startswith("float"):
            line = f"    {name} = torch.randn(batch_size, {shape})"
            if spec["layout"] and spec["layout"] != spec["tf_layout"]:
                perm = ", ".join(str(d) for d in [0, len(spec["tf_shape"]) - 1, *range(1, len(spec["tf_shape"]) - 1)])
                line += f".permute({perm})  # Keras {spec['tf_layout']} -> torch {spec['layout']}"
        else:
            line = f"    {name} = torch.randint(0, 2, (batch_size, {shape}))  # token ids below the vocabulary size"
        lines.append(line.replace(", )", ")"))
    by_output = {loss["output"]: loss for loss in config["losses"]}
    targets = []
    for i, spec in enumerate(manifest["outputs"]):
        kind = LOSSES[canonical(by_output[spec["tf_name"]]["name"])].targets
        dims = ["length" if d is None else str(d) for d in spec["shape"][1:]]
        shape = ", ".join(dims)
        axis = 0 if _channels_first(spec) or len(dims) == 1 else len(dims) - 1  # the class axis within dims
        classes = dims[axis] if dims else "1"
        rest = dims[:axis] + dims[axis + 1:]
        size = ", ".join(["batch_size", *rest]) + ("" if rest else ",")
        ids = f"torch.randint(0, {classes}, ({size}))"
        onehot = f"F.one_hot({ids}, {classes}).float()" + (".movedim(-1, 1)" if axis == 0 and len(dims) > 1 else "")
        name = f"target{i}"
        targets.append(name)
        lines.append({"sparse": f"    {name} = {ids}",
                      "onehot": f"    {name} = {onehot}",
                      "binary": f"    {name} = torch.randint(0, 2, (batch_size, {shape})).float()",
                      "real": f"    {name} = torch.randn(batch_size, {shape})"}[kind])
    inputs = f"({', '.join(names)},)"
    lines.append(f"    return {inputs}, {targets[0] if len(targets) == 1 else '(' + ', '.join(targets) + ')'}")
    return lines


def _accuracy(config: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """Keras' compiled accuracy metric for a single classifier output (class scores on axis 1, or last)."""
    metrics = {str(m).lower() for m in config.get("metrics", [])}
    if len(manifest["outputs"]) != 1 or not metrics & {"accuracy", "acc", "sparse_categorical_accuracy",
                                                         "categorical_accuracy"}:
        return []
    name = config["losses"][0]["name"]
    axis = -1 if _class_last(manifest["outputs"][0]) else 1
    labels = {"sparse_categorical_crossentropy": "targets",
              "categorical_crossentropy": f"targets.argmax({axis})"}.get(name)
    if labels is None:
        return []
    return [f"        accuracy = (outputs.argmax({axis}) == {labels}).float().mean().item()",
            '        print(f"eval accuracy {accuracy:.3f}")']


def render(config: dict[str, Any], manifest: dict[str, Any]) -> str:
    """``train.py`` for the port in ``manifest`` and the Keras training ``config`` (``keras_train_worker``)."""
    from migrate.training.optimizers import ADAM_EPSILON_HOOK, map_optimizer

    opt = map_optimizer(config["optimizer"])
    regularization = _regularization(config, manifest)
    cls = manifest["class_name"]
    losses = ", ".join(sorted({loss["name"] + ("(from_logits)" if loss["config"].get("from_logits") else "")
                               for loss in config["losses"]}))
    notes = "".join(f"\n    Not exact: {n}." for n in opt.notes if not opt.exact) or ""
    lines = [f'"""Train {cls} (model.py) the way Keras trained it: {opt.keras}, {losses}.',
             "",
             "Generated by tf2torch port. Keras' BatchNorm momentum/epsilon and dropout live in model.py; this file",
             "holds the optimizer, the loss (logits stay logits) and the loop. Data is channels-first.",
             '"""',
             "",
             "from __future__ import annotations",
             "",
             "import argparse",
             *(["import bisect"] if opt.schedule and "bisect" in opt.schedule else []),
             "from pathlib import Path",
             "from typing import Any",
             "",
             "import torch",
             "import torch.nn.functional as F",
             "from safetensors.torch import load_file"]
    if opt.hooks:
        lines += ["", *ADAM_EPSILON_HOOK.rstrip().splitlines()]
    lines += ["", "", "def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:",
              f'    """Keras {opt.keras} as torch.optim.{opt.torch}.{notes}"""',
              *[f"    {line}" for line in opt.build], "    return optimizer"]
    if opt.schedule:
        lines += ["", "", "def make_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:",
                  '    """Keras\' learning-rate schedule, stepped once per batch like Keras\' optimizer.iterations."""',
                  f"    return {opt.schedule}"]
    masked = any(out.get("masked") for out in manifest["outputs"])
    mask_arg = ", mask: torch.Tensor | None = None" if masked else ""
    lines += ["", "", f"def compute_loss(outputs: Any, targets: Any{mask_arg}) -> torch.Tensor:",
              '    """Keras\' compiled loss, averaged like Keras\' sum_over_batch_size."""', *_loss_body(config, manifest)]
    lines += regularization
    if opt.clip:
        lines += ["", "", "def clip_gradients(model: torch.nn.Module) -> None:",
                  '    """Keras clips gradients before the update (clipnorm, global_clipnorm or clipvalue)."""',
                  *[f"    {line}" for line in opt.clip]]
    total = ("compute_loss(outputs, targets, model.output_mask)" if masked else "compute_loss(outputs, targets)") + (
        " + regularization(model)" if regularization else "")
    lines += ["", "", ("def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: tuple, "
                      "targets: Any) -> float:"),
              '    """One optimizer step on one batch; returns the loss."""',
              "    model.train()", "    optimizer.zero_grad()", "    outputs = model(*inputs)",
              f"    loss = {total}", "    loss.backward()", *(["    clip_gradients(model)"] if opt.clip else []),
              "    optimizer.step()", "    return loss.item()"]
    lines += _synthetic(manifest, config)
    images = any(len(spec["shape"]) == 4 and spec["dtype"].startswith("float") for spec in manifest["inputs"])
    lines += ["", "", "def main() -> None:",
              "    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])",
              '    parser.add_argument("--steps", type=int, default=10)',
              '    parser.add_argument("--batch-size", type=int, default=8)',
              '    parser.add_argument("--compile", action="store_true",',
              '                        help="torch.compile the model: the first step compiles, later steps run faster")',
              *(['    parser.add_argument("--channels-last", action="store_true",',
                 '                        help="channels_last memory format for the model and its images")']
                if images else []),
              "    args = parser.parse_args()",
              f"    from model import {cls}  # model.py sits next to this file",
              "",
              f"    model = {cls}()",
              '    model.load_state_dict(load_file(str(Path(__file__).with_name("weights.safetensors"))))',
              *(["    if args.channels_last:", "        model = model.to(memory_format=torch.channels_last)"]
                if images else []),
              "    if args.compile:",
              "        model.compile()  # in place: parameter names, state_dict and regularization() are unchanged",
              "    optimizer = make_optimizer(model)",
              *(["    scheduler = make_scheduler(optimizer)"] if opt.schedule else []),
              "    for step in range(args.steps):",
              "        inputs, targets = synthetic_batch(args.batch_size)",
              *(["        if args.channels_last:",
                 ("            inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 "
                  "else x for x in inputs)")] if images else []),
              "        loss = train_step(model, optimizer, inputs, targets)",
              *(["        scheduler.step()"] if opt.schedule else []),
              '        print(f"step {step + 1}: loss {loss:.4f}")',
              "    model.eval()",
              "    with torch.no_grad():",
              "        inputs, targets = synthetic_batch(args.batch_size)",
              "        outputs = model(*inputs)",
              (f'        print(f"eval loss {{compute_loss(outputs, targets{", model.output_mask" if masked else ""})'
               '.item():.4f}")'),
              *_accuracy(config, manifest),
              "", "", 'if __name__ == "__main__":', "    main()", ""]
    return "\n".join(lines)


def saved_compiled(source: Path) -> bool:
    """Whether SOURCE carries a compile config (read without Keras: .keras is a zip, .h5 an HDF5 attribute)."""
    import zipfile

    if source.suffix == ".keras" and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            try:
                config = json.loads(archive.read("config.json"))
            except (KeyError, ValueError):
                return False
        return bool(config.get("compile_config"))
    if source.suffix in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError:
            return False
        with h5py.File(source, "r") as handle:
            return "training_config" in handle.attrs
    return False


def write_train_script(stage: Path, source: Path, manifest: dict[str, Any], *, debug: bool = False,
                       custom_objects: list[dict[str, Any]] | None = None) -> str | None:
    """Write ``stage/train.py`` when SOURCE was saved compiled; return why not otherwise (None when written)."""
    from migrate.core.errors import Tf2TorchError
    from migrate.tf.client import run_worker

    if not saved_compiled(source):
        return "the Keras model was saved without compile()"
    try:
        answer = run_worker("config", {"source": str(source), "custom_objects": custom_objects or []}, debug=debug,
                            module="migrate.tf.train_worker")
        if answer["config"] is None:
            return "the Keras model has no compiled optimizer"
        text = render(answer["config"], manifest)
    except Tf2TorchError as exc:
        return str(exc)
    (stage / TRAIN_PY).write_text(text)
    return None
