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
``fuse_generator`` goes further for the AttFind sweep on a GPU: fewer passes over the
activations after each conv, and optionally each up-sampling conv and its FIR filter as one
transposed conv (``composite_up``); docs/benchmarks.md has what each pays on an H200.

``freeze_for_inference`` goes one step further on CPU: it exports that copy with
``torch.export`` for one image shape and compiles it ahead of time with AOTInductor, weights
frozen into the compiled code (``freezing``: BatchNorm-folded weights pre-packed for oneDNN
once, ReLU6 fused into the convolutions). It needs a C++ compiler while it compiles, and
compiles again for each new batch size; the module it returns refuses inputs of another image
size, dtype or device rather than compute them with the padding of the size it was compiled
for.

Each step changes float32 rounding a little (a few 1e-6 on the classifier's logits); the parity
suite checks both forms against TF and keeps a wrongly absorbed padding as a negative control.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading

import torch
import torch.nn.functional as F
from torch import nn

from models_pt.generator import ModulatedConv, ToRGB
from models_pt.ops import SQRT2
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


def _require_cpp_compiler() -> None:
    """AOTInductor builds C++; say so plainly when no compiler is there (before any work)."""
    import torch._inductor.config as inductor_config

    names = inductor_config.cpp.cxx
    names = [n for n in (names if isinstance(names, (list, tuple)) else (names,)) if n]
    if not any(shutil.which(n) for n in names):
        raise RuntimeError(
            f"freeze_for_inference compiles the classifier to C++ with AOTInductor and found no C++ "
            f"compiler (looked for {', '.join(names) or 'none configured'}; set $CXX to choose one). "
            f"Install g++ (e.g. apt-get install g++), or use optimize_for_inference, which needs none.")


class _Packages:
    """The eager module and its AOTInductor builds, one per batch size; not an ``nn.Module``,
    so the eager copy's weights are not parameters of the frozen form."""

    def __init__(self, fast: nn.Module, shape: tuple[int, ...], dtype: torch.dtype):
        self.fast, self.shape, self.dtype = fast, shape, dtype
        self.by_batch: dict[int, object] = {}
        self.lock = threading.Lock()

    def get(self, batch: int):
        runner = self.by_batch.get(batch)
        if runner is None:
            with self.lock:
                runner = self.by_batch.get(batch)
                if runner is None:
                    runner = self.by_batch[batch] = self.build(batch)
        return runner

    @torch.no_grad()
    def build(self, batch: int):
        from torch._inductor import aoti_compile_and_package, aoti_load_package

        _require_cpp_compiler()
        program = torch.export.export(self.fast, (torch.zeros((batch, *self.shape), dtype=self.dtype),))
        # the package is written to, and loaded from, a temp folder that is then removed: the
        # loaded code and constants stay in memory. Intermediate builds go to Inductor's cache
        # ($TORCHINDUCTOR_CACHE_DIR, by default <tmp>/torchinductor_<user>), not the working tree.
        tmp = tempfile.mkdtemp(prefix="freeze_for_inference-")
        try:
            path = aoti_compile_and_package(program, package_path=os.path.join(tmp, "classifier.pt2"),
                                            inductor_configs={"freezing": True})
            runner = aoti_load_package(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return runner


class FrozenForShape(nn.Module):
    """The classifier compiled by AOTInductor for one image shape and dtype, on CPU; one build
    per batch size, made on that batch size's first call."""

    def __init__(self, fast: nn.Module, example: torch.Tensor):
        super().__init__()
        self.shape, self.dtype = tuple(example.shape[1:]), example.dtype
        self._packages = _Packages(fast, self.shape, self.dtype)
        self._packages.get(example.shape[0])

    @property
    def batch_sizes(self) -> list[int]:
        """The batch sizes compiled so far."""
        return sorted(self._packages.by_batch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape or x.dtype != self.dtype or x.device.type != "cpu":
            raise ValueError(f"this frozen module was compiled for {self.dtype} CPU images of shape "
                             f"[N, {', '.join(map(str, self.shape))}]; got {x.dtype} on {x.device}, "
                             f"shape {list(x.shape)}. Freeze it again for that input, or use "
                             f"optimize_for_inference (any size).")
        # the compiled code assumes the example's layout (contiguous NCHW) and its batch size
        return self._packages.get(x.shape[0])(x.contiguous())


def freeze_for_inference(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """``optimize_for_inference`` compiled ahead of time for CPU: ``torch.export`` on an input
    of ``example``'s shape (NCHW), AOTInductor with frozen weights. The result takes that
    image size and dtype (float32 CPU tensors), any batch size, and returns the logits.

    Compiling costs seconds and needs a C++ compiler (g++, or ``$CXX``; a ``RuntimeError``
    says so when there is none): 11-14 s for the 256 px MobileNetV1 on 2 cores with Inductor's
    cache empty, 5-9 s with it warm. That is paid here for the example's batch size, and again
    on the first call with each other batch size (each build holds its own copy of the frozen
    weights); warm every batch size you serve before timing or serving. ``module`` is left
    untouched; nothing is written outside the temp folder and Inductor's cache."""
    if example.dtype != torch.float32:
        raise ValueError(f"freeze_for_inference builds a float32 CPU form; the example is {example.dtype}")
    _require_cpp_compiler()
    fast = relu6_in_place(absorb_padding(fold_batchnorm(copy.deepcopy(module).eval().cpu())))
    fast = ChannelsLast(fast).eval()
    return FrozenForShape(fast, example.detach().cpu()).eval()


class FusedModulatedConv(ModulatedConv):
    """``ModulatedConv`` with fewer passes over its output (same parameters, same function).

    The readable form makes up to six passes over the conv's output after the conv itself (the
    up-sampling FIR's padded copy, demodulation, noise, bias, leaky ReLU, its gain). Here the
    FIR's padding is the depthwise conv's own ``padding=``, and demodulation, noise and bias
    become one ``addcmul`` with the gain sqrt(2) folded into both factors (leaky ReLU is
    positively homogeneous: lrelu(g * a) = g * lrelu(a) for g > 0), followed by an in-place
    leaky ReLU: two passes. Float32 rounding differs from the readable form's by an ulp or so
    per step."""

    def forward(self, x: torch.Tensor, style: torch.Tensor, fir: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight * self.scale
        x = x * style[:, :, None, None]
        if self.up and getattr(self, "composite_up", False):
            y = F.conv_transpose2d(x, composite_up_kernel(w, fir), stride=2, padding=2)
        elif self.up:
            y = F.conv_transpose2d(x, w.flip([2, 3]).transpose(0, 1), stride=2)
            c = int(y.shape[1])
            y = F.conv2d(y, fir.to(y.dtype).expand(c, 1, *fir.shape), padding=1, groups=c)
        else:
            y = F.conv2d(x, w, padding=1)
        d = torch.rsqrt(style.square() @ w.square().sum(dim=(2, 3)).T + 1e-8) * SQRT2
        shift = ((self.noise if noise is None else noise) * self.noise_strength
                 + self.bias[None, :, None, None]) * SQRT2
        shift = shift.contiguous(memory_format=torch.channels_last)   # the output takes its layout
        return F.leaky_relu(torch.addcmul(shift, y, d[:, :, None, None]), 0.2, inplace=True)


def composite_up_kernel(w: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """The up-sampling conv and its FIR filter as one stride-2 transposed conv: ``w`` ``[out, in,
    3, 3]`` (cross-correlation orientation) -> ``[in, out, 6, 6]`` for ``conv_transpose2d(x, k,
    stride=2, padding=2)``. The transposed conv with kernel K (``w`` flipped) then padding (1, 1)
    and the 4x4 FIR f give y[r] = sum_i x[i] sum_t f[t] K[r - 2i + t - 1]: a transposed conv
    whose 6-tap kernel is K, zero-padded by 3, cross-correlated with f, cropped by 2 each side."""
    k = w.flip([2, 3]).transpose(0, 1)                                          # [in, out, 3, 3]
    cin, cout = k.shape[:2]
    k = F.conv2d(F.pad(k.reshape(cin * cout, 1, 3, 3), (3, 3, 3, 3)), fir.to(k.dtype)[None, None])
    return k.reshape(cin, cout, 6, 6)


class FusedToRGB(ToRGB):
    """``ToRGB`` with the style applied to the 3-row weight instead of the activations: one
    batched matrix product reads the activations once, where the readable form writes a
    modulated copy of them first."""

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weight = style[:, None, :] * (self.weight[:, :, 0, 0] * self.scale)         # [N, 3, C]
        if x.is_contiguous(memory_format=torch.channels_last):
            y = torch.matmul(x.permute(0, 2, 3, 1).reshape(n, h * w, c), weight.transpose(1, 2))
            y = y.reshape(-1, h, w, 3).permute(0, 3, 1, 2)                             # channels-last
        else:
            y = torch.matmul(weight, x.reshape(n, c, h * w)).reshape(-1, 3, h, w)
        return y + self.bias[None, :, None, None]


def fuse_generator(generator: nn.Module, composite_up: bool = False) -> nn.Module:
    """A copy of a ``Generator`` whose convs and ToRGBs make fewer passes over their activations
    (``FusedModulatedConv``, ``FusedToRGB``), on channels-last tensors, for the AttFind sweep on
    a GPU: 1.19x the readable form in float32 on an H200; ``composite_up`` also removes the
    depthwise FIR convs that take most of a TF32 sweep's time there (docs/benchmarks.md). Same
    parameters and API;
    images within float32 rounding of the readable form (``parity_tests``). Inference only: the
    in-place leaky ReLU keeps no input for a backward pass. The original is left untouched."""
    fused = copy.deepcopy(generator).eval()
    for m in fused.modules():
        if type(m) is ModulatedConv:
            m.__class__ = FusedModulatedConv
            m.composite_up = composite_up
        elif type(m) is ToRGB:
            m.__class__ = FusedToRGB
    return fused.to(memory_format=torch.channels_last)
