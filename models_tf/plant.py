"""A planted attribute: make the reference classifier's decision follow one StyleSpace coordinate.

A classifier with random weights responds to the generator's images in no particular way, and
AttFind on it ranks near-ties: a test that both backends find "the same" attributes would prove
little. So the reference release fits the classifier's last layer (``conv_preds``, on the
pooled features) to a known StyleSpace coordinate ``j``:

1. ``j`` is chosen (seeded) among the coordinates whose move across their range changes the
   generated image most, in the middle of the network (coarse layers move everything, the
   finest ones little);
2. training images are generated with ``j`` set to values across its range, plus images with
   other coordinates moved to the ends of their ranges and ``j`` untouched (so the classifier
   learns to ignore those);
3. a ridge regression maps the pooled features to ``t = sign * (s_j - median) / range * SCALE``
   and the head becomes ``logit_0 = t / 2 + b``, ``logit_1 = -t / 2 + b``.

With ``sign = +1`` moving ``j`` up raises class 0: in the notebook's convention (attributes move
class 1 towards class 0 in their direction) the planted attribute is ``direction = 1``;
``sign = -1`` plants ``direction = 0``.
"""
from __future__ import annotations

import numpy as np

SCALE = 3.0          # logit difference across the coordinate's range: +-3 at the ends
RIDGE = 1e-2         # relative to the features' mean variance


def _styles(generator, w):
    conv, rgb = generator.style_vector_calculator(np.asarray(w, np.float32), training=False)
    return [np.asarray(s) for s in conv], [np.asarray(s) for s in rgb]


def _render(generator, conv, rgb, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(conv[0]), batch):
        images = generator.g_synthesis(([s[i:i + batch] for s in conv], [s[i:i + batch] for s in rgb]),
                                       training=False)
        out.append(np.clip(np.asarray(images), -1, 1))
    return np.concatenate(out)


def _split(sizes, j):
    for layer, size in enumerate(sizes):
        if j < size:
            return layer, j
        j -= size
    raise IndexError(j)


