"""The interface every AttFind effects backend offers, whatever its framework.

AttFind's heavy step needs little of a framework: the StyleSpace vectors of dlatents, the
classifier's outputs on their images, and the outputs after edits of StyleSpace. Each backend
(``attfind.effects_tf.TFEffects``: the notebook's way, on the released SavedModels;
``attfind.effects_pt.TorchEffects``: the ported modules, batched) implements this protocol; the
effect cache, the tfrecord writer of the reference release, the parity tests and the benchmarks
take either. (The pictures, GANSpace and the float64 truth run on the PyTorch backend.)

Layer: ``attfind``, importing nothing of the project.
"""
from __future__ import annotations

from typing import Callable, Iterable, Protocol

import numpy as np


class EffectsBackend(Protocol):
    space: object            # the generator's models_pt.stylespace.StyleSpace
    num_styles: int          # StyleSpace coordinates, S

    def styles(self, dlatents: np.ndarray) -> np.ndarray:
        """dlatents ``[N, D]`` -> StyleSpace ``[N, S]`` (the conv styles, concatenated)."""

    def logits(self, dlatents: np.ndarray) -> np.ndarray:
        """The classifier's logits ``[N, C]`` on the clamped images of ``dlatents``."""

    def edited_outputs(self, dlatents: np.ndarray, deltas: np.ndarray | None = None,
                       batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Clamped images ``[N, 3, R, R]`` and logits ``[N, C]`` after adding ``deltas [N, S]`` to
        each image's StyleSpace vector (none: as they are); ``dlatents`` may be ``[N, D]`` or per
        style layer ``[N, layers, D]``."""

    def image(self, dlatent, style_min, style_max, shift_size: float = 1.0,
              coordinates: Iterable[int] | None = None, on_progress: Callable[[float], None] | None = None,
              style: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One image's ``(base logits [C], effects [2, S, C])``: every coordinate (or those of
        ``coordinates``; the others stay 0) moved to its min (d = 0) and max (d = 1) by AttFind's
        shift, the image regenerated, clamped and classified. ``on_progress(k)``: k more
        coordinates done. ``style``: the image's StyleSpace vector if the caller has it."""

    def discriminator_changes(self, discriminator, dlatents, styles, style_min, style_max,
                              shift_size: float = 2.0) -> Callable[[list, int, int], np.ndarray]:
        """``changes(images, d, j)`` for ``discriminator_filter.DiscriminatorFilter``."""
