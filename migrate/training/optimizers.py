"""Keras optimizer config -> the torch optimizer that computes the same update, as source lines.

One entry per Keras optimizer class. Each returns an :class:`OptimizerCode`: the lines that build
``optimizer`` from ``model.parameters()`` (and a scheduler, a clipping function and a step pre-hook where
Keras needs one), whether the update is exact, and a one-line note where it is not. Formulas follow the
Keras 3 sources (``keras/src/optimizers``): weight decay is decoupled there (``var -= var * wd * lr``
before the update), ``clipnorm`` clips each variable's gradient on its own, and Adam adds epsilon to
the square root of the *uncorrected* second moment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from migrate.core.errors import InputError


@dataclass
class OptimizerCode:
    """Source that builds ``optimizer`` (and ``scheduler``) in ``make_optimizer``; see the module docstring."""

    keras: str
    torch: str
    build: list[str]
    exact: bool = True
    notes: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    schedule: str | None = None
    clip: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"keras": self.keras, "torch": self.torch, "exact": self.exact, "notes": list(self.notes)}


def _num(value: Any) -> str:
    """Keras stores hyper-parameters as float32: 0.05000000074505806 is written 0.05."""
    return repr(float(f"{float(value):.7g}"))


def _lr(config: dict[str, Any], code: OptimizerCode) -> str:
    """The initial learning rate; a Keras schedule becomes a torch scheduler stepped once per batch."""
    lr = config.get("learning_rate", 0.001)
    if not isinstance(lr, dict):
        return _num(lr)
    name, cfg = lr.get("class_name"), lr.get("config", {})
    initial = float(cfg.get("initial_learning_rate", cfg.get("values", [0.001])[0]))
    if name == "ExponentialDecay":
        steps, rate = int(cfg["decay_steps"]), float(cfg["decay_rate"])
        code.schedule = (f"torch.optim.lr_scheduler.StepLR(optimizer, step_size={steps}, gamma={rate!r})"
                         if cfg.get("staircase") else
                         f"torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma={rate!r} ** (1 / {steps}))")
    elif name == "CosineDecay" and not cfg.get("warmup_steps"):
        steps, alpha = int(cfg["decay_steps"]), float(cfg.get("alpha", 0.0))
        code.schedule = (f"torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max={steps}, "
                         f"eta_min={alpha * initial!r})")
        code.notes.append("CosineDecay stops at decay_steps; torch's CosineAnnealingLR rises again after T_max")
    elif name == "PiecewiseConstantDecay":
        bounds, values = [int(b) for b in cfg["boundaries"]], [float(v) for v in cfg["values"]]
        factors = [v / values[0] for v in values]
        code.schedule = (f"torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: {factors!r}"
                         f"[bisect.bisect_left({bounds!r}, step)])")  # Keras: values[i] while step <= boundaries[i]
    else:
        code.exact = False
        code.notes.append(f"learning-rate schedule {name} has no torch equivalent here; its initial rate is used")
    return _num(initial)


def _clipping(config: dict[str, Any], code: OptimizerCode) -> None:
    """Keras clips before weight decay and the update; clipnorm is per variable, global_clipnorm over all."""
    if config.get("clipnorm"):
        code.clip = ["for param in model.parameters():",
                     "    if param.grad is not None:  # Keras' clipnorm clips each variable on its own",
                     f"        torch.nn.utils.clip_grad_norm_(param, {_num(config['clipnorm'])})"]
    elif config.get("global_clipnorm"):
        code.clip = [f"torch.nn.utils.clip_grad_norm_(model.parameters(), {_num(config['global_clipnorm'])})"]
    elif config.get("clipvalue"):
        code.clip = [f"torch.nn.utils.clip_grad_value_(model.parameters(), {_num(config['clipvalue'])})"]
    if config.get("use_ema"):
        code.exact = False
        code.notes.append("use_ema (weights averaged into the model every ema_overwrite_frequency steps) is not "
                          "mapped; compare the raw weights")
    if config.get("gradient_accumulation_steps"):
        code.exact = False
        code.notes.append("gradient_accumulation_steps is not mapped (torch: call optimizer.step() every N batches)")


def _params(code: OptimizerCode, name: str, args: list[str]) -> None:
    code.torch = f"{name}({', '.join(args)})"
    code.build = [f"optimizer = torch.optim.{name}(model.parameters(), {', '.join(args)})"]


def _decay(config: dict[str, Any]) -> float:
    return float(config.get("weight_decay") or 0.0)


def sgd(config: dict[str, Any]) -> OptimizerCode:
    code = OptimizerCode(keras="", torch="", build=[])
    args = [f"lr={_lr(config, code)}"]
    momentum = float(config.get("momentum", 0.0))
    if momentum:
        args.append(f"momentum={_num(momentum)}")
        if config.get("nesterov"):
            args.append("nesterov=True")
    if _decay(config):
        args.append(f"weight_decay={_num(_decay(config))}")
        if momentum:
            code.exact = False
            code.notes.append("Keras' SGD weight_decay is decoupled (var -= var*wd*lr); torch's enters the momentum")
    if momentum and code.schedule:
        code.exact = False
        code.notes.append("with a schedule, Keras' momentum holds lr*grad and torch's holds grad")
    _params(code, "SGD", args)
    return code


def _adam_like(config: dict[str, Any], decoupled_default: float | None) -> OptimizerCode:
    code = OptimizerCode(keras="", torch="", build=[])
    args = [f"lr={_lr(config, code)}", f"betas=({_num(config.get('beta_1', 0.9))}, {_num(config.get('beta_2', 0.999))})",
            f"eps={_num(config.get('epsilon', 1e-7))}"]
    decay = _decay(config) if decoupled_default is None else float(config.get("weight_decay", decoupled_default) or 0)
    name = "AdamW" if decay or decoupled_default is not None else "Adam"
    if name == "AdamW":
        args.append(f"weight_decay={_num(decay)}")
    if config.get("amsgrad"):
        args.append("amsgrad=True")
    _params(code, name, args)
    code.hooks = ["keras_adam_epsilon"]
    code.build.append("optimizer.register_step_pre_hook(keras_adam_epsilon)")
    return code


def adam(config: dict[str, Any]) -> OptimizerCode:
    return _adam_like(config, None)


def adamw(config: dict[str, Any]) -> OptimizerCode:
    return _adam_like(config, 0.004)


def rmsprop(config: dict[str, Any]) -> OptimizerCode:
    code = OptimizerCode(keras="", torch="", build=[])
    args = [f"lr={_lr(config, code)}", f"alpha={_num(config.get('rho', 0.9))}",
            f"eps={_num(config.get('epsilon', 1e-7))}"]
    if float(config.get("momentum", 0.0)):
        args.append(f"momentum={_num(config['momentum'])}")
    if config.get("centered"):
        args.append("centered=True")
    if _decay(config):
        code.exact = False
        code.notes.append("Keras' RMSprop weight_decay is decoupled; torch's RMSprop adds it to the gradient")
        args.append(f"weight_decay={_num(_decay(config))}")
    code.exact = False
    code.notes.append("Keras adds epsilon inside the square root (sqrt(v + eps)), torch outside (sqrt(v) + eps): "
                      "equal while gradients are far above sqrt(eps)")
    _params(code, "RMSprop", args)
    return code


def adagrad(config: dict[str, Any]) -> OptimizerCode:
    code = OptimizerCode(keras="", torch="", build=[])
    args = [f"lr={_lr(config, code)}",
            f"initial_accumulator_value={_num(config.get('initial_accumulator_value', 0.1))}",
            f"eps={_num(config.get('epsilon', 1e-7))}"]
    if _decay(config):
        code.exact = False
        code.notes.append("Keras' Adagrad weight_decay is decoupled; torch's Adagrad adds it to the gradient")
        args.append(f"weight_decay={_num(_decay(config))}")
    code.notes.append("Keras adds epsilon inside the square root; with the accumulator starting at "
                      "initial_accumulator_value the difference is below float32 rounding")
    _params(code, "Adagrad", args)
    return code


OPTIMIZERS: dict[str, Callable[[dict[str, Any]], OptimizerCode]] = {
    "SGD": sgd, "Adam": adam, "AdamW": adamw, "RMSprop": rmsprop, "Adagrad": adagrad,
}

#: The step pre-hook that makes torch's Adam add epsilon where Keras does.
ADAM_EPSILON_HOOK = '''
def keras_adam_epsilon(optimizer, args, kwargs):
    """Keras adds epsilon before bias correction: torch's eps is epsilon / sqrt(1 - beta2**t) at step t."""
    for group in optimizer.param_groups:
        group.setdefault("keras_epsilon", group["eps"])
        state = optimizer.state.get(group["params"][0], {})
        step = int(state.get("step", 0)) + 1
        group["eps"] = group["keras_epsilon"] / (1 - group["betas"][1] ** step) ** 0.5
