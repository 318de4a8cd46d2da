"""AttFind's effects computed as differences (``attfind.delta``, ``TorchEffects(form="delta")``).

The delta path is the plain one rewritten: in float64 both must give the same effects (to 1e-10
of the largest), and deliberately wrong versions (the demodulation's change dropped, the
classifier's ReLU6 and clamp taken as linear) must not. In reduced precision its error must
scale with the change: on the same models the median TF32 and BF16 errors against float32 are
several times smaller than the plain path's. Models: small random ones built here (no TF, seconds), with the classifier's
BatchNorm statistics taken from the generator's images so that the effects are not rounding
noise (checked).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attfind import selection as sel
from attfind.delta import DeltaPath, delta_clamp, delta_lrelu
from attfind.effects_pt import TorchEffects

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


# Two configurations: the release's classifier layout at small widths, and one the release does not
# have (TF 'same' padding on the strided convs, other widths and seed): the delta path's classifier
# takes both paddings through models_pt.inference's padding absorption.
CONFIGS = {"explicit": dict(seed=0, channels=(16, 16, 16, 16), alpha=0.25, strided_padding="explicit"),
           "same": dict(seed=1, channels=(24, 16, 8, 8), alpha=0.5, strided_padding="same")}


def small_models(w: np.ndarray, seed: int, channels, alpha: float, strided_padding: str):
    """A 32 px generator and a MobileNetV1 with random weights, calibrated on the images of
    dlatents ``w [N, 18]`` (``bench/attfind_flops.calibrate``: styles near 1, the classifier's
    statistics from those images, its class bias splitting them in half)."""
    import attfind_flops as af
    from models_pt.classifier import MobileNetV1
    from models_pt.generator import Generator
    from models_pt.release_facts import CLASSIFIER_ASSUMED

    torch.manual_seed(seed)
    g = Generator(resolution=4 * 2 ** (len(channels) - 1), channels=list(channels), z_dim=16, w_dim=18,
                  label_size=2, mapping_layers=2, mapping_lr_mul=0.01).eval()
    c = MobileNetV1(alpha=alpha, depth_multiplier=1, num_classes=2,
                    **{**CLASSIFIER_ASSUMED, "strided_padding": strided_padding}).eval()
    af.calibrate(g, c, w)
    return g, c


@pytest.fixture(scope="module", params=list(CONFIGS))
def models(request):
    w = torch.randn(4, 18, generator=torch.Generator().manual_seed(1)).numpy()
    g, c = small_models(w, **CONFIGS[request.param])
    lo, hi = sel.style_ranges(TorchEffects(g, c).styles(w))
    return g, c, w, lo, hi


def sweep(g, c, w, lo, hi, coordinates=None, **kw):
    b = TorchEffects(g, c, batch_size=64, **kw)
    out = [b.image(x, lo, hi, coordinates=coordinates) for x in w]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out]).astype(np.float64)


def test_the_non_linearities_differences_round_relative_to_the_change():
    """``delta_lrelu`` and ``delta_clamp`` in float32 against the float64 differences: their error
    is a few ulps of the change, where ``f(p + change) - f(p)`` computed as written errs by ulps
    of ``p`` (the control: on these inputs that is 1000x larger)."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(20000, generator=gen, dtype=torch.float64) * 3
    change = torch.randn(20000, generator=gen, dtype=torch.float64) * 1e-3
    change[:100] = -2 * p[:100]                                     # sign flips
    lrelu = lambda x: torch.nn.functional.leaky_relu(x, 0.2) * 2 ** 0.5     # noqa: E731
    for got, naive, want in (
            (delta_lrelu(p.float(), change.float()), lrelu(p.float() + change.float()) - lrelu(p.float()),
             lrelu(p.float().double() + change.float().double()) - lrelu(p.float().double())),
            (delta_clamp(p.float(), change.float(), -1.0, 1.0),
             (p.float() + change.float()).clamp(-1, 1) - p.float().clamp(-1, 1),
             (p.float().double() + change.float().double()).clamp(-1, 1) - p.float().double().clamp(-1, 1))):
        scale = change.abs().clamp_min(1e-30)
        err = ((got.double() - want).abs() / scale)[100:]
        naive_err = ((naive.double() - want).abs() / scale)[100:]
        assert err.max() < 4 * 2 ** -24 * 2 ** 0.5, err.max()
        assert naive_err.max() > 1000 * err.max()
        assert (got.double() - want).abs()[:100].max() < 1e-6          # where the sign flips: ulps of p


