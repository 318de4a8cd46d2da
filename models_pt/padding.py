"""TensorFlow 'same' padding, exact for any input size, kernel, stride and dilation.

TF pads so that ``out = ceil(in / stride)``; when the total padding is odd, the extra pixel goes
after (bottom/right). PyTorch's ``padding=`` is symmetric, so a stride-2 3x3 conv on an even
input differs from TF by one pixel of shift unless padded like this.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding TF's 'same' applies along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF 'same' padding computed from the input's size at run time.

    Subclassing keeps the state-dict keys (``weight``, ``bias``) those of a plain conv."""

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)
