"""``keras_avg_pool_same``: TF's 'same' average pooling where no torch pooling layer matches it."""

import torch
import torch.nn.functional as F

from migrate.core.padding import pad_same


def keras_avg_pool_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Average pooling with TF's 'same' padding: each window's mean over its real (unpadded) elements.

    torch's ``count_include_pad=False`` takes only symmetric padding of at most half the kernel; TF pads
    unevenly (more after), and on a dynamic size by an amount known only at run time (``pad_same``).
    ``x`` is channels-first. The divisor is the pooled all-ones plane, padded the same way.
    """
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[x.dim() - 3]
    dilation = (1,) * len(kernel)
    valid = pool(pad_same(torch.ones_like(x[:1, :1]), kernel, stride, dilation), kernel, stride)
    return pool(pad_same(x, kernel, stride, dilation), kernel, stride) / valid