def test_the_base_image_is_the_readable_modules(models):
    """``DeltaPath.base`` writes the modulated convs out to keep their parts: its image is the
    readable generator's, bit for bit, in float32."""
    from attfind.delta import Kink

    g, c, w, *_ = models
    with torch.no_grad():
        conv, rgb = g.style_vectors(torch.as_tensor(w[:1]))
        want = Kink.of(g.synthesis(conv, rgb), -1.0, 1.0)
        got = DeltaPath(g, c).base(conv, rgb).image
    assert torch.equal(got.below, want.below) and torch.equal(got.off, want.off), \
        (got.below - want.below).abs().max()


def test_float64_delta_path_is_the_plain_path_and_wrong_ones_are_not(models, monkeypatch):
    """Every coordinate of 6 images in float64: the delta path's effects equal the plain path's to
    1e-10 of the largest; the base logits are the plain ones. Two deliberately wrong delta paths
    (the demodulation's change left out; the classifier's ReLU6 and clamp taken as linear) miss
    by more than 1e-3 of the largest."""
    import attfind.delta as delta

    g, c, w, lo, hi = models
    base, plain = sweep(g, c, w, lo, hi, dtype=torch.float64, optimize=False)
    labels = sel.split_by_class(base)
    assert np.abs(plain).max() > 0.05 and np.median(np.abs(plain)) > 1e-4 and 0 < labels.sum() < len(w), \
        "degenerate effects or one class: the comparison would prove nothing"
    base_d, got = sweep(g, c, w, lo, hi, dtype=torch.float64, optimize=False, form="delta")
    assert np.array_equal(base_d, base)
    peak = np.abs(plain).max()
    assert np.abs(got - plain).max() <= 1e-10 * peak, np.abs(got - plain).max()

    original = delta.DeltaPath.edited_layer
    some = list(range(0, len(g.space), 7))          # the controls need only fail somewhere: a sample

    def no_demodulation_change(self, b, layer, channels, shifts):
        c_ = b.convs[layer]
        saved, c_.b = c_.b, torch.zeros_like(c_.b)          # drops the B (d' - d) term
        try:
            return original(self, b, layer, channels, shifts)
        finally:
            c_.b = saved
    monkeypatch.setattr(delta.DeltaPath, "edited_layer", no_demodulation_change)
    _, wrong = sweep(g, c, w, lo, hi, some, dtype=torch.float64, optimize=False, form="delta")
    assert np.abs(wrong - plain)[:, :, some].max() > 1e-3 * peak
    monkeypatch.setattr(delta.DeltaPath, "edited_layer", original)
    monkeypatch.setattr(delta.Kink, "clamp_change", lambda self, change: change)
    _, linear_clamps = sweep(g, c, w, lo, hi, some, dtype=torch.float64, optimize=False, form="delta")
    assert np.abs(linear_clamps - plain)[:, :, some].max() > 1e-3 * peak


def test_reduced_precision_errs_relative_to_the_change(models):
    """TF32 (emulated) and BF16 (autocast): the delta path's median error against float32 is at
    least 5x smaller than the plain path's (measured: 20-40x on the releases, docs/benchmarks.md)."""
    g, c, w, lo, hi = models
    _, e32 = sweep(g, c, w, lo, hi)
    for precision in ("tf32", "bf16"):
        _, plain = sweep(g, c, w, lo, hi, precision=precision)
        _, delta = sweep(g, c, w, lo, hi, precision=precision, form="delta")
        p, d = np.median(np.abs(plain - e32)), np.median(np.abs(delta - e32))
        assert p > 1e-5, f"{precision}: the plain path is not reduced ({p:.1e})"
        assert d * 5 < p, f"{precision}: median error delta {d:.2e}, plain {p:.2e}"


def test_other_modules_and_forms_are_refused(models):
    from models_pt.inference import fuse_generator

    g, c, *_ = models
    with pytest.raises(ValueError, match="delta path supports models_pt's readable Generator"):
        DeltaPath(fuse_generator(g), c)
    with pytest.raises(ValueError, match="fuse must be False"):
        TorchEffects(g, c, form="delta", fuse=True)
    with pytest.raises(ValueError, match="form 'sparse'"):
        TorchEffects(g, c, form="sparse")