'''


def map_optimizer(spec: dict[str, Any]) -> OptimizerCode:
    """``{"class_name": "Adam", "config": {...}}`` (Keras ``get_config``) -> its torch code."""
    name = spec.get("class_name", "")
    if name not in OPTIMIZERS:
        raise InputError(f"Keras optimizer {name!r} has no torch mapping; mapped: {', '.join(OPTIMIZERS)}")
    config = spec.get("config", {})
    code = OPTIMIZERS[name](config)
    _clipping(config, code)
    shown = {k: v for k, v in config.items() if k in ("learning_rate", "momentum", "nesterov", "beta_1", "beta_2",
                                                      "epsilon", "rho", "centered", "amsgrad", "weight_decay",
                                                      "clipnorm", "clipvalue", "global_clipnorm",
                                                      "initial_accumulator_value") and v not in (None, False)}
    if isinstance(shown.get("learning_rate"), dict):
        shown["learning_rate"] = shown["learning_rate"].get("class_name")
    code.keras = f"{name}({', '.join(f'{k}={_num(v) if isinstance(v, float) else repr(v)}' for k, v in shown.items())})"
    return code


def parse_spec(text: str) -> dict[str, Any]:
    """``adam`` or ``sgd:learning_rate=0.1,momentum=0.9`` -> ``{"class_name", "config"}`` (Keras names)."""
    name, _, rest = text.partition(":")
    by_lower = {k.lower(): k for k in OPTIMIZERS}
    if name.lower() not in by_lower:
        raise InputError(f"--optimizer {name!r}: choose from {', '.join(OPTIMIZERS)} (Keras hyper-parameter names "
                         "after a colon, e.g. sgd:learning_rate=0.1,momentum=0.9)")
    config: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--optimizer: expected KEY=VALUE, got {item!r}")
        config[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value.strip())
        if isinstance(config[key.strip()], str):
            try:
                config[key.strip()] = float(value)
            except ValueError:
                raise InputError(f"--optimizer: {key}={value!r} is not a number or true/false") from None
    return {"class_name": by_lower[name.lower()], "config": config}
