"""Deployment forms of a ported module: the same function, computed faster on CPU.

The readable modules are what parity is proven on, layer by layer. For inference,
``optimize_for_inference`` returns a copy rewritten in four exact ways:

* each ``Conv2d`` immediately followed by a ``BatchNorm2d`` (siblings in registration order,
  which is the order the modules run in this project) gets the BatchNorm's affine transform
  folded into its weight and bias, and the BatchNorm becomes an identity;
* padding moves into the convolution: a ``ZeroPad2d((0, 1, 0, 1))`` before a 'valid' conv, and
  TF 'same' padding (``Conv2dSame``) when it is one pixel heavier after than before, become a
  symmetric ``padding=`` of the conv with one zero row and column put in front of its kernel
  (a window that starts one pixel earlier and ignores that pixel is the asymmetric window); a
  symmetric 'same' padding becomes ``padding=`` as it is. No padded copy of the activations;
* ``ReLU6`` right after a conv runs in place;
* tensors flow in channels-last layout, which oneDNN's depthwise and 1x1 convolutions prefer.

For the generator only the last step applies (``Generator`` copied to channels-last weights).

``freeze_for_inference`` goes one step further on CPU: it traces that copy for one image size
and lets TorchScript freeze it and hand it to oneDNN (weights pre-packed once, activations in
oneDNN's blocked layout end to end), which is what onnxruntime does with the exported file. It
relies on ``torch.jit``, which torch 2.13 marks deprecated but ships; the module it returns
refuses inputs of another size rather than compute them with the traced padding.

Each step changes float32 rounding a little (a few 1e-6 on the classifier's logits); the parity
suite checks both forms against TF and keeps a wrongly absorbed padding as a negative control.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from models_pt.padding import Conv2dSame, same_padding


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


def lead_with_zeros(weight: torch.Tensor) -> torch.Tensor:
    """The kernel with one zero row on top and one zero column on the left: with one more pixel
    of symmetric padding it computes the window of padding (before p, after p + 1)."""
    return F.pad(weight, (1, 0, 1, 0))


class SameConvInference(nn.Module):
    """``Conv2dSame`` without a padded copy: the padding TF wants, computed per input size, is
    passed to the conv itself (symmetric), or to the zero-led kernel (one pixel heavier after)."""

    def __init__(self, conv: Conv2dSame):
        super().__init__()
        self.stride, self.dilation, self.groups = conv.stride, conv.dilation, conv.groups
        self.kernel_size = conv.kernel_size
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.weight_led = nn.Parameter(lead_with_zeros(conv.weight.detach()), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        if bottom == top + 1 and right == left + 1 and self.dilation == (1, 1):
            return F.conv2d(x, self.weight_led, self.bias, self.stride, (bottom, right), 1, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@torch.no_grad()
def absorb_padding(module: nn.Module) -> nn.Module:
    """Move explicit and TF 'same' padding into the convolutions, in place; returns module."""
    for parent in list(module.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            pad, conv = parent._modules[a], parent._modules[b]
            if (isinstance(pad, nn.ZeroPad2d) and tuple(pad.padding) == (0, 1, 0, 1) and type(conv) is nn.Conv2d
                    and conv.padding == (0, 0) and conv.dilation == (1, 1)):
                conv.weight = nn.Parameter(lead_with_zeros(conv.weight), requires_grad=False)
                conv.kernel_size, conv.padding = tuple(conv.weight.shape[-2:]), (1, 1)
                parent._modules[a] = nn.Identity()
        for name in names:
            if isinstance(parent._modules[name], Conv2dSame):
                parent._modules[name] = SameConvInference(parent._modules[name])
    return module


def relu6_in_place(module: nn.Module) -> nn.Module:
    """Make a ``ReLU6`` in place when the module that runs before it (identities skipped) is a
    convolution, whose fresh output nobody else holds; returns module."""
    convs = (nn.Conv2d, SameConvInference)
    for parent in module.modules():
        before = None
        for name, child in parent._modules.items():
            if isinstance(child, nn.ReLU6) and isinstance(before, convs):
                parent._modules[name] = nn.ReLU6(inplace=True)
            if not isinstance(child, nn.Identity):
                before = child
    return module


class ChannelsLast(nn.Module):
    """Runs the wrapped module on channels-last input; callers still pass ordinary NCHW tensors."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def optimize_for_inference(module: nn.Module) -> nn.Module:
    """A folded, padding-absorbed, channels-last copy in eval mode, for any input size; the
    original is left untouched. A generator (whose input is dlatents, not images) becomes a
    channels-last copy of itself, with its whole API (``style_vectors``, ``synthesis``, ...):
    its convs then produce channels-last activations, the same arithmetic in oneDNN's faster
    layout (images within ~3e-6 at 256 px)."""
    fast = copy.deepcopy(module).eval()
    if getattr(module, "kind", None) == "generator":
        return fast.to(memory_format=torch.channels_last)
    return ChannelsLast(relu6_in_place(absorb_padding(fold_batchnorm(fast)))).eval()


class FrozenForShape(nn.Module):
    """A frozen TorchScript module and the image shape it was traced for."""

    def __init__(self, scripted, shape: tuple[int, ...]):
        super().__init__()
        self.scripted, self.shape = scripted, tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"this frozen module was traced for images of shape [N, {', '.join(map(str, self.shape))}]"
                             f"; got {list(x.shape)}. Freeze it again for that size, or use "
                             f"optimize_for_inference (any size).")
        return self.scripted(x)


@torch.no_grad()
def freeze_for_inference(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """``optimize_for_inference`` traced on ``example`` (NCHW, any batch), frozen by TorchScript
    and handed to oneDNN. CPU only; valid for the example's channels and size, any batch size."""
    fast = relu6_in_place(absorb_padding(fold_batchnorm(copy.deepcopy(module).eval().cpu())))
    with warnings.catch_warnings():  # torch.jit's deprecation notices; see the module docstring
        warnings.simplefilter("ignore")
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(fast, example.cpu()).eval()))
    return FrozenForShape(scripted, example.shape[1:]).eval()
