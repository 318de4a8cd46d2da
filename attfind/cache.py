"""AttFind's per-image effect cache: an interrupted run resumes where it stopped.

Each image's effects are one ``image_NNNNN.npz`` holding the run's key (``cache_key``: the
weights' hashes, the dlatents, the style ranges and the shift size), its base logits and its
effects, written to a temporary file and renamed. ``compute_effects`` takes what the cache has
and computes the rest from an ``EffectSource`` (this process: ``local_source``; Ray workers:
``attfind.distributed.sweep``), caching each image as it arrives.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from attfind.errors import AttFindInputError
from porting.atomic import atomic_path

EffectSource = Callable[[list, Callable[[float], None]], Iterator[tuple[int, np.ndarray, np.ndarray]]]
"""``source(todo, progress)`` yields ``(image, base [C], effects [2, S, C])`` for every image of
``todo``; ``progress(total)`` reports the coordinates done so far."""


def cache_key(entries: dict, dlatents: np.ndarray, style_min, style_max, shift_size: float,
              arithmetic: str = "float32") -> str:
    """What the cached effects depend on: the weights (their hashes in the manifest), the
    dlatents, the style ranges, the shift size and the sweep's arithmetic
    (``TorchEffects.arithmetic``; float32 keys are those of the versions before it)."""
    h = hashlib.sha256()
    h.update(json.dumps({k: e.get("weights_sha256", e.get("weights")) for k, e in sorted(entries.items())},
                        sort_keys=True).encode())
    for a in (dlatents, style_min, style_max):
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    h.update(repr(float(shift_size)).encode())
    if arithmetic != "float32":
        h.update(arithmetic.encode())
    return h.hexdigest()[:16]


def read_cached(path: Path, key: str):
    """An entry's ``(base, effects)`` if it holds ``key``, else None (absent, another run's, torn)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return None
            return z["base"], z["effects"]
    except Exception:  # a half-written or foreign file: recompute it
        return None


def local_source(backend, dlatents, style_min, style_max, shift_size: float = 1.0) -> EffectSource:
    """The single-process path: ``backend.image`` for each image in turn."""
    def source(todo, progress):
        done = 0.0
        for i in todo:
            def on_progress(k):
                nonlocal done
                done += k
                progress(done)
            base, effects = backend.image(dlatents[i], style_min, style_max, shift_size, on_progress=on_progress)
            yield i, base, effects
    return source


def write_cached(path: Path, key: str, base: np.ndarray, effects: np.ndarray) -> None:
    """One image's cache entry, written to a temporary file and renamed: a reader (this run
    resuming, or another run on the same cache) sees the whole entry or none."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), base=base, effects=effects)


def compute_effects(backend, dlatents, style_min, style_max, cache_dir: Path | None, key: str,
                    shift_size: float = 1.0, bar: Callable | None = None, log=print,
                    source: EffectSource | None = None):
    """Effects for every image, from the cache where it has them; returns (base [N, C],
    effects [N, 2, S, C], number computed now). ``source(todo, progress)`` computes the rest and
    yields ``(image, base, effects)`` in any order (default: ``local_source``; the Ray workers:
    ``attfind.distributed.sweep``); each result is cached as it arrives."""
    n, s = len(dlatents), backend.num_styles
    base = np.zeros((n, 2), np.float32)
    effects = np.zeros((n, 2, s, 2), np.float32)
    todo = []
    for i in range(n):
        hit = read_cached(cache_dir / f"image_{i:05d}.npz", key) if cache_dir else None
        if hit is None:
            todo.append(i)
        else:
            base[i], effects[i] = hit
    if len(todo) < n:
        log(f"effects: {n - len(todo)} of {n} images from the cache in {cache_dir}")
    if cache_dir:
        cache_dir.mkdir(parents=True, exist_ok=True)
    if not todo:
        return base, effects, 0
    source = source or local_source(backend, dlatents, style_min, style_max, shift_size)
    ctx = bar(len(todo) * s, "effects (coordinates)") if bar else None

    def progress(total: float):
        if ctx is not None:
            ctx.update(int(min(total, ctx.total)) - ctx.n)

    computed = set()
    try:
        for i, b, e in source(todo, progress):
            if i in computed:        # a source must yield each image once; never write an entry twice
                continue
            computed.add(i)
            base[i], effects[i] = b, e
            if cache_dir:
                write_cached(cache_dir / f"image_{i:05d}.npz", key, base[i], effects[i])
    finally:
        if ctx is not None:
            ctx.close()
    if len(computed) != len(todo):
        raise AttFindInputError(f"the effects of images {sorted(set(todo) - computed)[:10]} were not computed")
    return base, effects, len(todo)
