"""Deployment form of a ported module: BatchNorm folded into the conv before it, channels-last.

The readable module is what parity is proven on, layer by layer. For inference on CPU,
``optimize_for_inference`` returns a copy that computes the same function faster: each
``Conv2d`` immediately followed by a ``BatchNorm2d`` (in registration order, which is the
order the modules run in this project) gets the BatchNorm's affine transform folded into its
weight and bias, and the BatchNorm becomes an identity; tensors flow in channels-last layout,
which oneDNN's depthwise and 1x1 convolutions prefer. Folding changes float32 rounding a little
(a few 1e-6 on the classifier's logits); the parity suite checks the folded copy against TF too.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every (Conv2d, BatchNorm2d) pair of siblings into the conv, in place; returns module."""
    for parent in module.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            shift = bn.bias - bn.running_mean * scale
            if conv.bias is None:
                conv.bias = nn.Parameter(shift)
            else:
                conv.bias.mul_(scale).add_(shift)
            parent._modules[b] = nn.Identity()
    return module


class ChannelsLast(nn.Module):
    """Runs the wrapped module on channels-last input; callers still pass ordinary NCHW tensors."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def optimize_for_inference(module: nn.Module) -> nn.Module:
    """A folded, channels-last copy in eval mode; the original is left untouched."""
    return ChannelsLast(fold_batchnorm(copy.deepcopy(module).eval())).eval()
