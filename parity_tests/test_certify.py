"""AttFind on reduced-precision effects, every decision re-checked in float32 (``attfind.certify``).

Synthetic effects first (NumPy only): the float32 effects are known, the "reduced" ones are
them plus noise of a known size, so the certified ranking can be compared with the float32 one
and the noise shown to change the plain ranking. Then the PyTorch backend on the AttFind
release: TF32 emulated on the CPU, certified against a float32 sweep of the same images.
"""
from __future__ import annotations

import numpy as np
import pytest

from attfind import certify
from attfind import selection as sel

N, S = 40, 300


TIE = 40    # a copy of the last pick of target class 0, 1e-3 less: the noise below swaps them


def synthetic(seed: int = 0):
    """float32 effects ``[N, 2, S, 2]`` with a clear greedy order, base logits of both classes,
    and the last pick of target class 0 (``TIE`` is its near-tie: mean gains 1e-3 apart at every
    step, so which of the two is picked decides what is ranked)."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 0.05, size=(N, 2, S, 2)).astype(np.float32)
    base = rng.normal(0, 1, size=(N, 2)).astype(np.float32)
    for k, j in enumerate(range(10, 30)):                      # a ladder of strong coordinates
        e[:, 1, j, 0] += np.float32(0.2 - 0.008 * k)
        e[:, 0, j, 1] += np.float32(0.19 - 0.008 * k)
    last = sel.attfind(e, base).picks[0][-1]                       # (d, j)
    e[:, last[0], TIE, 0] = e[:, last[0], last[1], 0] - np.float32(1e-3)
    assert 0 < sel.split_by_class(base).sum() < N                  # both classes present
    return e, base, last


def noisy(e, last: tuple[int, int], size: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = e + rng.uniform(-size, size, size=e.shape).astype(np.float32)
    d, j = last
    out[:, d, TIE, 0] = e[:, d, j, 0] + np.float32(size / 2)       # the noise swaps the near-tie
    out[:, d, j, 0] = e[:, d, j, 0] - np.float32(size / 2)
    return out


def exact_columns(e):
    calls = []

    def recompute(cols):
        calls.append(list(cols))
        return e[:, :, cols]
    return recompute, calls


def test_noise_changes_the_plain_ranking_and_the_certified_one_is_float32s():
    e, base, last = synthetic()
    lo = noisy(e, last, 1e-2)
    truth = sel.attfind(e, base)
    assert len(truth.ranking) >= 6 and last in truth.ranking and TIE not in {j for _, j in truth.ranking}
    assert sel.attfind(lo, base).ranking != truth.ranking          # the control: noise matters
    recompute, calls = exact_columns(e)
    result, cert, _ = certify.certified_attfind(lo, base, 1e-2, recompute)
    assert result.ranking == truth.ranking and result.picks == truth.picks
    assert [a.score for a in result.attributes] == [a.score for a in truth.attributes]
    assert TIE in cert.recomputed and cert.bound_raised == 0 and cert.worst_ratio <= 1
    assert 0 < cert.fraction < 0.2, cert.to_dict()                 # a small part recomputed
    assert len(set(cert.recomputed)) == len(cert.recomputed) == sum(map(len, calls))   # each once


def test_the_rival_rule_is_what_catches_the_near_tie():
    """Recomputing the picks alone is not enough: the noisy effects with their picks' columns made
    exact still rank otherwise than float32 (the near-tie's copy is picked instead of the
    original). The rival rule opens the original, which no pick holds at first."""
    e, base, last = synthetic()
    lo = noisy(e, last, 1e-2)
    truth = sel.attfind(e, base)
    picks_only = lo.copy()
    first = sel.attfind(lo, base)
    cols = sorted({j for ps in first.picks.values() for _, j in ps})
    picks_only[:, :, cols] = e[:, :, cols]
    assert sel.attfind(picks_only, base).ranking != truth.ranking
    _, found = certify.open_coordinates(lo, base, 1e-2, np.zeros(S, bool))
    assert TIE in cols and last[1] not in cols
    assert last[1] in found["decision"] and found["pick"] == set(cols)


def test_an_understated_bound_is_found_and_raised():
    """A bound 100x too small: the recomputed picks show it, the bound is raised and every
    decision checked again; the result is float32's all the same."""
    e, base, last = synthetic()
    lo = noisy(e, last, 1e-2)
    result, cert, _ = certify.certified_attfind(lo, base, 1e-4, exact_columns(e)[0])
    assert cert.bound_raised >= 1 and cert.worst_ratio > 1
    assert result.ranking == sel.attfind(e, base).ranking


