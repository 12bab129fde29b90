"""Units of a module as it runs: which submodule holds each tensor, in what order they are called, their outputs.

A unit is the deepest submodule that forward actually calls and that holds (itself or through children that
are never called, like ``nn.MultiheadAttention.out_proj``) some of the module's parameters or buffers.
Forward pre-hooks give the call order, forward hooks the first input and output of each call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Unit:
    path: str  # module path in the model ('' for the model itself)
    kind: str  # the module's class name
    order: int  # index of its first call
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name relative to path -> shape
    output: np.ndarray | None = None
    input: np.ndarray | None = None

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


def first_tensor(value: Any) -> np.ndarray | None:
    """The first tensor in a (nested) tuple/list/dict output, as a float64-free numpy copy."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        return first_tensor(list(value.values()))
    return None


def run_hooked(module: Any, args: list[Any]) -> tuple[dict[str, int], dict[str, np.ndarray], dict[str, np.ndarray],
                                                        list[np.ndarray]]:
    """``module(*args)`` in eval mode: call order, first output and first input per module path, and the outputs."""
    import torch

    order: dict[str, int] = {}
    outputs: dict[str, np.ndarray] = {}
    inputs: dict[str, np.ndarray] = {}
    handles = []
    for path, sub in module.named_modules():
        def pre(_m: Any, args_in: Any, path: str = path) -> None:
            if path not in order:
                order[path] = len(order)
                found = first_tensor(args_in)
                if found is not None:
                    inputs[path] = found

        def post(_m: Any, _i: Any, out: Any, path: str = path) -> None:
            if path not in outputs:
                found = first_tensor(out)
                if found is not None:
                    outputs[path] = found
        handles += [sub.register_forward_pre_hook(pre), sub.register_forward_hook(post)]
    module.eval()
    try:
        with torch.no_grad():
            result = module(*args)
    finally:
        for h in handles:
            h.remove()
    flat = result if isinstance(result, (tuple, list)) else (result,)
    return order, outputs, inputs, [first_tensor(r) for r in flat]


def units(module: Any, order: dict[str, int], outputs: dict[str, np.ndarray],
          inputs: dict[str, np.ndarray]) -> tuple[list[Unit], list[str]]:
    """The units in call order, and the state keys no called module holds (parameters forward never uses)."""
    found: dict[str, Unit] = {}
    unused = []
    kinds = {path: type(sub).__name__ for path, sub in module.named_modules()}
    for key, tensor in module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        owners = [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]
        owner = next((p for p in owners if p in order), None)
        if owner is None:
            unused.append(key)
            continue
        unit = found.setdefault(owner, Unit(owner, kinds[owner], order[owner], output=outputs.get(owner),
                                            input=inputs.get(owner)))
        unit.tensors[key[len(owner) + 1:] if owner else key] = tuple(tensor.shape)
    return sorted(found.values(), key=lambda u: u.order), unused
