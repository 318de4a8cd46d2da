"""AttFind on reduced-precision effects, with every decision re-checked in float32. NumPy only.

Effects computed in BF16 or TF32 (``TorchEffects(precision=...)``) differ from float32 ones by
rounding, so AttFind on them alone may rank differently. But AttFind uses few of its ``N x 2 x S``
effects to decide anything: a greedy pick needs only to be ahead of the other candidates by more
than their errors, and the scores are computed on the picks alone. So:

1. Run AttFind (``selection.attfind``) on the effects, watching every greedy decision.
2. Given a bound on the error of each effect (``err``: one number, one per coordinate ``[S]``, or
   a ``Bound``: ``a[j] + b[j] * |effect|``, an error that grows with the effect, as the delta
   path's does), list the coordinates whose float32 values could change a decision:
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
sample of coordinates, times a safety factor; ``probe_bound``: the same samples, the smallest
``a + b |effect|`` per layer above them, times the factor), and checked again on every recomputed coordinate:
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
    (at most 1 unless ``bound_raised``); ``bound_raised``: how often ``err`` was raised;
    ``bound_max``: the largest bound any effect was held to."""
    num_styles: int
    bound_max: float = 0.0
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
                "bound_max": self.bound_max, "reasons": dict(self.reasons)}


@dataclass
class Bound:
    """An error bound that grows with the effect: ``a[j] + b[j] * |effect|`` for every effect of
    coordinate ``j`` (``|effect|``: the reduced-precision value, the one at hand)."""
    a: np.ndarray
    b: np.ndarray

    def at(self, effects: np.ndarray) -> np.ndarray:
        """The bound of each entry of ``effects [N, 2, S, C]``."""
        return self.a[None, None, :, None] + self.b[None, None, :, None] * np.abs(np.asarray(effects, np.float64))

    def columns(self, cols) -> "Bound":
        """The bound of the coordinates ``cols``, in that order (a sweep of a sample of them)."""
        return Bound(self.a[list(cols)], self.b[list(cols)])

    def to_dict(self) -> dict:
        return {"form": "a + b |effect|", "a_max": float(self.a.max()), "b_max": float(self.b.max())}


def _bound(err, effects: np.ndarray) -> np.ndarray:
    """``err`` (a number, ``[S]`` or a ``Bound``) as the bound of each entry ``[N, 2, S, C]``."""
    n_sty = effects.shape[2]
    if isinstance(err, Bound):
        if err.a.shape != (n_sty,) or err.b.shape != (n_sty,):
            raise ValueError(f"err: a Bound of {err.a.shape[0]} coordinates for effects of {n_sty}")
        b = err.at(effects)
    else:
        b = np.broadcast_to(np.asarray(err, np.float64), (n_sty,))[None, None, :, None]
        b = np.broadcast_to(b, effects.shape).copy()
    if not np.isfinite(b).all() or (b < 0).any():
        raise ValueError("err: expected finite bounds >= 0 per coordinate")
    return b