def test_an_image_near_the_unstable_limit_is_recomputed():
    """Image 0 has exactly ``max_count`` entries above the threshold in float32, and one more in
    the noisy effects: its stability is open until those coordinates are recomputed."""
    e, base, last = synthetic()
    e[0, :, 40:50, :] = np.float32(2.0 - 1e-3)            # 40 entries just under the threshold
    e[0, :, 50:55, :] = np.float32(2.5)                   # 20 above
    lo = e.copy()
    lo[0, 0, 40, 0] = np.float32(2.0 + 1e-3)              # one crosses in the noisy effects
    params = {"unstable_max_count": 20}
    _, unstable32 = sel.filter_unstable(e, max_count=20)
    assert not unstable32[0] and sel.filter_unstable(lo, max_count=20)[1][0]
    result, cert, _ = certify.certified_attfind(lo, base, 1e-2, exact_columns(e)[0], **params)
    assert not result.unstable[0] and cert.reasons["unstable"] >= 1 and 40 in cert.recomputed
    assert result.ranking == sel.attfind(e, base, **params).ranking


def test_no_gain_within_the_bound_falls_back_to_float32():
    """Every effect of target class 1 below 0 in float32, some above in the noisy effects: the
    end of that greedy run is open, so every coordinate that could hold a gain is recomputed."""
    e, base, last = synthetic()
    e[..., 1] = -np.abs(e[..., 1]) - np.float32(1e-3)
    lo = noisy(e, last, 1e-2)
    truth = sel.attfind(e, base)
    assert truth.runs[1].stop == "no_gain" and sel.attfind(lo, base).runs[1].picks
    result, cert, _ = certify.certified_attfind(lo, base, 1e-2, exact_columns(e)[0])
    assert result.ranking == truth.ranking and result.runs[1].stop == "no_gain"
    assert cert.fraction > 0.9


def test_bad_input_is_refused():
    e, base, last = synthetic()
    with pytest.raises(ValueError, match="err"):
        certify.certified_attfind(e, base, -1.0, exact_columns(e)[0])
    with pytest.raises(ValueError, match="recompute: expected shape"):
        certify.certified_attfind(noisy(e, last, 1e-2), base, 1e-2, lambda cols: e[:, :, cols[:1]])


def test_a_bound_that_grows_with_the_effect_opens_fewer_coordinates():
    """Errors of 2% of each effect (the delta path's kind), and one coordinate whose effects are
    large and negative (never a gain, never picked). A flat bound must cover its errors
    everywhere and opens nearly every coordinate; ``Bound(a, b)`` with ``b`` = 2% opens few.
    Both give float32's ranking, which the noise alone changes; an understated slope is found
    and raised."""
    e, base, last = synthetic()
    e[:, 0, 10, 0] -= np.float32(3.0)
    e[:, 1, 10, 1] -= np.float32(3.0)
    rng = np.random.default_rng(3)
    lo = (e * (1 + rng.uniform(-0.02, 0.02, size=e.shape))).astype(np.float32)
    truth = sel.attfind(e, base)
    assert sel.attfind(lo, base).ranking != truth.ranking
    worst = float(np.abs(lo.astype(np.float64) - e).max())
    flat = certify.certified_attfind(lo, base, worst * 1.05, exact_columns(e)[0])
    grows = certify.Bound(np.full(S, 1e-6), np.full(S, 0.021))
    scaled = certify.certified_attfind(lo, base, grows, exact_columns(e)[0])
    for result, cert, _ in (flat, scaled):
        assert result.ranking == truth.ranking and cert.bound_raised == 0 and cert.worst_ratio <= 1
    assert flat[1].fraction > 0.9 and scaled[1].fraction < 0.1, (flat[1].fraction, scaled[1].fraction)
    assert scaled[1].bound_max == pytest.approx(1e-6 + 0.021 * np.abs(lo.astype(np.float64)).max())
    low = certify.Bound(np.full(S, 1e-6), np.full(S, 0.002))
    result, cert, _ = certify.certified_attfind(lo, base, low, exact_columns(e)[0])
    assert cert.bound_raised >= 1 and result.ranking == truth.ranking


def test_the_envelope_is_the_tightest_line_above_the_points():
    """Over the points, a + b * size has the smallest mean: the lowest line at the mean size."""
    size = np.linspace(0, 2, 50)
    gap = 0.01 + 0.03 * size
    gap[::3] *= 0.5                                   # points below the line do not move it
    a, b = certify.envelope(size, gap)
    assert (a + b * size >= gap - 1e-12).all() and b > 0.02
    assert a + b * size.mean() == pytest.approx(0.01 + 0.03 * size.mean())   # no lower line at the mean
    a, b = certify.envelope(size, np.full(50, 0.02))    # an error that does not grow: flat
    assert (a, b) == (pytest.approx(0.02), 0.0)


