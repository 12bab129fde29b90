"""Recurrent helpers: Keras' masked steps over torch's native kernels, and ``GRU(reset_after=False)``."""

import torch
import torch.nn.functional as F
from torch import nn

from migrate.core.recurrent import pack_valid_steps, unpack_valid_steps


def keras_masked_rnn(rnn: nn.RNNBase, x: torch.Tensor, mask: torch.Tensor,
                     zero_masked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``rnn`` (batch_first, zero initial state) over a masked sequence the way Keras does.

    Keras skips masked steps, wherever they are: the state is carried through them and the output there
    repeats the previous one (zeros before the first valid step; zeros at every masked step with
    ``zero_masked``). The native kernel runs once over each sequence's valid steps moved to the front.
    ``x`` (N, T, F), ``mask`` (N, T) bool; returns the outputs (N, T, H) and the final h (N, H).
    """
    packed, _ = pack_valid_steps(x, mask)
    outputs, _ = rnn(packed)
    return unpack_valid_steps(outputs, mask, zero_masked)


def keras_masked_cell_state(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The cell state a masked Keras LSTM ends with: the state after each sequence's last valid step."""
    h = c = x.new_zeros(x.shape[0], lstm.hidden_size)
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    for t in range(x.shape[1]):
        h_t, c_t = torch.lstm_cell(x[:, t], (h, c), *weights)
        valid = mask[:, t, None]
        h, c = torch.where(valid, h_t, h), torch.where(valid, c_t, c)
    return c


class KerasGRUResetBefore(nn.Module):
    """Keras' ``GRU(reset_after=False)`` (Keras 2's default), which ``nn.GRU`` cannot express.

    The reset gate scales h before the recurrent matmul: ``h~ = tanh(W_h x + b_h + U_h (r * h))``, where torch
    applies it after (``r * (U_n h + b_hn)``). Rows of ``weight_ih`` (3H, in) and ``weight_hh`` (3H, H) and the one
    ``bias`` (3H) are in Keras' gate order z, r, h. Called like ``nn.GRU(batch_first=True)``:
    ``(x (N, T, in), h0 (1, N, H) or None) -> (outputs (N, T, H), final h (1, N, H))``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.zeros(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.zeros(3 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.zeros(3 * hidden_size)) if bias else None

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        units = self.hidden_size
        h = x.new_zeros(x.shape[0], units) if h0 is None else h0[0]
        inputs = F.linear(x, self.weight_ih, self.bias)  # the input projections of all steps at once
        recurrent_zr, recurrent_h = self.weight_hh.split([2 * units, units])
        outputs = []
        for t in range(x.shape[1]):
            z, r = torch.sigmoid(inputs[:, t, : 2 * units] + F.linear(h, recurrent_zr)).chunk(2, dim=-1)
            candidate = torch.tanh(inputs[:, t, 2 * units :] + F.linear(r * h, recurrent_h))
            h = z * h + (1 - z) * candidate
            outputs.append(h)
        return torch.stack(outputs, dim=1), h.unsqueeze(0)
