"""AttFind's effects computed as differences: the change an edit makes, carried through the models.

An effect is the change of the classifier's logits when one StyleSpace coordinate moves. The
plain sweep (``TorchEffects``) computes the edited image's logits whole and subtracts the base
logits: in float32 that keeps float32's error of both, relative to the full activations; in TF32
or BF16 the error of two nearly equal outputs is as large as the effects themselves
(docs/benchmarks.md). Here the base image's activations are computed once per image, in the
model's own dtype, and only the *change* is computed from the edited layer on:

- every linear op (the convolutions, the FIR filters, the zero-insertion up-sampling, ToRGB, the
  skips, MobileNet's convolutions with their BatchNorm folded in, padding, pooling, the logits'
  1x1 conv) takes the change through the same op; biases and the noise drop out;
- every elementwise non-linearity (leaky ReLU, ReLU6, the classifier's clamp to [-1, 1]) gives
  ``f(base + change) - f(base)``, computed from the stored base (``Kink``) as
  ``clamp(change, lo - base, hi - base) + (base - clamp(base))``: an exact identity whose
  rounding is relative to the change, in the base's dtype;
- at the edited layer, style channel ``c`` moving by ``t`` changes the modulated conv's output
  by ``B * (d' - d) + t * d' * R_c`` (``B``: the base conv's output before demodulation, ``d``
  and ``d'``: the demodulation factors before and after, ``R_c``: input channel ``c`` convolved
  alone with its kernel slice, one ``1/in_channels`` of a conv per edit): exact algebra, no
  second full conv. ``d' - d`` is computed in float64 in a form without cancellation;
- the effect is the change of the logits.

In real arithmetic this is the plain sweep's effect (the float64 runs agree to 1e-12,
``parity_tests/test_delta.py``). In reduced precision each linear op errs relative to the change
it carries, not to the activation, so the effects' error shrinks with the edit's size
(measured in docs/benchmarks.md). The reduced precision (TF32, BF16) is the caller's context
around ``DeltaPath.effects``; the base runs outside it.

Supported: ``models_pt.generator.Generator`` (its readable form) and
``models_pt.classifier.MobileNetV1``; any other module is refused in one line.

Layer: ``attfind``; imports ``models_pt`` only.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models_pt.classifier import MobileNetV1
from models_pt.generator import Generator, ModulatedConv, ToRGB
from models_pt.ops import SQRT2, fir_filter, zero_upsample

LRELU_SLOPE = 0.2
_GAIN_NEG, _GAIN_POS = LRELU_SLOPE * SQRT2, (1 - LRELU_SLOPE) * SQRT2


@dataclass
class Kink:
    """A stored pre-activation ``p`` as a piecewise-linear function's change needs it: for
    ``clamp(., lo, hi)``, ``below = lo - p``, ``above = hi - p`` and ``off = p - clamp(p, lo, hi)``,
    so that ``clamp(p + c, lo, hi) - clamp(p, lo, hi) = clamp(c, below, above) + off``: an exact
    identity, two passes over the change, and rounding relative to the change (``off`` is 0
    where ``p`` lies inside, and cancels ``below`` or ``above`` exactly where ``p`` stays outside).
    Leaky ReLU is ``slope * x + (1 - slope) * relu(x)``: its ``hi`` is infinite."""
    below: torch.Tensor
    above: torch.Tensor | None
    off: torch.Tensor

    @classmethod
    def of(cls, p: torch.Tensor, lo: float, hi: float | None) -> "Kink":
        return cls(lo - p, None if hi is None else hi - p, p - p.clamp(lo, hi))

    def clamp_change(self, change: torch.Tensor) -> torch.Tensor:
        """``clamp(p + change, lo, hi) - clamp(p, lo, hi)``; overwrites ``change``."""
        if self.above is None:
            out = torch.maximum(change, self.below, out=change)
        else:
            out = torch.clamp(change, min=self.below, max=self.above, out=change)
        return out.add_(self.off)

    def lrelu_change(self, change: torch.Tensor) -> torch.Tensor:
        """``lrelu(p + change) - lrelu(p)`` for StyleGAN2's leaky ReLU (slope 0.2, gain sqrt(2));
        this ``Kink`` made with ``lo = 0`` and no ``hi``."""
        relu = torch.maximum(change, self.below).add_(self.off)
        return relu.mul_(_GAIN_POS).add_(change, alpha=_GAIN_NEG)


def delta_lrelu(p: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """``lrelu(p + change) - lrelu(p)`` for StyleGAN2's leaky ReLU (slope 0.2, gain sqrt(2)),
    rounded relative to ``change`` (``Kink``)."""
    return Kink.of(p, 0.0, None).lrelu_change(change.clone())


def delta_clamp(p: torch.Tensor, change: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``clamp(p + change, lo, hi) - clamp(p, lo, hi)``, rounded relative to ``change`` (``Kink``)."""
    return Kink.of(p, lo, hi).clamp_change(change.clone())