def _choose_coordinate(generator, conv, rgb, sizes, lo, hi, rng) -> tuple[int, float]:
    """Step 1: a seeded sample of coordinates outside the two finest layers; the one whose move
    across its range changes the first 8 images most, and that change."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    pool = np.arange(offsets[max(1, len(sizes) - 2)])
    candidates = np.sort(rng.choice(pool, size=min(48, len(pool)), replace=False))
    probe = slice(0, 8)
    change = []
    for j in candidates:
        layer, c = _split(sizes, int(j))
        ends = []
        for value in (lo[j], hi[j]):
            edited = [s[probe].copy() for s in conv]
            edited[layer][:, c] = value
            ends.append(_render(generator, edited, [s[probe] for s in rgb]))
        change.append(np.abs(ends[1] - ends[0]).mean())
    return int(candidates[int(np.argmax(change))]), float(max(change))


def _training_styles(conv, sizes, lo, hi, j: int, rng) -> tuple[list, np.ndarray, int]:
    """Step 2: the styles of the training images (every image as it is; with ``j`` at 7 points
    across its range; 4 times with another coordinate moved to an end, ``j`` as it is), the value
    of ``j`` in each, and how many variants each base image has."""
    layer, c = _split(sizes, j)
    n, num_styles = len(conv[0]), sum(sizes)
    width = float(hi[j] - lo[j])
    rows, targets_s = [[s.copy() for s in conv]], [conv[layer][:, c].copy()]   # first: as they are
    for frac in np.linspace(-0.1, 1.1, 7):
        edited = [s.copy() for s in conv]
        edited[layer][:, c] = lo[j] + frac * width
        rows.append(edited)
        targets_s.append(edited[layer][:, c].copy())
    for _ in range(4):
        edited = [s.copy() for s in conv]
        others = rng.choice(np.setdiff1d(np.arange(num_styles), [j]), size=n)
        for i, k in enumerate(others):
            kl, kc = _split(sizes, int(k))
            edited[kl][i, kc] = lo[k] if rng.random() < 0.5 else hi[k]
        rows.append(edited)
        targets_s.append(conv[layer][:, c].copy())
    all_conv = [np.concatenate([r[i] for r in rows]) for i in range(len(sizes))]
    return all_conv, np.concatenate(targets_s), len(rows)


def _fit_head(classifier, images: np.ndarray, t: np.ndarray, n: int, variants: int, rng) -> float:
    """Step 3: a ridge regression from the pooled features to the target logit difference ``t``,
    with one offset per base image (the head reads the coordinate, not the image), written into
    the classifier's head; the fit's R^2."""
    import tf_keras as keras

    pooled_model = keras.Model(classifier.input, classifier.get_layer("global_average_pooling2d").output)
    feats = np.concatenate([np.asarray(pooled_model(images[i:i + 64].transpose(0, 2, 3, 1), training=False))
                            for i in range(0, len(images), 64)]).reshape(len(images), -1).astype(np.float64)
    # Fixed effects: fit the change of the features *within* each base image's variants to the
    # change of t, so the head reads the coordinate and not which image it is.
    groups = np.tile(np.arange(n), variants)
    f_mean = np.stack([feats[groups == g].mean(axis=0) for g in range(n)])[groups]
    t_mean = np.array([t[groups == g].mean() for g in range(n)])[groups]
    x, y = feats - f_mean, t - t_mean
    lam = RIDGE * x.var(axis=0).mean() * len(x)
    beta = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
    r2 = 1 - ((x @ beta - y) ** 2).mean() / y.var()
    # the threshold: half of the unedited images (the first group) on each side
    b = -float(np.median(feats[:n] @ beta))
    head = classifier.get_layer("conv_preds")
    offset = float(rng.uniform(0.2, 0.5))  # a common non-zero bias (softmax ignores it, a dropped bias would not)
    kernel = np.stack([beta / 2, -beta / 2], axis=1)
    bias = np.array([b / 2 + offset, -b / 2 + offset])
    head.set_weights([kernel.reshape(head.kernel.shape).astype(np.float32), bias.astype(np.float32)])
    return float(r2)


def plant(generator, classifier, dlatents: np.ndarray, seed: int = 0, progress=None) -> dict:
    """Refit ``classifier``'s head in place so its decision follows one coordinate of the styles
    of ``dlatents [N, D]``; returns ``{"coordinate": j, "direction": d, ...}``."""
    step = progress or (lambda msg: None)
    rng = np.random.default_rng(seed + 7919)
    conv, rgb = _styles(generator, dlatents)
    sizes = [s.shape[1] for s in conv]
    flat = np.concatenate(conv, axis=1)
    lo, hi = flat.min(axis=0), flat.max(axis=0)

    j, change = _choose_coordinate(generator, conv, rgb, sizes, lo, hi, rng)
    layer, c = _split(sizes, j)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    step(f"planting StyleSpace coordinate {j} (layer {layer}, channel {c}), "
         f"direction {int(sign > 0)}; mean image change min->max {change:.3f}")

    all_conv, s_j, variants = _training_styles(conv, sizes, lo, hi, j, rng)
    step(f"planting: {len(all_conv[0])} training images")
    images = _render(generator, all_conv, [np.concatenate([s] * variants) for s in rgb])
    mid, width = float(np.median(flat[:, j])), float(hi[j] - lo[j])
    t = sign * (s_j - mid) / width * 2 * SCALE
    r2 = _fit_head(classifier, images, t, len(dlatents), variants, rng)
    step(f"planting: head fitted, R^2 {r2:.3f} on {len(t)} images")
    return {"coordinate": j, "direction": int(sign > 0), "layer": int(layer), "channel": int(c),
            "fit_r2": float(r2)}
