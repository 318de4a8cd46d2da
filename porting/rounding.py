"""A model of float32 rounding, run in float64: what a correct float32 implementation may deviate.

TF's own float32 error is no scale to judge the port's float32 error by: it depends on which
kernels TF runs on the machine at hand (Eigen or oneDNN, AVX or AVX2, ...), as the port's does on
PyTorch's, so the same correct port measures 0.11 of such a bound on one machine and 0.80 on
another. This module gives each compared activation a scale that belongs to the computation
alone: the error of a *model* float32 implementation, simulated in float64 on the
port's own float64 graph, identical on every machine (seeded, and float64 noise is 1e-9 of it).

**The model.** Every elementary operation of the float64 run (PyTorch's ATen ops, seen through a
``TorchDispatchMode``) gets a random error of the size float32 rounding gives it, added to its
result, and the run goes on from the perturbed values, so every error propagates through the
real network as a float32 run's would (residual paths, demodulation, normalisation included):

* data movement (views, padding, concatenation, indexing, clamps, ReLU6): exact, no error;
* an elementwise result ``r`` (add, mul, div, square, rsqrt, leaky ReLU, ...): one rounding,
  a relative error of standard deviation ``u / sqrt(3)`` with ``u = 2**-24``;
* an accumulation ``y = t_1 + ... + t_n`` (every output of a convolution, a matmul, a sum or a
  mean): summed left to right in float32, each partial sum ``S_k`` rounded, so its error is
  ``sum_k d_k S_k`` with ``d_k`` of variance ``u**2 / 3``; with ``S_k`` drifting linearly to
  ``y`` plus a random walk of the terms, ``sum_k S_k**2 ~ n (y**2 / 3 + Q / 6)``, ``Q = sum t_i**2``,
  plus ``Q`` for the products' own rounding. ``Q`` is the same op run on the squared operands
  (for a convolution: ``conv(x**2, w**2)``), so these are, per output, the float64 magnitudes of
  what was summed. ``parity_tests/test_rounding.py`` checks the formula against real float32
  left-to-right sums in NumPy: it predicts their error's standard deviation within 0.7-0.8x
  (an over-estimate) for n = 9 to 4608, random and same-signed terms;
* BatchNorm in inference: ``x * scale + shift`` with the scale and shift themselves rounded.

Sequential summation is the error a direct or GEMM convolution kernel makes (oneDNN's direct
kernels, MKL's and Eigen's blocked GEMMs accumulate each output with one FMA per term); blocked,
pairwise and split accumulators make less. ``bench/verdict_sweep.py`` measured, over the kernel
matrix, how far real kernels sit from the model (``docs/verification.md``).

``simulate`` runs a float64 computation clean, then ``samples`` times under the model, and
returns per traced activation the mean over the samples of ``max |noisy - clean|`` (at least 3
times its rms, which only counts for activations of few values): the float32 error scale the
verdict's bound is a multiple of (``porting.verdict.VerdictRule``).

Layer: ``porting`` (PyTorch and NumPy; no TensorFlow).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

U32 = 2.0 ** -24            # float32's unit roundoff: half an ulp at 1
VAR1 = U32 * U32 / 3        # variance of one rounding's relative error (uniform in +-u)
SAMPLES = 2                 # noisy runs per simulation (bench/verdict_sweep.py: the spread of one is ~10%)

aten = torch.ops.aten


class UnmodelledOp(RuntimeError):
    """An ATen op the rounding model has no rule for: add one (exact, elementwise or an
    accumulation) rather than let it go unperturbed."""


def _ops(*names: str) -> set:
    out = set()
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(aten, packet, None)
        if op is not None and (overload or "default") in op.overloads():
            out.add(getattr(op, overload or "default"))
    return out


# Results that need no rounding: data movement, views, padding, exact selections and clamps.
EXACT = _ops("lift_fresh", "t", "expand", "unsqueeze", "squeeze.dim", "squeeze.dims", "permute", "flip",
             "transpose.int", "constant_pad_nd", "view", "_unsafe_view", "reshape", "detach", "clone", "alias",
             "repeat", "cat", "stack", "split.Tensor", "split_with_sizes", "slice.Tensor", "select.int",
             "index.Tensor", "index_put_", "index_put", "empty.memory_format", "new_empty", "zeros",
             "zeros_like", "ones_like", "arange", "arange.start", "arange.start_step", "full", "fill_.Scalar",
             "as_strided", "as_strided_", "set_.source_Storage", "set_.source_Storage_storage_offset",
             "copy_", "_to_copy", "hardtanh", "clamp", "clamp.Tensor", "relu", "where.self", "neg", "abs",
             "max.dim", "amax", "contiguous", "expand_as", "flatten.using_ints", "narrow",
             "masked_fill.Scalar", "gt.Scalar", "ge.Scalar", "lt.Scalar", "le.Scalar", "eq.Scalar",
             # backward: each result is an incoming gradient or zero, placed
             "hardtanh_backward", "threshold_backward", "slice_backward", "select_backward",
             "new_zeros", "new_ones", "ones", "full_like")
# One rounding of the result (correctly rounded, or within an ulp for the square root family).
ELEMENTWISE = _ops("mul.Tensor", "mul.Scalar", "mul_.Tensor", "mul_.Scalar", "add.Tensor", "add.Scalar",
                   "add_.Tensor", "add_.Scalar", "sub.Tensor", "sub.Scalar", "sub_.Tensor", "rsub.Scalar",
                   "div.Tensor", "div.Scalar", "div_.Tensor", "div_.Scalar", "pow.Tensor_Scalar", "square",
                   "sqrt", "rsqrt", "reciprocal", "leaky_relu", "lerp.Scalar",
                   "leaky_relu_backward")   # the gradient, or slope x the gradient
# Within an ulp or two (libm): exp, logarithms, the hyperbolic family.
TRANSCENDENTAL = _ops("exp", "log", "tanh", "sigmoid", "erf")


def accumulation_variance(y: torch.Tensor, q: torch.Tensor, n: float) -> torch.Tensor:
    """Variance of a float32 left-to-right sum of ``n`` terms whose exact sum is ``y`` and whose
    squares sum to ``q`` (every partial sum and every product rounded once), in units of
    ``VAR1``, the variance of one rounding."""
    return n * (y.square() / 3 + q / 6) + q


# The rules below give each op's error variance in units of VAR1, as float32 tensors: they are
# magnitudes (two digits would do), and float32 keeps the model's own cost near one float64 run.

def _channel_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (like.dim() - 2)))


def _convolution(args, out):
    x, w, b, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    # What was summed, squared, per output: the same convolution of the squared operands, in
    # float32 but never through NNPACK. With oneDNN off, PyTorch runs float32 convolutions of 16
    # or more images on NNPACK's Winograd and FFT kernels, whose error is relative to a whole
    # tile: a sum of non-negative terms came out negative near zero-padded borders, and the
    # model's noise became NaN (docs/verification.md).
    with torch.backends.nnpack.flags(enabled=False):
        q = aten.convolution.default(x.float().square(), w.float().square(), None, stride, padding, dilation,
                                     transposed, output_padding, groups)
    taps = float(np.prod(w.shape[2:]))
    if transposed:   # w: [in, out / groups, kh, kw]; each output gathers in * taps / stride**d terms
        n = w.shape[0] / groups * taps / float(np.prod(stride))
    else:            # w: [out, in / groups, kh, kw]
        n = w.shape[1] * taps
    out32 = out.float()
    if b is None:
        return accumulation_variance(out32, q, n)
    return accumulation_variance(out32 - _channel_view(b.float(), out), q, n) + out32.square()


def _convolution_backward(args, out):
    """``(grad_input, grad_weight, grad_bias)`` of a convolution: each an accumulation, its
    squared terms the same backward run on the squared operands (float32, never NNPACK)."""
    g, x, w, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, mask = args[:11]
    with torch.backends.nnpack.flags(enabled=False):
        q = aten.convolution_backward.default(g.float().square(), x.float().square(), w.float().square(),
                                              bias_sizes, stride, padding, dilation, transposed,
                                              output_padding, groups, mask)
    taps = float(np.prod(w.shape[2:]))
    # terms per element: grad_input sums over the other side's channels and taps; grad_weight
    # and grad_bias over the batch and the positions of the non-transposed side's output
    if transposed:   # w: [in, out / groups, kh, kw]: grad_input is a plain conv of g
        n_in = w.shape[1] * taps
        n_w = x.shape[0] * float(np.prod(x.shape[2:]))
    else:            # w: [out, in / groups, kh, kw]
        n_in = w.shape[0] / groups * taps / float(np.prod(stride))
        n_w = g.shape[0] * float(np.prod(g.shape[2:]))
    n_b = g.shape[0] * float(np.prod(g.shape[2:]))
    return tuple(None if o is None else accumulation_variance(o.float(), qi, n)
                 for o, qi, n in zip(out, q, (n_in, n_w, n_b)))


def _matmul(func, args, out):
    if func is aten.addmm.default:
        bias, a, b = args[:3]
    else:
        (a, b), bias = args[:2], None
    q = a.float().square() @ b.float().square()
    out32 = out.float()
    if bias is None:
        return accumulation_variance(out32, q, a.shape[-1])
    return accumulation_variance(out32 - bias.float(), q, a.shape[-1]) + out32.square()


def _reduction(func, args, kwargs, out):
    x = args[0]
    if func is aten.sum.default:         # every element
        q = x.float().square().sum()
        return accumulation_variance(out.float(), q, x.numel())
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    q = aten.sum.dim_IntList(x.float().square(), dims, keep)
    n = x.numel() / max(out.numel(), 1)
    out32 = out.float()
    if func is aten.mean.dim:            # the sum's error divided by n, then the division's rounding
        return accumulation_variance(out32 * n, q, n) / (n * n) + out32.square()
    return accumulation_variance(out32, q, n)


def _batch_norm_inference(args, out):
    x, gamma, beta, mean, var, training = args[:6]
    eps = args[7]
    if training:
        raise UnmodelledOp("batch norm in training mode")
    scale = _channel_view((gamma / torch.sqrt(var + eps)).float(), x)
    # x * scale + (beta - mean * scale): the scale and the shift rounded, then the product and the sum
    return (2 * (x.float() * scale).square() + (_channel_view(mean.float(), x) * scale).square()
            + _channel_view(beta.float(), x).square() + out.float().square())


def _channel_sums(t: torch.Tensor) -> torch.Tensor:
    """Per channel (axis 1), the sum over every other axis, as a channel view of ``t``."""
    dims = [0] + list(range(2, t.dim()))
    return _channel_view(t.sum(dim=dims), t)


def _batch_norm_training(args, out):
    """Training mode: the batch mean and variance are accumulations over the ``n`` values of a
    channel; ``invstd = rsqrt(var + eps)``; the output ``(x - mean) invstd gamma + beta``. Also
    the variances of the saved mean and invstd (the backward reads them) and of the running
    statistics the op updates in place (``momentum`` of the batch's, the variance unbiased)."""
    x, gamma, beta, running_mean, running_var, _training, momentum, eps = args[:8]
    y, save_mean, save_invstd = out[:3]
    x32 = x.float()
    n = x.numel() / x.shape[1]
    mean = _channel_view(save_mean.float(), x)
    centred = x32 - mean
    var = _channel_sums(centred.square()) / n
    var_mean = accumulation_variance(mean * n, _channel_sums(x32.square()), n) / (n * n) + mean.square()
    var_var = accumulation_variance(var * n, _channel_sums(centred.square().square()), n) / (n * n) + 2 * var.square()
    invstd = _channel_view(save_invstd.float(), x)
    rel_invstd = var_var / (4 * (var + eps).square()) + 1       # relative, in units of VAR1
    scale = invstd * (1.0 if gamma is None else _channel_view(gamma.float(), x))
    shifted = y.float() - (0.0 if beta is None else _channel_view(beta.float(), x))
    var_y = scale.square() * (var_mean + centred.square()) + shifted.square() * (rel_invstd + 2) + y.float().square()
    flat = [v.reshape(-1) for v in (var_mean, rel_invstd * invstd.square())]
    running = None
    if running_mean is not None and momentum is not None:
        unbiased = n / max(n - 1, 1)
        running = (momentum ** 2 * flat[0] + 2 * running_mean.float().square(),
                   momentum ** 2 * unbiased ** 2 * var_var.reshape(-1) + 2 * running_var.float().square())
    return (var_y, flat[0], flat[1]), running


def _batch_norm_backward(args, out):
    """``(grad_input, grad_weight, grad_bias)``: ``grad_bias = sum g`` and ``grad_weight = sum g
    xhat`` (accumulations over a channel's ``n`` values); in training mode ``grad_input = gamma
    invstd (g - mean(g) - xhat mean(g xhat))``, its roundings and its means' errors; in inference
    mode (the running statistics, a frozen network's input gradient) ``gamma invstd g``."""
    g, x, gamma, running_mean, running_var, save_mean, save_invstd, train, eps = args[:9]
    g32 = g.float()
    n = x.numel() / x.shape[1]
    if train:
        mean, invstd = _channel_view(save_mean.float(), x), _channel_view(save_invstd.float(), x)
    else:
        mean = _channel_view(running_mean.float(), x)
        invstd = _channel_view(torch.rsqrt(running_var.float() + eps), x)
    xhat = (x.float() - mean) * invstd
    gx = g32 * xhat
    sum_g, sum_gx = _channel_sums(g32), _channel_sums(gx)
    var_sum_g = accumulation_variance(sum_g, _channel_sums(g32.square()), n)
    var_sum_gx = accumulation_variance(sum_gx, _channel_sums(gx.square()), n) + _channel_sums(gx.square())
    scale = invstd * (1.0 if gamma is None else _channel_view(gamma.float(), x))
    mean_g, mean_gx = sum_g / n, sum_gx / n
    if train:
        var_in = scale.square() * (3 * (g32.square() + mean_g.square() + (xhat * mean_gx).square())
                                   + var_sum_g / (n * n) + xhat.square() * var_sum_gx / (n * n))
    else:                              # g times a rounded scale, rounded
        var_in = 2 * (scale * g32).square()
    grad_input, grad_weight, grad_bias = out[:3]
    if grad_input is not None:
        var_in = var_in + grad_input.float().square()
    return (None if grad_input is None else var_in,
            None if grad_weight is None else var_sum_gx.reshape(-1),
            None if grad_bias is None else var_sum_g.reshape(-1))


def _softmax(args, out):
    n = args[0].shape[args[1]]
    # exp (an ulp), the sum of n positive terms (relative), the division
    return out.float().square() * (6 + n / 2 + 1)


class Float32Rounding(TorchDispatchMode):
    """Inside this mode, every float64 op's result carries a simulated float32 rounding error
    (see the module's docstring). ``strict``: an op without a rule raises ``UnmodelledOp``."""

    def __init__(self, seed: int, strict: bool = True):
        super().__init__()
        self.generator = torch.Generator().manual_seed(int(seed))
        self.strict = strict
        self.unmodelled: set[str] = set()

    def _variance(self, func, args, kwargs, out):
        """The op's error variance in units of VAR1 (float32), or None where it is exact."""
        if func in EXACT:
            return None
        if func in ELEMENTWISE:
            return out.float().square()
        if func in TRANSCENDENTAL:
            return 3 * out.float().square()
        if func is aten.convolution.default:
            return _convolution(args, out)
        if func in (aten.addmm.default, aten.mm.default):
            return _matmul(func, args, out)
        if func in (aten.sum.dim_IntList, aten.mean.dim, aten.sum.default):
            return _reduction(func, args, kwargs, out)
        if func is aten.convolution_backward.default:
            return _convolution_backward(args, out)
        if func is aten.native_batch_norm_backward.default:
            return _batch_norm_backward(args, out)
        if func is aten._softmax.default:
            return _softmax(args, out)
        if func is aten.native_batch_norm.default:
            if args[5]:                      # training: batch statistics
                variances, running = _batch_norm_training(args, out)
                if running is not None:      # the running statistics it updated in place
                    self._perturb(args[3], running[0])
                    self._perturb(args[4], running[1])
                return variances
            return _batch_norm_inference(args, out[0])
        if func is aten._native_batch_norm_legit_no_training.default:   # (x, w, b, mean, var, momentum, eps)
            return _batch_norm_inference(args[:5] + (False, None, args[6]), out[0])
        self.unmodelled.add(str(func))
        if self.strict:
            raise UnmodelledOp(f"the float32 rounding model has no rule for {func}")
        return out.float().square() if isinstance(out, torch.Tensor) else None

    def _perturb(self, t: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        """``t`` plus Gaussian noise of ``variance`` (units of VAR1), in place: ``t`` is the op's
        fresh result, or the tensor an in-place op mutated, which must carry the error itself."""
        noise = torch.randn(t.shape, generator=self.generator, dtype=torch.float32)
        deviation = variance.sqrt_()          # NaN where the variance was negative: one check for both
        if not bool(torch.isfinite(deviation).all()):
            raise ValueError("the float32 rounding model computed a negative or non-finite error "
                             "variance (a rule's float32 work overflowed or ran an inexact kernel)")
        return t.add_(noise.mul_(deviation.mul_(VAR1 ** 0.5)))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        first = next((o for o in out if o is not None), None) if isinstance(out, (tuple, list)) else out
        if not (isinstance(first, torch.Tensor) and first.dtype == torch.float64):
            return out                       # integer indices, flags, float32 work of a rule
        variance = self._variance(func, args, kwargs, out)
        if variance is None:
            return out
        if isinstance(variance, tuple):      # one variance per output (None: left exact)
            return tuple(o if v is None or o is None else self._perturb(o, v) for o, v in zip(out, variance)) \
                + tuple(out[len(variance):])
        if isinstance(out, (tuple, list)):   # batch norm: (output, saved mean, saved invstd)
            return (self._perturb(out[0], variance),) + tuple(out[1:])
        return self._perturb(out, variance)


SMALL_Z = 3.0               # an activation of few values: its error scale is at least 3 rms


def _deviation(a, b) -> tuple[float, float, int]:
    """``(max |a - b|, sum (a - b)**2, size)``."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return (float(np.max(np.abs(d))) if d.size else 0.0), float(np.sum(d * d)), int(d.size)


def simulate(run: Callable[[], dict], samples: int = SAMPLES, seed: int = 0,
             clean: dict | None = None) -> tuple[dict, dict[str, float]]:
    """``run()``: a float64 computation returning ``{label: array}``. Returns ``(clean, errors)``:
    the clean run (``clean``, if given, is used instead of running it again) and, per label, the
    model float32 error: the mean over ``samples`` noisy runs of ``max |noisy - clean|``, and at
    least ``SMALL_Z`` times the rms of ``noisy - clean`` over the samples and values. The second
    term only counts for activations of few values (a batch's logits): the largest of a few
    draws is a noisy scale (two values of one image's logits gave a model error 4.4x under a
    correct float32 kernel's), while a real kernel's largest error, one draw, may sit near 3 sigma;
    for a large activation the maximum over many values is already 4-6 rms."""
    clean = run() if clean is None else clean
    found: dict[str, list[tuple[float, float, int]]] = {label: [] for label in clean}
    for k in range(samples):
        with torch.no_grad(), Float32Rounding(seed + k):
            noisy = run()
        for label in clean:
            found[label].append(_deviation(noisy[label], clean[label]))
    errors = {}
    for label, v in found.items():
        if not v:
            errors[label] = 0.0
            continue
        n = sum(size for _, _, size in v)
        rms = (sum(sq for _, sq, _ in v) / n) ** 0.5 if n else 0.0
        errors[label] = max(float(np.mean([m for m, _, _ in v])), SMALL_Z * rms)
    return clean, errors