def test_the_probe_samples_each_layers_largest_effects():
    """Spread coordinates miss a layer's one large effect (where a bound that grows with the effect
    is decided); given the sweep's effects, the probe takes each layer's largest too."""
    from models_pt.stylespace import StyleSpace

    space = StyleSpace([8, 8])
    effects = np.zeros((2, 2, 16, 2))
    effects[:, 1, 5, 0] = 3.0
    effects[0, 0, 12, 1] = -2.0
    spread = certify.probe_sample(space, 2)
    assert spread == [0, 7, 8, 15]
    assert set(certify.probe_sample(space, 2, effects)) >= {5, 12} | set(spread)


def test_tf32_rounding_keeps_ten_mantissa_bits_to_nearest_even():
    import torch

    from attfind.effects_pt import round_to_tf32

    x = torch.randn(10000) * 10
    r = round_to_tf32(x)
    assert (r.view(torch.int32) & 0x1FFF).eq(0).all()                       # 13 low bits cleared
    rel = ((r - x).abs() / x.abs()).max().item()
    assert 2 ** -13 < rel <= 2 ** -11                                        # half an ulp of 10 bits
    one_ulp = 2.0 ** -10
    ties = torch.tensor([1 + one_ulp / 2, 1 + 1.5 * one_ulp, -(1 + one_ulp / 2)])
    assert round_to_tf32(ties).tolist() == [1.0, 1 + 2 * one_ulp, -1.0]     # ties to even
    assert torch.equal(round_to_tf32(x.double()), x.double())                 # float64 passes unchanged


@pytest.mark.slow
def test_tf32_sweep_certified_equals_the_float32_sweep(attfind_release):
    """TF32 emulated on the CPU on 12 images of the AttFind release: its effects differ from
    float32's, and the certified ranking is the float32 sweep's (the float32 sweep itself is
    held to TF's by test_attfind_parity)."""
    from attfind.effects_pt import TorchEffects
    from attfind.release import open_release
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    ref, weights = attfind_release
    rel = open_release(weights)
    g, c = rel.generator, rel.classifier
    dl = dlatent_matrix(load_dlatents(ref / "dlatents.pkl"))[:12]
    f32, tf32 = TorchEffects(g, c, batch_size=64), TorchEffects(g, c, batch_size=64, precision="tf32")
    lo, hi = sel.style_ranges(f32.styles(dl))
    full = [f32.image(w, lo, hi) for w in dl]
    base, e32 = np.stack([b for b, _ in full]), np.stack([e for _, e in full])
    reduced = [tf32.image(w, lo, hi) for w in dl]
    e_tf32 = np.stack([e for _, e in reduced])
    assert np.array_equal(np.stack([b for b, _ in reduced]), base)          # base logits in float32
    assert 1e-4 < np.abs(e_tf32 - e32).max() < 0.5                          # rounded, not broken
    err = certify.probe_error(tf32, f32, dl, lo, hi)
    result, cert, _ = certify.certified_attfind(e_tf32, base, err, certify.recompute_with(f32, dl, lo, hi))
    truth = sel.attfind(e32, base)
    assert truth.ranking and result.ranking == truth.ranking, cert.to_dict()
    assert cert.fraction < 1 and cert.worst_ratio <= 1, cert.to_dict()


@pytest.mark.slow
def test_cli_attfind_tf32_gives_the_float32_ranking(attfind_release, attfind_run, tmp_path):
    """``cli.py attfind --precision tf32`` (the delta path) on the AttFind release: the ranking of
    the suite's float32 run and of TF's tfrecord, the certificate with its bound ``a + b |effect|``
    in attfind.json, the float32 verdict not claimed; with ``--workers``, one line of refusal."""
    import json

    from conftest import run_cli

    ref, weights = attfind_release
    r = run_cli("attfind", "--weights", weights, "--dlatents", ref / "dlatents.pkl", "--out", tmp_path / "tf32",
                "--no-pictures", "--precision", "tf32")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "tf32" / "attfind.json").read_text())
    float32 = json.loads((attfind_run / "attfind.json").read_text())
    ranking = [(a["direction"], a["coordinate"]) for a in doc["attributes"]]
    assert ranking and ranking == [(a["direction"], a["coordinate"]) for a in float32["attributes"]]
    assert doc["effects"]["precision"] == "tf32" and float32["effects"]["precision"] == "float32"
    cert = doc["certificate"]
    assert 0 < cert["fraction"] < 1 and cert["worst_ratio"] <= 1 and cert["bound_max"] > 0
    assert doc["effects"]["form"] == cert["form"] == "delta" and cert["bound"]["form"] == "a + b |effect|"
    assert doc["tfrecord"]["same_ranking"] is True and "verdict" not in doc["tfrecord"]
    assert "effects verdict: not run" in r.output
    refused = run_cli("attfind", "--weights", weights, "--dlatents", ref / "dlatents.pkl", "--out", tmp_path / "w",
                      "--precision", "tf32", "--workers", "2")
    assert refused.exit_code == 2 and "--precision tf32 runs in this process" in refused.output
    assert len(refused.output.strip().splitlines()) == 1, refused.output
