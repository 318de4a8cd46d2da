"""The sufficiency measure (Lang et al. 2021): change each image's top-k attributes together and
count the images whose class flips. NumPy only, part of the AttFind core (it imports only
``attfind.selection``): both backends and the flip-rate analysis plan their edits here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from attfind.selection import SUFFICIENCY_K, _effects, _pairs, independent_ranking


@dataclass
class SufficiencyPlan:
    """Per-image edits for the sufficiency measure: image ``n`` gets all edits
    ``(directions[n, i], coordinates[n, i])`` for ``i < counts[n]`` at once (padding is -1).
    ``labels [N]``: the class each image had before; the edits aim at ``1 - labels[n]``."""
    labels: np.ndarray
    directions: np.ndarray
    coordinates: np.ndarray
    counts: np.ndarray

    def edits(self, n: int) -> list[tuple[int, int]]:
        c = int(self.counts[n])
        return [(int(d), int(j)) for d, j in zip(self.directions[n, :c], self.coordinates[n, :c])]

    def deltas(self, space, styles, style_min, style_max, shift_size: float = 1.0) -> np.ndarray:
        """``styles [N, S]`` -> what to add to them, ``[N, S]``: for each edit ``(d, j)`` of image
        ``n``, step 2's shift of coordinate ``j`` in direction ``d``, by the StyleSpace helper
        ``space`` (``models_pt.stylespace.StyleSpace``: ``targets``, ``delta``); 0 elsewhere."""
        s = np.asarray(styles)
        if s.ndim != 2 or s.shape[0] != len(self.labels):
            raise ValueError(f"styles: expected [{len(self.labels)}, S], got {list(s.shape)}")
        targets = space.targets(style_min, style_max)  # [2, S]
        out = np.zeros_like(s)
        rows, cols = np.nonzero(self.coordinates >= 0)
        d, j = self.directions[rows, cols], self.coordinates[rows, cols]
        if (j >= s.shape[1]).any():
            raise ValueError(f"an edit names coordinate {int(j.max())} but styles have {s.shape[1]}")
        out[rows, j] = space.delta(s[rows, j], targets[d, j], shift_size)
        return out


def plan_from_lists(labels, per_image: Sequence[Iterable[tuple[int, int]]], k: int) -> SufficiencyPlan:
    """Edits from one ordered list of ``(d, j)`` per image (each towards that image's other class):
    the first ``k`` distinct coordinates of each list."""
    return _plan(labels, per_image, k)


def _plan(labels, per_image: Sequence[Iterable[tuple[int, int]]], k: int) -> SufficiencyPlan:
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    dirs = np.full((n, k), -1, dtype=np.int64)
    coords = np.full((n, k), -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    for i, cands in enumerate(per_image):
        used: set[int] = set()
        for d, j in cands:
            if counts[i] >= k:
                break
            if j in used:  # both directions of one coordinate: keep the higher-ranked one
                continue
            used.add(j)
            dirs[i, counts[i]], coords[i, counts[i]] = d, j
            counts[i] += 1
    return SufficiencyPlan(labels=labels, directions=dirs, coordinates=coords, counts=counts)


def sufficiency_plan(labels, attributes, k: int = SUFFICIENCY_K) -> SufficiencyPlan:
    """Edits for the sufficiency measure from one ranked attribute list (``attfind``'s output:
    ``(d, j[, score])``, direction ``d`` moves class 1 towards class 0), for two classes.

    An image labelled 1 gets the top-``k`` attributes as they are; an image labelled 0 gets them
    with flipped directions ``(1 - d, j)``, so that every image is pushed away from its class.
    A coordinate already edited for the image is skipped and the next attribute taken, so each
    image gets ``min(k, distinct coordinates)`` edits. ``labels [N]`` (0 or 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels: expected [N] of 0 and 1")
    ranked = _pairs(attributes)
    flipped = [(1 - d, j) for d, j in ranked]
    return _plan(labels, [ranked if c == 1 else flipped for c in labels], k)


def independent_sufficiency_plan(effects, labels, k: int = SUFFICIENCY_K,
                                 positive_only: bool = False) -> SufficiencyPlan:
    """Edits for the sufficiency measure, image-specific variant: image ``n`` gets its own top-``k``
    ``independent_ranking`` towards the other class ``1 - labels[n]`` (two classes)."""
    e = _effects(effects)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (e.shape[0],) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels: expected [{e.shape[0]}] of 0 and 1")
    per_image = [[(d, j) for d, j, _ in independent_ranking(e[n], 1 - int(labels[n]), k,
                                                             positive_only=positive_only)]
                 for n in range(e.shape[0])]
    return _plan(labels, per_image, k)


def flipped(logits_before, logits_after) -> np.ndarray:
    """``[N, C]`` and ``[N, C]`` -> ``[N]`` bool: the predicted class (argmax) changed."""
    b, a = np.asarray(logits_before), np.asarray(logits_after)
    if b.shape != a.shape or b.ndim != 2:
        raise ValueError(f"logits: expected two [N, C] arrays of one shape, got {list(b.shape)} and {list(a.shape)}")
    return np.argmax(b, axis=1) != np.argmax(a, axis=1)


def sufficiency_fraction(logits_before, logits_after, mask=None) -> float:
    """The sufficiency measure: the fraction of images (those in ``mask [N]`` if given) whose
    predicted class differs between ``logits_before`` and ``logits_after`` (``[N, C]`` logits or
    probabilities). An image that got no edit counts as not flipped only if it did not flip."""
    f = flipped(logits_before, logits_after)
    if mask is not None:
        f = f[np.asarray(mask, dtype=bool)]
    if f.size == 0:
        raise ValueError("sufficiency_fraction: no images")
    return float(f.mean())
