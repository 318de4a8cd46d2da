"""AttFind on reduced-precision effects, with every decision re-checked in float32. NumPy only.

Effects computed in BF16 or TF32 (``TorchEffects(precision=...)``) differ from float32 ones by
rounding, so AttFind on them alone may rank differently. But AttFind uses few of its ``N x 2 x S``
effects to decide anything: a greedy pick needs only to be ahead of the other candidates by more
than their errors, and the scores are computed on the picks alone. So:

1. Run AttFind (``selection.attfind``) on the effects, watching every greedy decision.
2. Given a bound ``err[j]`` on the error of coordinate ``j``'s effects, list the coordinates whose
   float32 values could change a decision:
   - an image whose unstable count (step 3) could cross its limit: its entries within ``err`` of
     the threshold;
   - each greedy decision (a pick, or a mean gain of 0 that ends a run): the winner and every
     candidate whose mean gain, with both errors, reaches the winner's;
   - every pick: its column adds to the images' coverage and its score ranks it.
3. Recompute those coordinates in float32 for every image (both directions), and repeat from 1
   until no decision is open. Recomputed coordinates have no error, so each round decides more
   and the loop ends (at the worst with every coordinate recomputed: the float32 sweep).

The result is what AttFind computes on the float32 effects, as long as the reduced-precision
effects are within ``err`` of them. ``err`` is measured (``probe_error``: both precisions on a
sample of coordinates, times a safety factor), and checked again on every recomputed coordinate:
where a recomputed value lies farther from its reduced-precision one than ``err`` allowed, the
bound is raised for every coordinate and the check starts over (``Certificate.bound_raised``).

"Float32" is what the float32 backend returns for those coordinates; a float32 sweep with other
batches can differ from it by float32's own rounding, as two float32 sweeps can. What is
re-checked is what AttFind decides: the picks, the stops, the unstable images, the ranking and
its scores. The greedy traces' runner-ups (``GreedyRun.runner_ups``, their gains, and so
``near_ties``) are reported as the effects give them, not re-checked.

The discriminator filter is not supported here: it reads effects to choose its images, and its
decisions are recorded as they are made. Run it on a float32 sweep.

Layer: the AttFind core; imports only ``attfind.selection``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

import attfind.selection as sel

Recompute = Callable[[list[int]], np.ndarray]
"""``recompute(coordinates) -> [N, 2, len(coordinates), C]``: the float32 effects of those
coordinates on every image (the others' order)."""


@dataclass
class Certificate:
    """How a certified AttFind reached its result. ``recomputed``: the coordinates recomputed in
    float32, in order; ``rounds``: the AttFind runs it took (the last decided everything);
    ``worst_ratio``: the largest ``|reduced - float32| / err`` seen on recomputed coordinates
    (at most 1 unless ``bound_raised``); ``bound_raised``: how often ``err`` was raised."""
    num_styles: int
    recomputed: list[int] = field(default_factory=list)
    rounds: int = 0
    worst_ratio: float = 0.0
    bound_raised: int = 0
    reasons: dict[str, int] = field(default_factory=lambda: {"unstable": 0, "decision": 0, "pick": 0})

    @property
    def fraction(self) -> float:
        """The share of the sweep recomputed in float32."""
        return len(self.recomputed) / self.num_styles

    def to_dict(self) -> dict:
        return {"num_styles": self.num_styles, "recomputed": list(self.recomputed), "rounds": self.rounds,
                "fraction": self.fraction, "worst_ratio": self.worst_ratio, "bound_raised": self.bound_raised,
                "reasons": dict(self.reasons)}


def _bound(err, num_styles: int) -> np.ndarray:
    b = np.broadcast_to(np.asarray(err, np.float64), (num_styles,)).copy()
    if not np.isfinite(b).all() or (b < 0).any():
        raise ValueError("err: expected finite bounds >= 0 per coordinate")
    return b


def open_coordinates(effects, base_logits, err, exact, num_indices: int = sel.NUM_INDICES,
                     max_image_effect: float = sel.MAX_IMAGE_EFFECT,
                     unstable_threshold: float = sel.UNSTABLE_THRESHOLD,
                     unstable_max_count: int = sel.UNSTABLE_MAX_COUNT) -> tuple[sel.AttFindResult, dict[str, set]]:
    """AttFind on ``effects`` and the coordinates, not yet ``exact [S]``, whose float32 values could
    change one of its decisions, by reason (``unstable``, ``decision``, ``pick``). ``err [S]``:
    the bound on each coordinate's error (ignored where ``exact``)."""
    e = sel._effects(effects)
    n_img, _, n_sty, _ = e.shape
    exact = np.asarray(exact, bool)
    bound = np.where(exact, 0.0, _bound(err, n_sty))
    found: dict[str, set] = {"unstable": set(), "decision": set(), "pick": set()}

    # step 3: an image is decided when its count cannot cross the limit whatever the errors
    size = np.abs(e.astype(np.float64))
    b4 = bound[None, None, :, None]
    surely = (size - b4 > unstable_threshold).reshape(n_img, -1).sum(axis=1)
    maybe = (size + b4 > unstable_threshold).reshape(n_img, -1).sum(axis=1)
    for n in np.flatnonzero((surely <= unstable_max_count) & (maybe > unstable_max_count)):
        near = (size[n] - b4[0] <= unstable_threshold) & (size[n] + b4[0] > unstable_threshold)
        found["unstable"] |= {int(j) for j in np.flatnonzero(near.any(axis=(0, 2)))}

    labels = sel.split_by_class(base_logits)
    _, unstable = sel.filter_unstable(e, unstable_threshold, unstable_max_count)
    stable_bound = np.outer(~unstable, bound)                   # [N, S]: an unstable image's effects are 0

    def on_argmax(c: int, active, mean, k: int) -> None:
        rows = np.flatnonzero(labels != c)[active]
        merr = np.tile(stable_bound[rows].mean(axis=0), 2)       # [2S]: the error of each mean gain
        candidates = np.isfinite(mean)
        rivals = candidates & (mean + merr >= mean[k] - merr[k]) & (merr + merr[k] > 0)
        if mean[k] <= 0 or mean[k] - merr[k] <= 0:                # "no gain", or maybe no gain
            rivals |= candidates & (merr > 0)
        found["decision"] |= {int(x) % n_sty for x in np.flatnonzero(rivals)}

    result = sel.attfind(e, base_logits, num_indices, max_image_effect, unstable_threshold, unstable_max_count,
                         on_argmax=on_argmax)
    found["pick"] = {j for picks in result.picks.values() for _, j in picks}
    return result, {reason: {j for j in js if not exact[j]} for reason, js in found.items()}


def certified_attfind(effects, base_logits, err, recompute: Recompute,
                      on_round: Callable[[int, int], None] | None = None,
                      **params) -> tuple[sel.AttFindResult, Certificate, np.ndarray]:
    """AttFind's result on the float32 effects from reduced-precision ``effects [N, 2, S, C]``,
    float32 ``base_logits [N, C]`` (the labels are not re-checked), the bound ``err`` (a number or
    ``[S]``) and ``recompute`` (float32 effects of given coordinates). ``params``: AttFind's
    (``num_indices``, ``max_image_effect``, ``unstable_threshold``, ``unstable_max_count``).
    ``on_round(round, coordinates)``: before each recomputation. Returns the result, the
    certificate and the effects it was computed on (the input, not modified, with the recomputed
    coordinates' float32 values)."""
    e = sel._effects(effects).copy()
    n_img, _, n_sty, n_cls = e.shape
    bound = _bound(err, n_sty)
    exact = np.zeros(n_sty, bool)
    cert = Certificate(num_styles=n_sty)
    while True:
        cert.rounds += 1
        result, found = open_coordinates(e, base_logits, bound, exact, **params)
        todo = sorted(set().union(*found.values()))
        if not todo:
            return result, cert, e
        for reason, js in found.items():
            cert.reasons[reason] += len(js)
        if on_round is not None:
            on_round(cert.rounds, len(todo))
        fresh = np.asarray(recompute(todo))
        if fresh.shape != (n_img, 2, len(todo), n_cls):
            raise ValueError(f"recompute: expected shape {[n_img, 2, len(todo), n_cls]}, got {list(fresh.shape)}")
        gap = np.abs(fresh.astype(np.float64) - e[:, :, todo]).max(axis=(0, 1, 3))
        held = bound[todo] > 0
        ratio = float((gap[held] / bound[todo][held]).max(initial=0.0))
        e[:, :, todo] = fresh
        exact[todo] = True
        cert.recomputed += todo
        cert.worst_ratio = max(cert.worst_ratio, ratio)
        if ratio > 1 or (gap[~held] > 0).any():   # the bound was wrong: raise it everywhere, check again
            bound = np.maximum(bound * 2 * max(ratio, 1.0), 2 * gap.max())
            cert.bound_raised += 1


def probe_error(reduced, exact, dlatents, style_min, style_max, shift_size: float = 1.0, per_layer: int = 4,
                images: int = 4, safety: float = 4.0) -> np.ndarray:
    """A bound ``[S]`` on the error of ``reduced``'s effects against ``exact``'s (two backends of
    ``attfind.backend``): both compute ``per_layer`` coordinates of every style layer (spread over
    it) on the first ``images`` dlatents; each layer's bound is ``safety`` times the largest
    difference seen in it (at least ``safety`` times a millionth of the largest seen anywhere)."""
    space = exact.space
    sample = [space.coordinate(layer, int(c)) for layer, size in enumerate(space.sizes)
              for c in np.unique(np.linspace(0, size - 1, min(per_layer, size)).round().astype(int))]
    worst = np.zeros(len(space.sizes))
    for w in list(dlatents)[:images]:
        _, a = reduced.image(w, style_min, style_max, shift_size, coordinates=sample)
        _, b = exact.image(w, style_min, style_max, shift_size, coordinates=sample)
        diff = np.abs(a[:, sample].astype(np.float64) - b[:, sample]).max(axis=(0, 2))
        for j, d in zip(sample, diff):
            layer = space.split(j)[0]
            worst[layer] = max(worst[layer], d)
    worst = np.maximum(worst, 1e-6 * worst.max())
    return safety * np.repeat(worst, space.sizes)


def recompute_with(backend, dlatents, style_min, style_max, shift_size: float = 1.0) -> Recompute:
    """``recompute`` for ``certified_attfind`` from a float32 backend (``attfind.backend``)."""
    def recompute(coordinates: Iterable[int]) -> np.ndarray:
        cols = list(coordinates)
        return np.stack([backend.image(w, style_min, style_max, shift_size, coordinates=cols)[1][:, cols]
                         for w in dlatents])
    return recompute
