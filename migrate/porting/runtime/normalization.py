"""``KerasBatchNorm``: BatchNormalization trained the way Keras trains it."""

import torch
import torch.nn.functional as F
from torch import nn


class KerasBatchNorm(nn.BatchNorm2d):
    """Batch normalization over dim 1 of an (N, C, ...) tensor, trained the way Keras trains it.

    Keras updates the moving variance with the biased batch variance; nn.BatchNorm uses the unbiased one.
    In training, one F.batch_norm call computes the batch statistics once (one pass over x) and writes
    them, with momentum 1, into fresh per-channel tensors; the moving averages then take Keras' update
    (the variance scaled back by (n - 1) / n). Eval mode and gradients are torch's own F.batch_norm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        mean, var = torch.zeros_like(self.running_mean), torch.zeros_like(self.running_var)
        y = F.batch_norm(x, mean, var, self.weight, self.bias, True, 1.0, self.eps)
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * ((n - 1) / n), self.momentum)
        return y
