"""The images an AttFind run works on, as one object: what the steps after the effects (the
sufficiency measure, the pictures, the tfrecord comparison, the discriminator filter, the flip
rates) all take, instead of the same six arguments each.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attfind import selection as sel


@dataclass
class Setting:
    """``backend``: the effects backend (``TorchEffects``: its ``space``, ``styles``,
    ``edited_outputs``); ``dlatents [N, D]`` and their ``styles [N, S]``; the style ranges
    (AttFind's step 1) and the shift size; once computed, the unedited logits ``base [N, C]`` and
    the ``effects [N, 2, S, C]``."""
    backend: object
    dlatents: np.ndarray
    styles: np.ndarray
    style_min: np.ndarray
    style_max: np.ndarray
    shift_size: float = 1.0
    base: np.ndarray | None = None
    effects: np.ndarray | None = None

    @classmethod
    def of(cls, backend, dlatents: np.ndarray, shift_size: float = 1.0) -> "Setting":
        """The style vectors of ``dlatents`` through ``backend`` and their ranges."""
        styles = backend.styles(dlatents)
        lo, hi = sel.style_ranges(styles)
        return cls(backend, dlatents, styles, lo, hi, float(shift_size))

    def edited(self, plan):
        """``(images, logits)`` of every image with its edits of ``plan`` (a
        ``sufficiency.SufficiencyPlan``) made, AttFind's shift rule."""
        deltas = plan.deltas(self.backend.space, self.styles, self.style_min, self.style_max, self.shift_size)
        return self.backend.edited_outputs(self.dlatents, deltas)
