"""TF 'same' padding, the one place its arithmetic lives.

Three users share it: the ONNX converters (``migrate/conversion/converters/padding.py``), the port's
emitters, which resolve static sizes to constants at port time, and ``model.py``, into which
``pad_same`` is copied by ``inspect.getsource`` for sizes known only at run time (timm's ``pad_same``
is the model). It lives in ``migrate.core`` because ``migrate.conversion`` and ``migrate.porting`` must
not import each other, and it imports only torch, as ``model.py`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def same_pads(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one dim for TF 'same' (ONNX ``SAME_UPPER``): the output has
    ceil(size / stride) elements and an odd total puts the extra element after. ``size`` may be a
    SymInt (under ``torch.export``/``torch.compile``): the result then stays symbolic, with no guard."""
    effective = (kernel - 1) * dilation + 1
    total = (-(-size // stride) - 1) * stride + effective - size  # at least effective - stride
    if effective < stride:  # only then can it be negative; without a max, export's solver simplifies it
        total = torch.sym_max(total, 0)
    return total // 2, total - total // 2


def static_same_pads(sizes: tuple[int | None, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                     dilation: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """(before, after) per spatial dim, or None when a strided dim's size is unknown (only ``pad_same``
    at run time knows it). With stride 1 the padding does not depend on the size."""
    if any(size is None and s != 1 for size, s in zip(sizes, stride)):
        return None
    return [same_pads(1 if size is None else size, k, s, d) for size, k, s, d in zip(sizes, kernel, stride, dilation)]


def pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
             value: float = 0.0) -> torch.Tensor:
    """``x`` (N, C, *spatial) padded for TF 'same' over its last ``len(kernel)`` dims, the pads computed
    from ``x.shape`` when it runs: a strided 'same' convolution or pooling on a dynamic size."""
    pads: list[int] = []
    rank = len(kernel)
    for axis in reversed(range(rank)):
        pads += same_pads(x.shape[x.dim() - rank + axis], kernel[axis], stride[axis], dilation[axis])
    return F.pad(x, pads, value=value)
