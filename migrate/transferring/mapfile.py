"""The weights map (``--weights-map MAP.json``, ``OUT/weights_map.json``): Keras weights -> a module's state_dict.

Format (``format`` 2 extends the plain ``{"keras/path": "torch.key"}`` map, which still reads)::

    {"format": 2, "keep_layout": true,
     "weights": {"dense/kernel": {"torch": "head.weight", "transform": "permute(1,0)"},
                 "gru/gru_cell/bias": [{"torch": "rnn.bias_ih_l0", "transform": "split(0,2); reshape(15)"},
                                       {"torch": "rnn.bias_hh_l0", "transform": "split(1,2); reshape(15)"}],
                 "mha/query/kernel": {"torch": "attn.in_proj_weight", "transform": "...", "pack": [0, 3]}},
     "zeros": ["lstm.bias_hh_l0"]}

A list value splits one Keras weight into several tensors; ``"pack": [i, n]`` makes the value block ``i`` of
``n`` equal blocks along axis 0 of the tensor (several Keras weights packed into one, as in
``nn.MultiheadAttention.in_proj_weight``); ``"zeros"`` names tensors with no Keras counterpart, which must be
zero (``nn.LSTM``'s second bias). ``keep_layout`` says the module takes images channels-last, like Keras.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from migrate.core.errors import InputError
from migrate.porting import transforms

FORMAT = 2


def entries(raw: Any, where: str) -> tuple[dict[str, list[dict[str, Any]]], list[str], bool]:
    """``(keras path -> [{"torch", "transform", "pack"}], zero keys, keep_layout)`` from a parsed map."""
    table = raw.get("weights", raw) if isinstance(raw, dict) else None
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected {{\"keras/path\": \"torch.key\", ...}}")
    out: dict[str, list[dict[str, Any]]] = {}
    for keras, value in table.items():
        items = value if isinstance(value, list) else [value]
        parsed = []
        for item in items:
            item = {"torch": item} if isinstance(item, str) else item
            if not isinstance(item, dict) or not isinstance(item.get("torch"), str):
                raise InputError(f"{where}: {keras!r} maps to {value!r}; expected a torch key, "
                                 "{\"torch\": KEY, \"transform\": ...} or a list of those")
            pack = item.get("pack")
            if pack is not None and not (isinstance(pack, list) and len(pack) == 2 and 0 <= pack[0] < pack[1]):
                raise InputError(f"{where}: {keras!r}: \"pack\" is [index, parts], got {pack!r}")
            parsed.append({"torch": item["torch"], "transform": item.get("transform"), "pack": pack})
        out[keras] = parsed
    zeros = raw.get("zeros", []) if "weights" in raw else []
    return out, list(zeros), bool(raw.get("keep_layout")) if "weights" in raw else False


def read(path: str | Path) -> tuple[dict[str, list[dict[str, Any]]], list[str], bool]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--weights-map {path}: not a readable JSON file ({exc})") from None
    return entries(raw, f"--weights-map {path}")


def to_json(table: Mapping[str, list[dict[str, Any]]], zeros: list[str], keep_layout: bool) -> dict[str, Any]:
    """The file's content; a single plain target is written as the short form."""
    weights: dict[str, Any] = {}
    for keras, items in table.items():
        written = [{k: v for k, v in item.items() if v is not None} for item in items]
        weights[keras] = written[0] if len(written) == 1 else written
    return {"format": FORMAT, "keep_layout": keep_layout, "weights": weights, "zeros": sorted(zeros)}


def state_from(table: Mapping[str, list[dict[str, Any]]], zeros: list[str], arrays: Mapping[str, np.ndarray],
               shapes: Mapping[str, tuple[int, ...]], where: str = "--weights-map") -> dict[str, np.ndarray]:
    """torch key -> array built from the Keras ``arrays`` (by Keras path); ``shapes`` are the module's tensors.

    Raises InputError naming the first entry that does not fit, and every tensor no entry fills."""
    state: dict[str, np.ndarray] = {}
    packs: dict[str, dict[int, np.ndarray]] = {}
    for keras, items in table.items():
        if keras not in arrays:
            raise InputError(f"{where}: the Keras model has no weight {keras!r}; it has {', '.join(list(arrays)[:8])}...")
        for item in items:
            key = item["torch"]
            if key not in shapes:
                raise InputError(f"{where}: the module has no parameter or buffer {key!r}")
            value = transforms.apply(transforms.parse(item["transform"]), arrays[keras])
            want = tuple(shapes[key])
            if item["pack"] is not None:
                index, parts = item["pack"]
                block = (want[0] // parts, *want[1:])
                if value.shape != block:
                    raise InputError(f"{where}: Keras {keras} {value.shape} does not fit block {index} of {parts} of "
                                     f"{key} {want}")
                packs.setdefault(key, {})[index] = value
                continue
            if value.shape != want:
                raise InputError(f"{where}: Keras {keras} {value.shape} does not fit {key} {want}; give its "
                                 "transform, e.g. permute(1,0)")
            state[key] = value
    for key, blocks in packs.items():
        parts = len(blocks)
        if sorted(blocks) != list(range(parts)) or parts * blocks[0].shape[0] != shapes[key][0]:
            raise InputError(f"{where}: {key} is packed from blocks {sorted(blocks)}; every block of it is needed")
        state[key] = np.concatenate([blocks[i] for i in range(parts)], axis=0)
    for key in zeros:
        if key not in shapes:
            raise InputError(f"{where}: the module has no parameter or buffer {key!r} (listed in \"zeros\")")
        state[key] = np.zeros(shapes[key], np.float32)
    missing = [k for k in shapes if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise InputError(f"{where}: no Keras weight maps to {', '.join(missing[:5])}"
                         + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""))
    return state
