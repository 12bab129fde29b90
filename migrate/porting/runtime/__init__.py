"""The helpers a generated ``model.py`` contains, as real Python: typed, linted and unit-tested
(tests/test_runtime_helpers.py), then copied into ``model.py`` with ``inspect.getsource``, only those the
model uses.

A helper imports only what ``model.py`` imports (``torch``, ``torch.nn.functional as F``, ``nn``) and
calls other helpers by their name: ``sources`` copies those too, before the caller. The pieces the ONNX
converters share (same padding, masked recurrent steps) live in ``migrate.core``, since
``migrate.conversion`` and ``migrate.porting`` do not import each other; they are listed here too.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from migrate.core.padding import pad_same, same_pads
from migrate.core.recurrent import pack_valid_steps, unpack_valid_steps
from migrate.porting.runtime.attention import KerasMultiHeadAttention
from migrate.porting.runtime.dropout import MaskDropout
from migrate.porting.runtime.normalization import KerasBatchNorm
from migrate.porting.runtime.pooling import keras_avg_pool_same
from migrate.porting.runtime.recurrent import KerasGRUResetBefore, keras_masked_cell_state, keras_masked_rnn

#: name -> the class or function copied into model.py.
HELPERS: dict[str, Any] = {helper.__name__: helper for helper in (
    KerasBatchNorm, MaskDropout, KerasMultiHeadAttention, KerasGRUResetBefore, keras_masked_rnn,
    keras_masked_cell_state, pack_valid_steps, unpack_valid_steps, keras_avg_pool_same, pad_same, same_pads)}


def sources(name: str) -> dict[str, str]:
    """The source of helper ``name`` and of every helper it calls, callees first."""
    found: dict[str, str] = {}

    def visit(current: str) -> None:
        if current in found:
            return
        text = inspect.getsource(HELPERS[current]).strip("\n")
        found[current] = ""  # visiting: a cycle ends here
        for other in HELPERS:
            if other != current and re.search(rf"\b{other}\(", text):
                visit(other)
        del found[current]
        found[current] = text

    visit(name)
    return found


__all__ = ["HELPERS", "KerasBatchNorm", "KerasGRUResetBefore", "KerasMultiHeadAttention", "MaskDropout",
           "keras_avg_pool_same", "keras_masked_cell_state", "keras_masked_rnn", "pack_valid_steps", "pad_same",
           "same_pads", "sources", "unpack_valid_steps"]
