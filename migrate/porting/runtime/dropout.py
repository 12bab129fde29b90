"""``MaskDropout``: Keras' Dropout with ``noise_shape`` (one decision per mask element)."""

import torch
from torch import nn


class MaskDropout(nn.Dropout):
    """Dropout with one keep/drop decision per element of a broadcastable mask ``shape`` (Keras' noise_shape,
    e.g. EfficientNet's per-sample drop connect), scaled by 1/keep like Keras.

    An nn.Dropout, so that ``model.eval()`` and tools that set dropout ``p`` (training parity) reach it
    like any other dropout.
    """

    def forward(self, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        return x * torch.bernoulli(torch.full(shape, keep, dtype=x.dtype, device=x.device)) / keep
