"""StyleSpace bookkeeping, written once: coordinates, layers and AttFind's shifts.

StyleSpace coordinate ``j`` is position ``j`` of the concatenated conv style vectors, in the
order block 4, then each resolution's conv0 and conv1 (the ToRGB styles are not part of it).
``StyleSpace(sizes)`` (``sizes[i]``: the width of conv style layer ``i``) turns a coordinate
into ``(layer, channel)`` and back, and computes AttFind's shift: coordinate ``j`` of a style
vector ``s`` moves by ``shift_size * (target - s[j])``, the target being the coordinate's
smallest value over the images (direction 0) or its largest (direction 1).

Pure NumPy (no torch, no TF), so the generator, both AttFind backends, the pictures and the
sufficiency code share it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class StyleSpace:
    def __init__(self, sizes: Sequence[int]):
        self.sizes = [int(s) for s in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)   # layer i: offsets[i]..[i+1]
        self.size = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.size

    def split(self, j: int) -> tuple[int, int]:
        """Coordinate -> (conv style layer, channel)."""
        j = int(j)
        if not 0 <= j < self.size:
            raise IndexError(f"StyleSpace coordinate {j} out of range (size {self.size})")
        layer = int(np.searchsorted(self.offsets, j, side="right")) - 1
        return layer, j - int(self.offsets[layer])

    def coordinate(self, layer: int, channel: int) -> int:
        return int(self.offsets[layer]) + int(channel)

    def layer_slice(self, layer: int) -> slice:
        return slice(int(self.offsets[layer]), int(self.offsets[layer + 1]))

    @staticmethod
    def targets(style_min, style_max) -> np.ndarray:
        """``[2, S]``: where direction 0 (the min) and direction 1 (the max) move each coordinate."""
        return np.stack([np.asarray(style_min), np.asarray(style_max)])

    @staticmethod
    def delta(style_j: float, target_j: float, shift_size: float = 1.0) -> float:
        """The change of one coordinate: ``shift_size * (target - style)``."""
        return shift_size * (target_j - style_j)

    def deltas(self, style, style_min, style_max, shift_size: float = 1.0) -> np.ndarray:
        """Every coordinate's change in both directions, ``[..., 2, S]`` for styles ``[..., S]``:
        ``[..., 0, j]`` towards the min, ``[..., 1, j]`` towards the max. With shift size 1 the
        coordinate lands exactly on the end of its range."""
        s, targets = np.asarray(style), self.targets(style_min, style_max)
        if s.shape[-1] != targets.shape[-1] or s.ndim not in (1, 2):
            raise ValueError(f"style {list(s.shape)} does not match style_min/max {list(targets.shape[1:])}")
        return self.delta(s[..., None, :], targets, shift_size)