@dataclass
class ConvBase:
    """One modulated conv of the base image (batch 1): its input ``x``, style ``s``, output before
    demodulation ``b``, demodulation's squared denominator ``dsq`` (float64), its pre-activation
    as a ``Kink``, and its weight with the style and demodulation folded in (``folded``: what a
    change of its input goes through)."""
    x: torch.Tensor
    s: torch.Tensor
    b: torch.Tensor
    dsq: torch.Tensor
    kink: Kink
    folded: torch.Tensor


@dataclass
class Base:
    """The base image's activations (``DeltaPath.base``): per conv layer a ``ConvBase``, the
    ToRGB weights with their styles folded in, the image's and the classifier's kinks."""
    convs: list[ConvBase]
    rgb: list[torch.Tensor]
    image: Kink
    classifier: list[Kink]


def _refuse(what: str, module) -> None:
    raise ValueError(f"the delta path supports models_pt's readable {what}; got {type(module).__module__}."
                     f"{type(module).__qualname__} (use the plain sweep for other modules)")


def _without_bias(conv: nn.Module) -> nn.Module:
    out = copy.deepcopy(conv)
    out.bias = None
    return out


def classifier_steps(clf: MobileNetV1) -> tuple[list[tuple[nn.Module, nn.Module]], nn.Conv2d]:
    """MobileNetV1 as its chain of convs, each followed by ReLU6, with BatchNorm folded in and the
    padding absorbed (``models_pt.inference``): ``(conv, conv without bias)`` pairs, and the head."""
    from models_pt.inference import SameConvInference, absorb_padding, fold_batchnorm

    if type(clf) is not MobileNetV1:
        _refuse("MobileNetV1", clf)
    fast = absorb_padding(fold_batchnorm(copy.deepcopy(clf).eval()))
    convs = [fast.stem.conv]
    for blk in fast.blocks:
        if not isinstance(blk.pad, nn.Identity):
            _refuse("MobileNetV1", blk.pad)
        convs += [blk.dw, blk.pw]
    for conv in convs:
        if type(conv) not in (nn.Conv2d, SameConvInference):
            _refuse("MobileNetV1", conv)
    return [(conv, _without_bias(conv)) for conv in convs], fast.head.conv


