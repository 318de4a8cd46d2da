"""Test images without TensorFlow: smooth colour images in [-1, 1] that exercise every layer."""
from __future__ import annotations

import numpy as np


def sample_images(n: int, size: int, seed: int = 0, channels_last: bool = True) -> np.ndarray:
    """Smooth random colour images in [-1, 1] (a few blobs and gradients; few pixels clamped)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    out = np.zeros((n, size, size, 3))
    for i in range(n):
        img = rng.normal(0, 0.2, 3)[None, None, :] + rng.normal(0, 0.3, 3) * xx[..., None] \
            + rng.normal(0, 0.3, 3) * yy[..., None]
        for _ in range(6):
            cy, cx = rng.uniform(-1, 1, 2)
            r = rng.uniform(0.1, 0.6)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img = img + blob[..., None] * rng.normal(0, 0.5, 3)
        img = img + 0.05 * rng.normal(size=img.shape)  # texture for the first convs
        out[i] = np.tanh(img)
    out = out.astype(np.float32)
    return out if channels_last else out.transpose(0, 3, 1, 2)
