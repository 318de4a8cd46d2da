"""Deliberately wrong ports: the negative controls that prove ``verify`` can fail.

Each control takes a correctly converted PyTorch module and breaks it the way a hand port goes
wrong (PyTorch's default BatchNorm epsilon, symmetric padding, an unflipped kernel, a missing
style ``+1``, ...), or by an amount too small to see in a picture (a BatchNorm epsilon of
1.001e-3, one bias off by 1e-4 relative, one channel of one kernel scaled by 1.001). The
*precision* controls break only the float32 computation, the way a port loses precision
without changing what it computes: one layer's weights rounded to bfloat16, one layer run with
TF32 operands (weights and inputs rounded to a 10-bit mantissa, what cuDNN and cuBLAS do with
TF32 on), a constant held in float16, one layer's output kept in float16 (a ``.half()`` whose
cast back to float32 comes a layer late). A float64 run cannot see them, by construction (they
act on float32 tensors only): they are what the float32 bound is for.

``broken`` yields a broken *copy* (weights edited, hooks added, or a module-level function
patched for the duration); the original is never touched. ``parity_tests/test_verdict.py`` and
``bench/verdict_sweep.py`` judge every control with the same ``porting.verdict.judge_module``
that judges the real port.

PyTorch only; nothing here imports TensorFlow.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models_pt import resnet_d as ptd

GAN = ("generator", "encoder", "discriminator")


@dataclass(frozen=True)
class Control:
    name: str
    kinds: tuple[str, ...]
    small: bool                     # an error that is small in float32 (would hide under a loose bar)
    what: str
    apply: Callable[[nn.Module, contextlib.ExitStack], None]   # edits the copy, may enter patches
    applies: Callable[[int], bool] = lambda size: True         # input sizes where it is an error at all
    float32_only: bool = False      # a precision fault: float32 runs only, float64 cannot see it


@contextlib.contextmanager
def broken(control: Control, module: nn.Module):
    """A deep copy of ``module`` broken by ``control``; patches end with the block."""
    if module.kind not in control.kinds:
        raise ValueError(f"control {control.name!r} does not apply to a {module.kind}")
    twin = copy.deepcopy(module)
    with contextlib.ExitStack() as stack, torch.no_grad():
        control.apply(twin, stack)
        yield twin


def for_kind(kind: str, size: int | None = None) -> list[Control]:
    """The controls of a model kind (at input ``size``: those that are an error at that size)."""
    return [c for c in CONTROLS if kind in c.kinds and (size is None or c.applies(size))]


# ----------------------------------------------------------------- which tensor the generic controls hit

def middle_target(module: nn.Module) -> tuple[nn.Module, str]:
    """A layer in the middle of the network with a weight and (where it has one) a bias: the
    generic controls (1% tensor, 1e-4 bias, one channel x 1.001) hit it."""
    if module.kind == "classifier":
        return module.blocks[len(module.blocks) // 2].pw, "blocks.%d.pw" % (len(module.blocks) // 2)
    if module.kind == "generator":
        # Not a modulated conv's kernel: demodulation divides each output channel by its own
        # norm, so scaling a whole kernel, or one output channel of it, changes nothing at all
        # (measured: the images are bit-identical). The style dense layer that feeds the
        # middle conv has no such normalisation.
        names = list(module.conv_styles)
        name = names[len(names) // 2]
        return module.conv_styles[name], f"conv_styles.{name}"
    names = list(module.blocks)
    name = names[len(names) // 2]
    return module.blocks[name].conv0, f"blocks.{name}.conv0"


def _bias_layer(module: nn.Module) -> nn.Module:
    # The classifier's only bias is its head's (every other layer's offset is a BatchNorm beta);
    # the generator's: the middle modulated conv's (added after demodulation, so it shows).
    if module.kind == "classifier":
        return module.head.conv
    if module.kind == "generator":
        names = list(module.convs)
        return module.convs[names[len(names) // 2]]
    return middle_target(module)[0]


def _scale_tensor(m, _stack):
    middle_target(m)[0].weight.mul_(1.01)


def _scale_bias(m, _stack):
    _bias_layer(m).bias.mul_(1 + 1e-4)


def _scale_channel(m, _stack):
    layer = middle_target(m)[0]
    layer.weight[layer.weight.shape[0] // 2].mul_(1.001)


# ----------------------------------------------------------------- classifier

def _bn_eps(value: float):
    def apply(m, _stack):
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.eps = value
    return apply


def _stem_symmetric(m, _stack):
    old = m.stem.conv
    sym = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=2, padding=1, bias=False)
    sym.weight = old.weight
    m.stem.conv = sym


def _strided_pad_wrong_side(m, _stack):
    for block in m.blocks:
        if isinstance(block.pad, nn.ZeroPad2d):
            block.pad = nn.ZeroPad2d((1, 0, 1, 0))      # the same amount, before instead of after


def _kernels_transposed(m, _stack):
    for conv in m.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            conv.weight.copy_(conv.weight.transpose(2, 3).clone())   # [out, in, kw, kh]: fits every shape


# ----------------------------------------------------------------- generator

def _unflip_upsampling(m, _stack):
    for conv in m.convs.values():
        if conv.up:
            conv.weight.copy_(conv.weight.flip([2, 3]))


def _swap_noise(m, _stack):
    for r in m.resolutions[1:]:
        a, b = m.convs[f"b{r}_conv0"], m.convs[f"b{r}_conv1"]
        a.noise, b.noise = b.noise.clone(), a.noise.clone()


def _style_offset(delta: float):
    def apply(m, _stack):
        for dense in list(m.conv_styles.values()) + list(m.rgb_styles.values()):
            dense.bias.add_(delta)
    return apply


# ----------------------------------------------------------------- encoder and discriminator

def _no_residual_scale(_m, stack):
    stack.enter_context(mock.patch.object(
        ptd.Block, "forward", lambda self, x, fir: self.conv1(self.conv0(x, fir), fir) + self.skip(x, fir)))


def _fir_wrong_side(_m, stack):
    real = ptd.fir_filter
    stack.enter_context(mock.patch.object(ptd, "fir_filter", lambda x, k, p0, p1: real(x, k, p1 + 1, p0 - 1)))


def _no_mbstd(_m, stack):
    stack.enter_context(mock.patch.object(
        ptd, "minibatch_stddev", lambda x, group: torch.cat([x, torch.zeros_like(x[:, :1])], 1)))


# ----------------------------------------------------------------- precision (float32 only)

def _bfloat16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(t.dtype)


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """Round a float32 tensor to TF32's 10-bit mantissa (to nearest, ties away), as Ampere's
    tensor cores read their operands."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32).view_as(t)


