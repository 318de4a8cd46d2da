"""The float64 truth of AttFind's effects, and the verdict on float32 effects.

TF's effects (``examples_1.tfrecord``) and the PyTorch backend's are both float32 runs of the
same arithmetic; the 1e-4 bar that used to compare them was tuned on seeded weights. Here both
are judged as ``verify`` judges a layer (``porting.verdict.judge``): against the same effects
computed in float64 by the ported modules (``TorchEffects`` with ``dtype=torch.float64``, the
readable classifier), each float32 run's error must be within ``VerdictRule.factor`` times the error
of a model float32 implementation (``porting.rounding``: the same float64 effects with every
op's float32 rounding simulated), a bound that does not depend on either framework's kernels.
Both runs are held to it because the truth comes from the port's side: a wrong port would make
*TF's* error against it large, not its own. The float64 port itself is held to TF's float64
run by ``verify`` (1e-9 relative; on a release folder its effects too, ``crosscheck.verify``).
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


def float64_backend(generator, classifier, batch_size: int = 128, device: str = "cpu"):
    """The PyTorch backend in float64 (copies of the modules, the readable classifier)."""
    import torch

    from attfind.effects_pt import TorchEffects

    return TorchEffects(generator, classifier, batch_size=batch_size, device=device, optimize=False,
                        dtype=torch.float64)


def effects_of(backend, dlatents: np.ndarray, images, shift_size: float = 1.0, coordinates=None,
               on_progress=None) -> tuple[np.ndarray, np.ndarray]:
    """``(base [n, C], effects [n, 2, S, C])`` of ``backend`` for the rows ``images`` of
    ``dlatents`` (``coordinates``: only these, the others left 0); the style ranges come from
    every dlatent, as in the sweep itself."""
    from attfind.selection import style_ranges

    lo, hi = style_ranges(backend.styles(dlatents))
    out = [backend.image(dlatents[i], lo, hi, shift_size, coordinates=coordinates, on_progress=on_progress)
           for i in images]
    return np.stack([b for b, _ in out]), np.stack([e for _, e in out])


def float64_effects(generator, classifier, dlatents: np.ndarray, images, shift_size: float = 1.0,
                    batch_size: int = 128, coordinates=None, device: str = "cpu",
                    on_progress=None) -> tuple[np.ndarray, np.ndarray]:
    """``effects_of`` the float64 PyTorch backend: the truth."""
    return effects_of(float64_backend(generator, classifier, batch_size, device), dlatents, images, shift_size,
                      coordinates, on_progress)


# The rounding model's error of the effects is measured on the first MODEL_IMAGES of the truth's
# images (all its coordinates): 2 noisy float64 runs of all 8 cost about 4x the truth itself on
# the demo release, and the error's scale is a property of the evaluations, not of which image
# (the largest of 520 values instead of 2,080: 10-20% lower on the demo, inside the factor's margin;
# docs/verification.md).
MODEL_IMAGES = 2


def effects_model_error(generator, classifier, dlatents: np.ndarray, images, shift_size: float = 1.0,
                        batch_size: int = 128, coordinates=None, truth: tuple | None = None,
                        samples: int | None = None) -> dict[str, float]:
    """The rounding model's float32 error of the base logits and of the effects
    (``porting.rounding.simulate`` on ``float64_effects``; ``truth``: its clean result, if at hand)."""
    from porting import rounding

    backend = float64_backend(generator, classifier, batch_size)

    def run():
        base, effects = effects_of(backend, dlatents, images, shift_size, coordinates)
        return {"base logits": base, "effects": effects}

    clean = None if truth is None else {"base logits": truth[0], "effects": truth[1]}
    return rounding.simulate(run, rounding.SAMPLES if samples is None else samples, clean=clean)[1]


def judge_effects(tf: tuple, pt: tuple, truth: tuple, model_error: dict[str, float]) -> dict:
    """Each of ``tf``, ``pt``, ``truth``: ``(base, effects)`` over the same images;
    ``model_error``: ``effects_model_error``. Returns the verdict as JSON-ready data: one row for
    the base logits, one for the effects (each with PyTorch's score and TF's), and ``passed``:
    both float32 runs within the bound."""
    from dataclasses import asdict

    from porting.verdict import RULE, judge

    rows = [judge(name, t, got32=p, tf32=f, model_error=model_error[name])
            for name, f, p, t in zip(("base logits", "effects"), tf, pt, truth)]
    scores = [s for r in rows for s in (r.score, r.tf_score)]
    return {"images": int(len(truth[0])), "rule": RULE.to_json(), "passed": max(scores) <= 1,
            "score": max(scores), "rows": [asdict(r) for r in rows]}