class DeltaPath:
    """The effects of single-coordinate edits of one image as changes (module docstring).

    ``base(conv_styles, rgb_styles)`` runs the base image (batch 1) and keeps what the changes
    need; ``effects(base, layer, channels, shifts)`` returns the change of the logits ``[K, C]``
    for ``K`` edits of conv style layer ``layer`` (row ``k``: ``channels[k]`` moved by
    ``shifts[k]``). Both run in the modules' dtype; the reduced precision, if any, is the
    caller's context around ``effects``."""

    def __init__(self, generator: Generator, classifier: MobileNetV1):
        if type(generator) is not Generator:
            _refuse("Generator", generator)
        for m in [*generator.convs.values(), *generator.torgbs.values()]:
            if type(m) not in (ModulatedConv, ToRGB):
                _refuse("Generator", m)
        self.g = generator.eval()
        self.convs = list(generator.convs.values())
        self.steps, self.head = classifier_steps(classifier.eval())
        self.fir = generator.fir_up
        with torch.no_grad():
            self.w = [m.weight * m.scale for m in self.convs]                   # [out, in, 3, 3]
            self.wt = [w.flip([2, 3]).transpose(0, 1) for w in self.w]          # [in, out, 3, 3]
            self.wsq = [w.square().sum(dim=(2, 3)) for w in self.w]             # [out, in]
            self.wsq64 = [w.double().square().sum(dim=(2, 3)) for w in self.w]
            self.rgb_w = [m.weight * m.scale for m in generator.torgbs.values()]

    def _conv(self, layer: int, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The modulated conv's linear part (transposed conv and FIR for the up-sampling layers),
        as ``ModulatedConv`` computes it, with its weight or ``weight`` (same orientation)."""
        if self.convs[layer].up:
            w = self.wt[layer] if weight is None else weight
            return fir_filter(F.conv_transpose2d(x, w, stride=2), self.fir, 1, 1)
        return F.conv2d(x, self.w[layer] if weight is None else weight, padding=1)

    @staticmethod
    def _rgb_block(layer: int) -> int | None:
        """The ToRGB index that follows conv layer ``layer``, or None (a block's first conv)."""
        if layer == 0:
            return 0
        return layer // 2 if layer % 2 == 0 else None

    # ---------------------------------------------------------------- the base image
    @torch.no_grad()
    def base(self, conv_styles, rgb_styles) -> Base:
        """The base image's activations: the arithmetic of ``Generator.synthesis`` (its image
        equal to the readable module's) and of the folded classifier."""
        g, convs = self.g, []
        x, img = g.const, None
        torgbs, skips = list(g.torgbs.values()), list(g.skips.values())
        for layer, m in enumerate(self.convs):
            s = conv_styles[layer]
            b = self._conv(layer, x * s[:, :, None, None])
            dsq = s.double().square() @ self.wsq64[layer].T + 1e-8
            d = torch.rsqrt(s.square() @ self.wsq[layer].T + 1e-8)
            pre = (b * d[:, :, None, None] + m.noise * m.noise_strength) + m.bias[None, :, None, None]
            folded = (self.wt[layer] * (s[0][:, None] * d[0][None, :])[:, :, None, None] if m.up
                      else self.w[layer] * (d[0][:, None] * s[0][None, :])[:, :, None, None])
            convs.append(ConvBase(x, s, b, dsq, Kink.of(pre, 0.0, None), folded))
            x = F.leaky_relu(pre, LRELU_SLOPE) * SQRT2
            k = self._rgb_block(layer)
            if k is not None:
                rgb = torgbs[k](x, rgb_styles[k])
                img = rgb if k == 0 else skips[k - 1](img, rgb, self.fir)
        rgb_w = [w * s[0][None, :, None, None] for w, s in zip(self.rgb_w, rgb_styles)]
        kinks, h = [], img.clamp(-1, 1)
        for conv, _ in self.steps:
            pre = conv(h)
            kinks.append(Kink.of(pre, 0.0, 6.0))
            h = pre.clamp(0, 6)
        return Base(convs, rgb_w, Kink.of(img, -1.0, 1.0), kinks)

    # ---------------------------------------------------------------- the changes
    def edited_layer(self, base: Base, layer: int, channels: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """The change of conv layer ``layer``'s pre-activation, ``[K, out, H, W]``, when style
        channel ``channels[k]`` moves by ``shifts[k]``: ``B (d' - d) + t d' R_c``."""
        c = base.convs[layer]
        k, dtype = len(channels), c.b.dtype
        t = shifts.to(dtype)
        # R_c: input channel c alone through the conv (a grouped conv, one group per edit)
        xc = c.x[0, channels][None]                                             # [1, K, h, w]
        if self.convs[layer].up:
            r = F.conv_transpose2d(xc, self.wt[layer][channels], stride=2, groups=k)
            r = fir_filter(r, self.fir, 1, 1)
        else:
            r = F.conv2d(xc, self.w[layer].transpose(0, 1)[channels].reshape(-1, 1, 3, 3), padding=1, groups=k)
        r = r.to(dtype).reshape(k, -1, *r.shape[2:])                            # [K, out, H, W]
        # demodulation: dsq' = dsq + ((s_c + t)^2 - s_c^2) * sum w[:, c]^2, d' - d without cancellation
        s_c, t64 = c.s[0, channels].double(), t.double()
        grow = ((2 * s_c + t64) * t64)[:, None] * self.wsq64[layer][:, channels].T      # [K, out]
        dsq1 = c.dsq + grow
        d1 = torch.rsqrt(dsq1)
        dd = -grow * torch.rsqrt(c.dsq) * d1 / (torch.sqrt(c.dsq) + torch.sqrt(dsq1))
        return torch.addcmul(c.b * dd.to(dtype)[:, :, None, None], r, (t64[:, None] * d1).to(dtype)[:, :, None, None])

    def generator_change(self, base: Base, layer: int, channels, shifts) -> torch.Tensor:
        """The change of the generator's image ``[K, 3, R, R]`` (before the clamp)."""
        dtype = base.convs[0].b.dtype
        change = base.convs[layer].kink.lrelu_change(self.edited_layer(base, layer, channels, shifts))
        img = None
        for lay in range(layer, len(self.convs)):
            c = base.convs[lay]
            if lay > layer:
                change = c.kink.lrelu_change(self._conv(lay, change, c.folded).to(dtype))
            k = self._rgb_block(lay)
            if k is not None:
                rgb = F.conv2d(change, base.rgb[k]).to(dtype)
                img = rgb if img is None else fir_filter(zero_upsample(img), self.fir, 2, 1).to(dtype).add_(rgb)
        return img

    def classifier_change(self, base: Base, image_change: torch.Tensor) -> torch.Tensor:
        """The change of the logits ``[K, C]`` for a change of the (unclamped) image."""
        dtype = image_change.dtype
        h = base.image.clamp_change(image_change)
        for (_, linear), kink in zip(self.steps, base.classifier):
            h = kink.clamp_change(linear(h).to(dtype))
        return F.conv2d(h.mean(dim=(2, 3), keepdim=True), self.head.weight).flatten(1).to(dtype)

    @torch.no_grad()
    def effects(self, base: Base, layer: int, channels, shifts) -> torch.Tensor:
        """The change of the logits ``[K, C]`` for ``K`` edits of conv style layer ``layer``."""
        device = base.convs[0].b.device
        channels = torch.as_tensor(channels, device=device)
        shifts = torch.as_tensor(shifts, device=device)
        return self.classifier_change(base, self.generator_change(base, layer, channels, shifts))
