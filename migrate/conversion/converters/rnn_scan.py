"""Recurrent cells as a ``scan`` over time, for traced runs (``torch.export``, ``torch.compile``).

``torch.lstm``/``torch.gru``/``torch.rnn_*`` (and ``nn.LSTM``, packed sequences included) cannot be
exported with a dynamic sequence length in torch 2.13: export decomposes them into a Python loop
over the time steps, which specialises the length to the example's. The recurrent modules
therefore call the native kernels when run eagerly and, when traced, this module: the input
projection of every step in one matmul, then the recurrent step as a ``scan``, which export keeps
as one higher-order op with the time dim dynamic. Same equations, torch gate order.

Each step returns carries and outputs as fresh tensors (``+ 0``, ``* 1``): Inductor refuses a
scan whose carry and output are the same tensor, or a ``clone`` ("might be aliasing").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _lstm_step(w_hh: torch.Tensor, b_hh: torch.Tensor):
    def step(carry: tuple[torch.Tensor, torch.Tensor], xp: torch.Tensor):
        h, c = carry
        i, f, g, o = (xp + F.linear(h, w_hh, b_hh)).chunk(4, -1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return (h_new + 0, c_new + 0), h_new * 1
    return step


def _gru_step(w_hh: torch.Tensor, b_hh: torch.Tensor):
    def step(h: torch.Tensor, xp: torch.Tensor):
        x_r, x_z, x_n = xp.chunk(3, -1)
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, -1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        h_new = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
        return h_new + 0, h_new * 1
    return step


def _rnn_step(w_hh: torch.Tensor, b_hh: torch.Tensor, act):
    def step(h: torch.Tensor, xp: torch.Tensor):
        h_new = act(xp + F.linear(h, w_hh, b_hh))
        return h_new + 0, h_new * 1
    return step


def _fresh(state: torch.Tensor) -> torch.Tensor:
    """A dense copy: scan wants carries that alias nothing and match its outputs' strides."""
    return state.clone(memory_format=torch.contiguous_format)


def scan_cell(kind: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, w_ih: torch.Tensor,
              w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One direction of ``kind`` (LSTM, GRU, RNN_TANH, RNN_RELU) over ``x`` [T, B, F] from states [B, H]:
    (outputs [T, B, H], h_n, c_n or None)."""
    from torch._higher_order_ops.scan import scan

    x_proj = F.linear(x, w_ih, b_ih)
    if kind == "LSTM":
        (h_n, c_n), y = scan(_lstm_step(w_hh, b_hh), (_fresh(h0), _fresh(c0)), x_proj)
        return y, h_n, c_n
    step = _gru_step(w_hh, b_hh) if kind == "GRU" else _rnn_step(
        w_hh, b_hh, torch.tanh if kind == "RNN_TANH" else torch.relu)
    h_n, y = scan(step, _fresh(h0), x_proj)
    return y, h_n, None