def open_coordinates(effects, base_logits, err, exact, num_indices: int = sel.NUM_INDICES,
                     max_image_effect: float = sel.MAX_IMAGE_EFFECT,
                     unstable_threshold: float = sel.UNSTABLE_THRESHOLD,
                     unstable_max_count: int = sel.UNSTABLE_MAX_COUNT) -> tuple[sel.AttFindResult, dict[str, set]]:
    """AttFind on ``effects`` and the coordinates, not yet ``exact [S]``, whose float32 values could
    change one of its decisions, by reason (``unstable``, ``decision``, ``pick``). ``err``: the
    bound on each effect's error (as ``certified_attfind`` takes it, or per entry ``[N, 2, S, C]``;
    ignored where ``exact``)."""
    e = sel._effects(effects)
    n_img, _, n_sty, _ = e.shape
    exact = np.asarray(exact, bool)
    per_entry = isinstance(err, np.ndarray) and err.shape == e.shape
    bound = np.where(exact[None, None, :, None], 0.0, err if per_entry else _bound(err, e))
    found: dict[str, set] = {"unstable": set(), "decision": set(), "pick": set()}

    # step 3: an image is decided when its count cannot cross the limit whatever the errors
    size = np.abs(e.astype(np.float64))
    surely = (size - bound > unstable_threshold).reshape(n_img, -1).sum(axis=1)
    maybe = (size + bound > unstable_threshold).reshape(n_img, -1).sum(axis=1)
    for n in np.flatnonzero((surely <= unstable_max_count) & (maybe > unstable_max_count)):
        near = (size[n] - bound[n] <= unstable_threshold) & (size[n] + bound[n] > unstable_threshold)
        found["unstable"] |= {int(j) for j in np.flatnonzero(near.any(axis=(0, 2)))}

    labels = sel.split_by_class(base_logits)
    _, unstable = sel.filter_unstable(e, unstable_threshold, unstable_max_count)
    stable_bound = np.where(unstable[:, None, None, None], 0.0, bound)   # an unstable image's effects are 0

    def on_argmax(c: int, active, mean, k: int) -> None:
        rows = np.flatnonzero(labels != c)[active]
        # [2S]: the error of each mean gain (max(0, .) moves no more than its argument)
        merr = stable_bound[rows, :, :, c].reshape(len(rows), 2 * n_sty).mean(axis=0)
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
    float32 ``base_logits [N, C]`` (the labels are not re-checked), the bound ``err`` (a number,
    ``[S]`` or a ``Bound``, evaluated at the reduced effects) and ``recompute`` (float32 effects of
    given coordinates). ``params``: AttFind's (``num_indices``, ``max_image_effect``,
    ``unstable_threshold``, ``unstable_max_count``).
    ``on_round(round, coordinates)``: before each recomputation. Returns the result, the
    certificate and the effects it was computed on (the input, not modified, with the recomputed
    coordinates' float32 values)."""
    e = sel._effects(effects).copy()
    n_img, _, n_sty, n_cls = e.shape
    bound = _bound(err, e)
    exact = np.zeros(n_sty, bool)
    cert = Certificate(num_styles=n_sty, bound_max=float(bound.max(initial=0.0)))
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
        gap = np.abs(fresh.astype(np.float64) - e[:, :, todo])                  # per entry
        held = bound[:, :, todo] > 0
        ratio = float((gap[held] / bound[:, :, todo][held]).max(initial=0.0))
        e[:, :, todo] = fresh
        exact[todo] = True
        cert.recomputed += todo
        cert.worst_ratio = max(cert.worst_ratio, ratio)
        if ratio > 1 or (gap[~held] > 0).any():   # the bound was wrong: raise it everywhere, check again
            bound = np.maximum(bound * 2 * max(ratio, 1.0), 2 * gap.max())
            cert.bound_raised += 1
            cert.bound_max = max(cert.bound_max, float(bound.max()))


def probe_sample(space, per_layer: int, effects: np.ndarray | None = None) -> list[int]:
    """The probe's coordinates: ``per_layer`` spread over each style layer and, given the sweep's
    reduced ``effects [N, 2, S, C]``, also each layer's ``per_layer`` of largest ``|effect|`` (the
    picks' kind: a bound fitted on small effects alone may miss how the error grows)."""
    sample = set()
    for layer, size in enumerate(space.sizes):
        spread = np.unique(np.linspace(0, size - 1, min(per_layer, size)).round().astype(int))
        sample |= {space.coordinate(layer, int(c)) for c in spread}
        if effects is not None:
            sl = space.layer_slice(layer)
            largest = np.abs(np.asarray(effects)[:, :, sl]).max(axis=(0, 1, 3))
            sample |= {sl.start + int(c) for c in np.argsort(-largest, kind="stable")[:per_layer]}
    return sorted(sample)


def probe(reduced, exact, dlatents, style_min, style_max, shift_size: float = 1.0, per_layer: int = 4,
          images: int = 4, effects: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Both backends (``attfind.backend``) on the coordinates of ``probe_sample`` and the first
    ``images`` dlatents: per style layer, ``(|reduced effect|, |reduced - exact|)`` over its
    sampled entries."""
    space = exact.space
    sample = probe_sample(space, per_layer, effects)
    layers = np.asarray([space.split(j)[0] for j in sample])
    seen: list[list] = [[] for _ in space.sizes]
    for w in list(dlatents)[:images]:
        _, a = reduced.image(w, style_min, style_max, shift_size, coordinates=sample)
        _, b = exact.image(w, style_min, style_max, shift_size, coordinates=sample)
        a, b = a[:, sample].astype(np.float64), b[:, sample].astype(np.float64)       # [2, K, C]
        for layer in range(len(space.sizes)):
            cols = layers == layer
            seen[layer].append((np.abs(a[:, cols]).ravel(), np.abs(a[:, cols] - b[:, cols]).ravel()))
    return [(np.concatenate([x for x, _ in s]), np.concatenate([y for _, y in s])) for s in seen]


def probe_error(reduced, exact, dlatents, style_min, style_max, shift_size: float = 1.0, per_layer: int = 4,
                images: int = 4, safety: float = 4.0) -> np.ndarray:
    """A bound ``[S]`` on the error of ``reduced``'s effects against ``exact``'s (``probe``): each
    layer's bound is ``safety`` times the largest difference seen in it (at least ``safety``
    times a millionth of the largest seen anywhere)."""
    seen = probe(reduced, exact, dlatents, style_min, style_max, shift_size, per_layer, images)
    worst = np.asarray([gap.max(initial=0.0) for _, gap in seen])
    worst = np.maximum(worst, 1e-6 * worst.max())
    return safety * np.repeat(worst, exact.space.sizes)


def envelope(size: np.ndarray, gap: np.ndarray) -> tuple[float, float]:
    """The line ``a + b * size`` (``a, b >= 0``) on or above every ``(size, gap)`` point whose mean
    over the points is the smallest, that is the lowest such line at the mean size: one of the
    upper hull's edges (or a flat line), found by trying each edge's slope."""
    size, gap = np.asarray(size, np.float64), np.asarray(gap, np.float64)
    hull: list[tuple[float, float]] = []                      # upper hull, by increasing size
    for x, y in sorted(zip(size.tolist(), gap.tolist())):
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (y - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (x - hull[-2][0])) >= 0:
            hull.pop()
        hull.append((x, y))
    slopes = [0.0] + [(y1 - y0) / (x1 - x0) for (x0, y0), (x1, y1) in zip(hull, hull[1:]) if x1 > x0]
    slopes = np.maximum(np.asarray(slopes), 0.0)
    a = np.maximum((gap[None, :] - slopes[:, None] * size[None, :]).max(axis=1, initial=0.0), 0.0)
    best = int(np.argmin(a + slopes * (size.mean() if size.size else 0.0)))
    return float(a[best]), float(slopes[best])


def probe_bound(reduced, exact, dlatents, style_min, style_max, shift_size: float = 1.0, per_layer: int = 4,
                images: int = 4, safety: float = 4.0, effects: np.ndarray | None = None) -> Bound:
    """A ``Bound`` on the error of ``reduced``'s effects against ``exact``'s (``probe``; given the
    sweep's reduced ``effects``, the sample includes each layer's largest): per
    layer, ``safety`` times the ``envelope`` of its errors against the reduced effects' size
    (``a`` at least ``safety`` times a millionth of the largest error seen anywhere). Where the
    error does not grow with the effect, the envelope is flat and this is ``probe_error``."""
    seen = probe(reduced, exact, dlatents, style_min, style_max, shift_size, per_layer, images, effects)
    fits = np.asarray([envelope(size, gap) for size, gap in seen])               # [layers, 2]
    floor = 1e-6 * max(gap.max(initial=0.0) for _, gap in seen)
    sizes = exact.space.sizes
    return Bound(safety * np.repeat(np.maximum(fits[:, 0], floor), sizes), safety * np.repeat(fits[:, 1], sizes))


def recompute_with(backend, dlatents, style_min, style_max, shift_size: float = 1.0) -> Recompute:
    """``recompute`` for ``certified_attfind`` from a float32 backend (``attfind.backend``)."""
    def recompute(coordinates: Iterable[int]) -> np.ndarray:
        cols = list(coordinates)
        return np.stack([backend.image(w, style_min, style_max, shift_size, coordinates=cols)[1][:, cols]
                         for w in dlatents])
    return recompute