def _float32_weight(layer: nn.Module, stack: contextlib.ExitStack, rounded: Callable) -> None:
    """For float32 calls only, ``layer``'s weight is ``rounded(weight)`` during its forward."""
    saved = {}

    def pre(module, args):
        if args and torch.is_tensor(args[0]) and args[0].dtype == torch.float32:
            saved["w"] = module.weight.data
            module.weight.data = rounded(saved["w"])

    def post(module, _args, _out):
        if "w" in saved:
            module.weight.data = saved.pop("w")

    for h in (layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)):
        stack.callback(h.remove)


def _bf16_weights(m, stack):
    _float32_weight(middle_target(m)[0], stack, _bfloat16)


def _tf32_layer(m, stack):
    layer = middle_target(m)[0]
    _float32_weight(layer, stack, _tf32)

    def operands(_module, args):
        if args and torch.is_tensor(args[0]) and args[0].dtype == torch.float32:
            return (_tf32(args[0]),) + tuple(args[1:])

    stack.callback(layer.register_forward_pre_hook(operands).remove)


def _half_output(m, stack):
    def hook(_module, _args, out):
        if torch.is_tensor(out) and out.dtype == torch.float32:
            return out.half().float()

    stack.callback(middle_target(m)[0].register_forward_hook(hook).remove)


