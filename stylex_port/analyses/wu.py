"""Wu et al.'s StyleSpace attribute selection ("StyleSpace analysis", 2021), the baseline the
reproduction studies compared AttFind with: class means of the style vectors, no effects needed.
NumPy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


WU_TOP_FRACTION = 0.02
WU_THRESHOLD = 0.9
WU_MIN_IMAGES = 5


@dataclass
class WuSelection:
    """Which images "exhibit" a class for Wu et al.'s StyleSpace analysis: the top ``fraction``
    by that class's probability (``mode="top"``), those above ``threshold`` (``"threshold"``),
    or ``"auto"``: the top fraction unless it leaves fewer than ``min_images``, then the
    threshold, and if that leaves fewer too, the ``min_images`` most probable."""
    mode: str = "auto"
    fraction: float = WU_TOP_FRACTION
    threshold: float = WU_THRESHOLD
    min_images: int = WU_MIN_IMAGES

    def choose(self, probs_of_class: np.ndarray) -> tuple[np.ndarray, str]:
        p = np.asarray(probs_of_class, np.float64)
        order = np.argsort(-p, kind="stable")
        top = order[:max(1, int(math.ceil(self.fraction * len(p))))]
        above = np.flatnonzero(p > self.threshold)
        if self.mode == "top":
            return np.sort(top), f"top {self.fraction:g}"
        if self.mode == "threshold":
            if not len(above):
                raise ValueError(f"no image has a probability above {self.threshold:g} for this class")
            return above, f"p > {self.threshold:g}"
        if self.mode != "auto":
            raise ValueError(f"WuSelection mode {self.mode!r}: expected auto, top or threshold")
        if len(top) >= self.min_images:
            return np.sort(top), f"top {self.fraction:g}"
        if len(above) >= self.min_images:
            return above, f"p > {self.threshold:g} (the top {self.fraction:g} is {len(top)} images)"
        return np.sort(order[:self.min_images]), (f"the {self.min_images} most probable (top {self.fraction:g}: "
                                                  f"{len(top)} images, p > {self.threshold:g}: {len(above)})")


def wu_ranking(styles, probs, target_class: int, selection: WuSelection = WuSelection()) -> tuple[list, dict]:
    """Wu et al.'s attribute selection for one class: ``z[j] = (mean over the images exhibiting
    the class of s[:, j] - mean over all images) / std over all images`` (coordinates that do not
    vary get 0), ranked by ``|z|``, highest first (ties: the lower j); the direction is the sign
    (``d = 1``, towards the range's max, where ``z > 0``). Needs no effects: only the style vectors
    ``[N, S]`` and the classifier's probabilities ``[N, C]``. Returns ``([(d, j, z)], record)``."""
    st = np.asarray(styles, np.float64)
    pr = np.asarray(probs, np.float64)
    if st.ndim != 2 or pr.ndim != 2 or len(st) != len(pr):
        raise ValueError(f"styles [N, S] and probs [N, C] expected, got {list(st.shape)} and {list(pr.shape)}")
    chosen, rule = selection.choose(pr[:, target_class])
    std = st.std(axis=0)
    diff = st[chosen].mean(axis=0) - st.mean(axis=0)
    z = np.divide(diff, std, out=np.zeros_like(diff), where=std > 0)
    order = np.argsort(-np.abs(z), kind="stable")
    ranking = [(int(z[j] > 0), int(j), float(z[j])) for j in order]
    record = {"target_class": int(target_class), "rule": rule, "images": [int(i) for i in chosen],
              "num_images": int(len(chosen))}
    return ranking, record
