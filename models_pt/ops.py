"""Ops the PyTorch models share (NCHW): FIR resampling and leaky ReLU with gain. One place on the
PyTorch side, as ``models_tf/ops.py`` is on the TF side."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)
FIR = [1.0, 3.0, 3.0, 1.0]


def fir_kernel(gain: float) -> torch.Tensor:
    k = torch.tensor(FIR, dtype=torch.float64)
    k = torch.outer(k, k)
    return (k / k.sum() * gain).float()


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad0: int, pad1: int) -> torch.Tensor:
    """Pad (pad0 before, pad1 after, both spatial axes), then a depthwise FIR filter."""
    c = int(x.shape[1])  # a constant when traced for ONNX: the kernel needs a known shape
    x = F.pad(x, (pad0, pad1, pad0, pad1))
    return F.conv2d(x, kernel.to(x.dtype).expand(c, 1, *kernel.shape), groups=c)


def zero_upsample(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W], each sample at (2i, 2j), zeros between."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, 1, 0, 0, 0, 1))
    return x.reshape(n, c, 2 * h, 2 * w)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU 0.2 with gain sqrt(2), StyleGAN2's activation."""
    return F.leaky_relu(x, 0.2) * SQRT2