def _float16_constant(m, stack):
    """The classifier: every BatchNorm epsilon as float16 holds it (1e-3 -> 1.0004e-3); the
    others: the activation gain sqrt(2) as float16 holds it (1.41406 for 1.41421)."""
    if m.kind == "classifier":
        eps16 = float(np.float16(m.config["bn_epsilon"]))
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                true = bn.eps

                def pre(module, args, true=true):
                    module.eps = eps16 if args[0].dtype == torch.float32 else true
                stack.callback(bn.register_forward_pre_hook(pre).remove)
        return
    import models_pt.generator as ptg
    from models_pt.ops import SQRT2

    gain16 = float(np.float16(SQRT2))

    def lrelu(x):
        return F.leaky_relu(x, 0.2) * (gain16 if x.dtype == torch.float32 else SQRT2)

    module = ptg if m.kind == "generator" else ptd
    stack.enter_context(mock.patch.object(module, "lrelu", lrelu))


ALL = ("classifier",) + GAN
CONTROLS = [
    Control("bn_eps_pytorch_default", ("classifier",), False,
            "every BatchNorm with PyTorch's default epsilon 1e-5 instead of Keras' 1e-3", _bn_eps(1e-5)),
    Control("bn_eps_1.001e-3", ("classifier",), True,
            "every BatchNorm with epsilon 1.001e-3 instead of 1e-3", _bn_eps(1.001e-3)),
    Control("stem_symmetric_padding", ("classifier",), False,
            "the stride-2 stem conv padded symmetrically (PyTorch's padding=1) instead of TF 'same'",
            _stem_symmetric,
            # At an odd size TF 'same' pads a stride-2 3x3 conv by 1 on both sides: no error there.
            applies=lambda size: size % 2 == 0),
    Control("strided_padding_wrong_side", ("classifier",), False,
            "the strided depthwise convs padded before instead of after", _strided_pad_wrong_side),
    Control("kernel_spatially_transposed", ("classifier",), False,
            "every 3x3 kernel with its spatial axes swapped", _kernels_transposed),
    Control("upsampling_kernel_unflipped", ("generator",), False,
            "the transposed-conv kernels of Conv0Up used without the spatial flip", _unflip_upsampling),
    Control("noise_constants_swapped", ("generator",), False,
            "each block's two noise constants swapped", _swap_noise),
    Control("style_plus_one_doubled", ("generator",), False,
            "the style dense layers' +1 added twice", _style_offset(1.0)),
    Control("style_plus_one_missing", ("generator",), False,
            "the style dense layers' +1 left out", _style_offset(-1.0)),
    Control("residual_scale_missing", ("encoder", "discriminator"), False,
            "the residual sum not scaled by 1/sqrt(2)", _no_residual_scale),
    Control("fir_padding_wrong_side", ("encoder", "discriminator"), False,
            "the FIR down-sampling padded on the wrong side", _fir_wrong_side),
    Control("minibatch_stddev_missing", ("discriminator",), False,
            "minibatch standard deviation left out (a zero channel instead)", _no_mbstd),
    Control("tensor_1pct", ALL, False,
            "one weight tensor in the middle of the network scaled by 1.01", _scale_tensor),
    Control("bias_1e-4", ALL, True,
            "one layer's bias off by 1e-4 relative (the classifier's: its head's)", _scale_bias),
    Control("kernel_channel_1.001", ALL, True,
            "one output channel of one kernel in the middle of the network scaled by 1.001", _scale_channel),
    Control("weights_bfloat16", ALL, True,
            "float32 runs: one layer's weights (the middle one of the generic controls) rounded to bfloat16",
            _bf16_weights, float32_only=True),
    Control("tf32_layer", ALL, True,
            "float32 runs: one layer with TF32 operands (weights and input rounded to a 10-bit mantissa)",
            _tf32_layer, float32_only=True),
    Control("float16_constant", ALL, True,
            "float32 runs: a constant held in float16 (classifier: BatchNorm epsilon; the others: the "
            "activation gain sqrt(2))", _float16_constant, float32_only=True),
    Control("float16_activation", ALL, True,
            "float32 runs: one layer's output kept in float16 (a cast back to float32 a layer late)",
            _half_output, float32_only=True),
]


# ----------------------------------------------------------------- training (verify --train)
# Ports that compute the inference forward pass exactly and still train differently from TF.

def _bn_momentum_default(m, _stack):
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = 0.1


