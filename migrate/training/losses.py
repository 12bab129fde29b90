"""Keras loss -> the torch expression that computes the same number, with Keras' reduction and clipping.

One entry per Keras loss. Keras reduces with ``sum_over_batch_size`` (the mean over every element of the
per-sample loss, which is itself a mean over the last axis for MSE/MAE/Huber/BCE), so plain torch means
are exact. Keras clips probabilities to [1e-7, 1 - 1e-7] for non-logit cross-entropy, which ``F.binary_cross_entropy`` does not
(it clamps the log at -100): those entries are written out. (Keras' TensorFlow backend computes a
non-logit cross-entropy from the logits when the probabilities come straight from its own softmax or
sigmoid; the clipped form is what it computes for any other probabilities.) Class scores sit on axis 1 of a
channels-first output, which is where ``F.cross_entropy`` wants them; on the last axis of any other rank > 2
output (Keras' class axis), and ``render(..., class_last=True)`` moves them there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migrate.core.errors import InputError

EPS = "1e-07"


@dataclass(frozen=True)
class LossEntry:
    """``render(pred, target, config) -> expression``; ``targets`` says what targets fit the loss."""

    render: Callable[[str, str, dict[str, Any]], str]
    targets: str  # "sparse" (class ids), "onehot", "binary" (0/1 floats), "real"


def _smoothing(config: dict[str, Any]) -> str:
    value = float(config.get("label_smoothing", 0.0) or 0.0)
    return f", label_smoothing={value!r}" if value else ""


def _sparse_ce(pred: str, target: str, config: dict[str, Any]) -> str:
    if config.get("from_logits"):
        return f"F.cross_entropy({pred}, {target}.long())"
    return f"F.cross_entropy(torch.log({pred}.clamp({EPS}, 1 - {EPS})), {target}.long())"


def _categorical_ce(pred: str, target: str, config: dict[str, Any]) -> str:
    if config.get("from_logits"):
        return f"F.cross_entropy({pred}, {target}{_smoothing(config)})"
    smooth = float(config.get("label_smoothing", 0.0) or 0.0)
    target = f"({target} * {1 - smooth!r} + {smooth!r} / {target}.shape[1])" if smooth else target
    probs = f"({pred} / {pred}.sum(1, keepdim=True)).clamp({EPS}, 1 - {EPS})"
    return f"-({target} * torch.log({probs})).sum(1).mean()"


def _binary_ce(pred: str, target: str, config: dict[str, Any]) -> str:
    smooth = float(config.get("label_smoothing", 0.0) or 0.0)
    target = f"({target} * {1 - smooth!r} + {0.5 * smooth!r})" if smooth else target
    if config.get("from_logits"):
        return f"F.binary_cross_entropy_with_logits({pred}, {target})"
    probs = f"{pred}.clamp({EPS}, 1 - {EPS})"
    return f"-({target} * torch.log({probs}) + (1 - {target}) * torch.log(1 - {probs})).mean()"


def _huber(pred: str, target: str, config: dict[str, Any]) -> str:
    return f"F.huber_loss({pred}, {target}, delta={float(config.get('delta', 1.0))!r})"


LOSSES: dict[str, LossEntry] = {
    "sparse_categorical_crossentropy": LossEntry(_sparse_ce, "sparse"),
    "categorical_crossentropy": LossEntry(_categorical_ce, "onehot"),
    "binary_crossentropy": LossEntry(_binary_ce, "binary"),
    "mean_squared_error": LossEntry(lambda p, t, c: f"F.mse_loss({p}, {t})", "real"),
    "mean_absolute_error": LossEntry(lambda p, t, c: f"F.l1_loss({p}, {t})", "real"),
    "huber": LossEntry(_huber, "real"),
    # no compiled loss: the model's add_loss terms are its whole loss (a CTC endpoint), added by train.py's
    # regularization(); the outputs contribute nothing
    "add_loss": LossEntry(lambda p, t, c: f"{p}.new_zeros(())", "real"),
}

#: Keras class names, function names and aliases -> the registry key.
ALIASES = {
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy", "BinaryCrossentropy": "binary_crossentropy",
    "MeanSquaredError": "mean_squared_error", "mse": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error", "mae": "mean_absolute_error", "Huber": "huber",
    "huber_loss": "huber",
}


def canonical(name: str) -> str:
    key = ALIASES.get(name, name)
    if key not in LOSSES:
        raise InputError(f"loss {name!r} has no torch mapping; mapped: {', '.join(LOSSES)} (with from_logits=...)")
    return key


def parse_spec(text: str) -> dict[str, Any]:
    """``sparse_categorical_crossentropy:from_logits=true`` -> ``{"name", "config"}``."""
    name, _, rest = text.partition(":")
    config: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--loss: expected KEY=VALUE, got {item!r}")
        low = value.strip().lower()
        if low in ("true", "false"):
            config[key.strip()] = low == "true"
        else:
            try:
                config[key.strip()] = float(value)
            except ValueError:
                raise InputError(f"--loss: {key}={value!r} is not a number or true/false") from None
    return {"name": canonical(name.strip()), "config": config}


#: loss -> the output activation whose logits Keras' TensorFlow backend takes instead of the probabilities
LOGITS = {"sparse_categorical_crossentropy": "softmax", "categorical_crossentropy": "softmax",
          "binary_crossentropy": "sigmoid"}
#: the logits, recovered from the probabilities: a softmax's log-probabilities differ from its logits by a
#: constant per sample, which the cross-entropy ignores; a sigmoid's logits are its inverse
RECOVER = {"softmax": "torch.log({p})", "sigmoid": "torch.logit({p})"}


def render(loss: dict[str, Any], pred: str, target: str, class_last: bool = False,
           activation: str | None = None) -> str:
    """The torch expression; ``class_last``: class scores on the last axis of a rank > 2 output (a per-timestep
    classifier, a channels-last segmentation), moved to dim 1 where ``F.cross_entropy`` wants them.

    ``activation``: the output's last operation. A probability cross-entropy right after the matching softmax
    or sigmoid is computed from the logits, unclipped, as Keras' TensorFlow backend does; its loss and
    gradients then match Keras at every element (the clipped form differs wherever a probability is
    beyond [1e-7, 1 - 1e-7])."""
    key = canonical(loss["name"])
    entry = LOSSES[key]
    config = dict(loss.get("config", {}))
    if activation is not None and LOGITS.get(key) == activation and not config.get("from_logits"):
        pred, config["from_logits"] = RECOVER[activation].format(p=pred), True
    if class_last and entry.targets in ("sparse", "onehot"):
        pred = f"{pred}.movedim(-1, 1)"
        target = f"{target}.movedim(-1, 1)" if entry.targets == "onehot" else target
    return entry.render(pred, target, config)


def make_targets(kind: str, shape: list[int], rng: Any, channels_axis: int = -1) -> Any:
    """Targets (Keras layout) that fit a loss: class ids, one-hot rows, 0/1 floats or standard normals."""
    import numpy as np

    classes = shape[channels_axis]
    if kind == "sparse":
        return rng.integers(0, classes, shape[:-1]).astype("int64")
    if kind == "onehot":
        return np.eye(classes, dtype="float32")[rng.integers(0, classes, shape[:-1])]
    if kind == "binary":
        return rng.integers(0, 2, shape).astype("float32")
    return rng.standard_normal(shape).astype("float32")
