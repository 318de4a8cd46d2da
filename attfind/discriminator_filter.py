"""The notebook's discriminator filter (``use_discriminator``) on AttFind's greedy picks. NumPy
only, part of the AttFind core (it imports only ``attfind.selection``); each backend supplies the
discriminator's changes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from attfind.selection import Reject


DISCRIMINATOR_THRESHOLD = 0.2
DISCRIMINATOR_IMAGES = 10
DISCRIMINATOR_EFFECT = 0.2
DISCRIMINATOR_SHIFT = 2.0


class DiscriminatorFilter:
    """The notebook's optional filter (``use_discriminator``), with the notebook's rule: a would-be
    greedy pick ``(d, j)`` for target class ``c`` is rejected when shifting coordinate ``j``
    changes the discriminator's output by more than ``threshold`` (0.2) on any affected image.

    Affected images, for each of the two directions of ``j`` (both are tried, whichever ``d``
    is): the greedy run's images (those of the other class) on which that direction raises class
    ``c``'s logit by more than ``effect_threshold`` (0.2), the first ``max_images`` (10) of them
    in image order. The change is ``|D(after) - D(before)|``, each image alone, where before is
    the clamped image with its dlatent's label probabilities and after is the clamped image with
    coordinate ``j`` shifted by ``shift_size`` (2, the notebook filter's own default, not
    AttFind's 1) times the way to its min or max, with the classifier's softmax on it as labels.
    Left out: the notebook's greedy also stops when a pick's coordinate is 0 while the filter is
    on (``if sindex == 0: break``), which looks like a slip; here coordinate 0 is a coordinate.

    ``changes(images, d, j) -> [len(images)]`` is the backend's part (TF: the style-bias shift
    and the SavedModels; PyTorch: the ported modules); everything else is here, so both
    backends decide alike. Every decision is recorded in ``decisions``."""

    def __init__(self, changes: Callable[[list, int, int], np.ndarray], threshold: float = DISCRIMINATOR_THRESHOLD,
                 max_images: int = DISCRIMINATOR_IMAGES, effect_threshold: float = DISCRIMINATOR_EFFECT):
        self.changes = changes
        self.threshold = float(threshold)
        self.max_images = int(max_images)
        self.effect_threshold = float(effect_threshold)
        self.decisions: list[dict] = []

    def affected(self, effects, target_class: int, image_mask, direction: int, j: int) -> list[int]:
        e = np.asarray(effects)[:, direction, j, target_class]
        idx = np.flatnonzero(np.asarray(image_mask, bool) & (e > self.effect_threshold))
        return [int(n) for n in idx[:self.max_images]]

    def bind(self, effects, target_class: int, image_mask) -> Reject:
        def reject(d: int, j: int) -> bool:
            record = {"target_class": int(target_class), "direction": int(d), "coordinate": int(j),
                      "images": [], "changes": [], "max_change": 0.0, "rejected": False}
            for sign in (0, 1):
                images = self.affected(effects, target_class, image_mask, sign, j)
                ch = [float(x) for x in np.abs(np.asarray(self.changes(images, sign, int(j)), np.float64))] \
                    if images else []
                record["images"].append(images)
                record["changes"].append(ch)
                record["max_change"] = max([record["max_change"]] + ch)
                if any(x > self.threshold for x in ch):
                    record["rejected"] = True
                    break
            self.decisions.append(record)
            return record["rejected"]
        return reject

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "max_images": self.max_images, "effect_threshold": self.effect_threshold,
                "rule": "reject (d, j) when, for either direction of j, one of its affected images (effect on the "
                        "target class > effect_threshold, the first max_images of the greedy run's images) changes "
                        "the discriminator's output by more than threshold",
                "rejected": [[x["direction"], x["coordinate"]] for x in self.decisions if x["rejected"]],
                "decisions": self.decisions}