def _bn_running_var_biased(m, stack):
    """The running variance updated with the biased batch variance (Keras' non-fused float64
    path, or a hand-written BatchNorm): PyTorch's unbiased update, less the difference."""
    def hook(bn, args, _out):
        if bn.training and bn.track_running_stats:
            x = args[0].detach()
            n = x.numel() / x.shape[1]
            biased = x.var(dim=[0] + list(range(2, x.dim())), unbiased=False)
            # .data: the op saved running_var for its backward; leave its version counter alone
            bn.running_var.data.sub_(bn.momentum * biased / (n - 1))

    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            stack.callback(bn.register_forward_hook(hook).remove)


def _fold_equalized_lr(m, _stack):
    """Every layer with a run-time scale stores ``weight * scale`` and runs with scale 1: the
    forward pass is the same, each gradient is ``1 / scale`` times TF's, and Adam's steps
    (lr in stored units) are ``1 / scale`` times too large."""
    for layer in m.modules():
        scale = getattr(layer, "scale", None)
        if isinstance(scale, float) and isinstance(getattr(layer, "weight", None), nn.Parameter):
            layer.weight.mul_(scale)
            layer.scale = 1.0


def _first_order_only(name: str):
    """The penalty ``models_pt.training.<name>`` (``r1_penalty``, ``path_length_penalty``) with its
    input gradient taken without ``create_graph``: its own gradient with respect to the weights
    (the second-order term) is lost, as when a training loop forgets the flag."""
    def apply(_m, stack):
        import models_pt.training as ptt

        real = getattr(ptt, name)

        def detached(*args, **kw):
            return real(*args, **kw).detach().requires_grad_(True)

        stack.enter_context(mock.patch.object(ptt, name, detached))
    return apply


def _noise_ignored(_m, stack):
    """Training-mode noise ignored: the stored constants added where per-image noise was given."""
    import models_pt.generator as ptg

    real = ptg.ModulatedConv.forward
    stack.enter_context(mock.patch.object(ptg.ModulatedConv, "forward",
                                          lambda self, x, style, fir, noise=None: real(self, x, style, fir)))


TRAIN_CONTROLS = [
    Control("bn_momentum_pytorch_default", ("classifier",), False,
            "every BatchNorm with PyTorch's default momentum 0.1 (Keras' 0.99 is PyTorch's 0.01)",
            _bn_momentum_default),
    Control("bn_running_var_biased", ("classifier",), True,
            "the running variance updated with the biased batch variance (Keras' non-fused path)",
            _bn_running_var_biased),
    Control("equalized_lr_folded", GAN, False,
            "the equalized-learning-rate scale folded into the stored weights (same forward pass)",
            _fold_equalized_lr),
    Control("r1_second_order_missing", ("discriminator",), False,
            "R1's input gradient taken without create_graph: no gradient reaches the weights",
            _first_order_only("r1_penalty")),
    Control("path_length_second_order_missing", ("generator",), False,
            "the path length's gradient taken without create_graph: no gradient reaches the weights",
            _first_order_only("path_length_penalty")),
    Control("train_noise_ignored", ("generator",), False,
            "training-mode noise ignored: the stored constants added instead of the per-image noise",
            _noise_ignored),
]


def for_training(kind: str) -> list[Control]:
    """The negative controls of ``verify --train`` for a model kind."""
    return [c for c in TRAIN_CONTROLS if kind in c.kinds]


# ----------------------------------------------------------------- judging a port and its controls

def judge_with_controls(ref, module: nn.Module, rule=None, model_error: dict | None = None) -> dict:
    """``{"correct": Report, <control name>: Report, ...}``: the port and every control of its
    kind, judged on one TF reference (``porting.verdict.Reference``, computed once) with the same
    ``judge_module`` that ``verify`` uses. The rounding model runs once, on the correct port
    (which the float64 verdict holds to TF's float64 run): the bound belongs to the computation,
    not to the candidate. ``model_error``: its errors per label where a verify of the correct port
    on this reference already simulated them (``Report.model_error_by_label``)."""
    from porting.verdict import RULE, judge_module

    rule = rule or RULE
    reports = {"correct": judge_module(ref, module, rule, model_error=model_error)}
    errors = reports["correct"].model_error_by_label() if ref.dtype == "float32" else None
    for control in for_kind(module.kind, ref.size):
        with broken(control, module) as twin:
            reports[control.name] = judge_module(ref, twin, rule, model_error=errors)
    return reports
