"""The float64 truth of AttFind's effects, and the verdict on float32 effects.

TF's effects (``examples_1.tfrecord``) and the PyTorch backend's are both float32 runs of the
same arithmetic; the 1e-4 bar that used to compare them was tuned on seeded weights. Here both
are judged as ``verify`` judges a layer (``porting.verify.judge``): against the same effects
computed in float64 by the ported modules (``TorchEffects`` with ``dtype=torch.float64``, the
readable classifier), each float32 run's error must be within ``Rule.factor`` of the other's.
The rule is applied both ways because the truth comes from the port's side: a wrong port would
make *TF's* error against it large, not its own. The float64 port itself is held to TF's float64
run by ``verify --float64`` (1e-9 relative).
"""
from __future__ import annotations

import numpy as np

DEFAULT_TRUTH_IMAGES = 8
DEFAULT_TRUTH_COORDINATES = 64


def truth_coordinates(num_styles: int, count: int = DEFAULT_TRUTH_COORDINATES, must=()) -> np.ndarray:
    """``count`` coordinates spread evenly over StyleSpace (every layer gets its share), plus
    ``must`` (the ranking's); all of them when ``count`` >= ``num_styles``."""
    spread = np.unique(np.linspace(0, num_styles - 1, min(count, num_styles)).round().astype(int))
    return np.union1d(spread, np.asarray(list(must), int)).astype(int)


def float64_effects(generator, classifier, dlatents: np.ndarray, images, shift_size: float = 1.0,
                    batch_size: int = 128, coordinates=None, device: str = "cpu",
                    on_progress=None) -> tuple[np.ndarray, np.ndarray]:
    """``(base [n, C], effects [n, 2, S, C])`` in float64 for the rows ``images`` of ``dlatents``
    (``coordinates``: only these, the others left 0); the style ranges come from every dlatent,
    as in the float32 run."""
    import torch

    from attfind.effects_pt import TorchEffects
    from attfind.selection import style_ranges

    backend = TorchEffects(generator, classifier, batch_size=batch_size, device=device, optimize=False,
                          dtype=torch.float64)
    lo, hi = style_ranges(backend.styles(dlatents))
    out = [backend.image(dlatents[i], lo, hi, shift_size, coordinates=coordinates, on_progress=on_progress)
           for i in images]
    return np.stack([b for b, _ in out]), np.stack([e for _, e in out])


def judge_effects(tf: tuple, pt: tuple, truth: tuple) -> dict:
    """Each argument ``(base, effects)`` over the same images. Returns the verdict as JSON-ready
    data: one row for the base logits, one for the effects, and ``passed``."""
    from dataclasses import asdict

    from porting.verify import RULE, judge

    rows = [judge("base logits", tf[0], pt[0], truth[0], symmetric=True),
            judge("effects", tf[1], pt[1], truth[1], symmetric=True)]
    return {"images": int(len(truth[0])), "rule": RULE.to_json(), "passed": all(r.passed for r in rows),
            "score": max(r.score for r in rows), "rows": [asdict(r) for r in rows]}
