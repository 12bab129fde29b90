"""Recurrent knowledge shared by the converter and the port: the gate table and Keras' masked-step algorithm.

Keras skips masked steps wherever they are (``Embedding(mask_zero=True)``, ``Masking``): the state is
carried through them and the output there repeats the previous one. The native kernels know nothing of
masks, so each sequence's valid steps are moved to the front (``pack_valid_steps``), the kernel runs
once over the packed sequence, and its outputs are gathered back to their steps (``unpack_valid_steps``).
The converter (``RecurrentLoop`` in ``migrate/conversion/converters/recurrent_loop.py``) calls these
functions; the port copies them into ``model.py`` with ``inspect.getsource``
(``migrate.porting.runtime.recurrent.keras_masked_rnn``). They live in ``migrate.core`` because
``migrate.conversion`` and ``migrate.porting`` must not import each other, and import only torch.
"""

from __future__ import annotations

import torch

#: Gate blocks per cell family in the weight matrices (Keras, ONNX and torch agree on the counts).
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def gates(kind: str) -> int:
    """Gate blocks of a cell ``kind``: a family (``LSTM``), Keras' ``SimpleRNN`` or a variant (``GRU_RESET_BEFORE``)."""
    return GATES["RNN" if kind == "SimpleRNN" else kind.split("_")[0]]


def pack_valid_steps(x: torch.Tensor, mask: torch.Tensor, time_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's valid steps moved to the front, in order, and the rest zeroed.

    ``x`` is (N, T, F) with ``time_dim=1`` or (T, N, F) with ``time_dim=0``; ``mask`` (bool) has x's first
    two dims. Returns the packed sequence and ``valid``, shaped like ``mask``: which packed steps hold data
    (the first ``mask.sum(time_dim)`` of each sequence).
    """
    order = torch.argsort((~mask).to(torch.int8), dim=time_dim, stable=True)  # valid steps first, in order
    packed = torch.gather(x, time_dim, order.unsqueeze(-1).expand_as(x))
    steps = torch.arange(x.shape[time_dim], device=x.device).unsqueeze(1 - time_dim)
    valid = steps < mask.sum(time_dim, keepdim=True)
    return torch.where(valid.unsqueeze(-1), packed, torch.zeros_like(packed)), valid


def unpack_valid_steps(outputs: torch.Tensor, mask: torch.Tensor, zero_masked: bool = False,
                       h0: torch.Tensor | None = None, out0: torch.Tensor | None = None,
                       time_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-step outputs Keras gives, from a kernel's ``outputs`` over ``pack_valid_steps``' sequence.

    Each step gets the output of the latest valid step so far; before the first valid step, ``out0``
    (N, H) or zeros; with ``zero_masked`` (Keras' ``zero_output_for_mask``), zeros at every masked step.
    Also returns the final h: the output of each sequence's last valid step, ``h0`` (or zeros) where none is.
    """
    latest = torch.cumsum(mask.to(torch.int64), time_dim) - 1  # where the latest valid step's output is
    index = latest.clamp(min=0).unsqueeze(-1).expand(*latest.shape, outputs.shape[-1])
    held = torch.gather(outputs, time_dim, index)
    started = (latest >= 0).unsqueeze(-1)
    last = held.select(time_dim, -1)
    final = torch.where(started.select(time_dim, -1), last, torch.zeros_like(last) if h0 is None else h0)
    if zero_masked:
        return torch.where(mask.unsqueeze(-1), held, torch.zeros_like(held)), final
    before = torch.zeros_like(held) if out0 is None else out0.unsqueeze(time_dim).expand_as(held)
    return torch.where(started, held, before), final
