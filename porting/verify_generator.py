"""Verification hooks for the StylEx generator (imports TensorFlow).

Inputs are dlatents: the 250 real ones of the release (``../shared/data/released_dlatents.pkl``,
what the released encoder produced) when the model's dlatent size is the release's 514;
otherwise the same values cut or padded to the model's size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from porting.verify import Hooks

RELEASED_DLATENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "released_dlatents.pkl"


def released_dlatents() -> np.ndarray:
    from porting.dlatents import dlatent_matrix, load_dlatents

    return dlatent_matrix(load_dlatents(RELEASED_DLATENTS))


def make_inputs(config: dict, n: int, size: int, seed: int) -> np.ndarray:
    """n dlatents [n, w_dim], starting at index ``seed`` of the released ones (wrapping)."""
    real = released_dlatents()
    rows = real[(np.arange(n) + seed) % len(real)]
    label, latent = config["label_size"], config["w_dim"] - config["label_size"]
    z = rows[:, :min(latent, 512)]
    if latent > z.shape[1]:
        z = np.concatenate([z, np.random.default_rng(seed).normal(0, z.std(), (n, latent - z.shape[1]))], 1)
    probs = rows[:, 512:] if label == 2 else np.random.default_rng(seed).dirichlet(np.ones(label), n)
    return np.concatenate([z, probs], axis=1).astype(np.float32)


def check_inputs(w: np.ndarray) -> None:
    assert w.ndim == 2 and w.shape[0] > 1, f"need a batch of dlatents, got shape {w.shape}"
    assert float(w.std(axis=0).mean()) > 0.1, "dlatents barely differ"


def check_images(images: np.ndarray) -> None:
    """Generated images must have structure for parity on them to mean anything."""
    clamped = float(np.mean(np.abs(images) >= 1))
    assert clamped < 0.01, f"{clamped:.1%} of pixels clamped at +-1"
    assert float(images.std()) > 0.05, "images nearly constant"
    assert float(images.std(axis=0).mean()) > 0.02, "images do not depend on the dlatent"


def tf_rebuild(config: dict, dtype: str, variables):
    from models_tf.generator import assign_variables, build_generator

    model = build_generator(config, dtype=dtype)
    assign_variables(model, variables)
    return model


def tf_trace(model, w: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.trace(w.astype(dtype)).items()}


def pt_trace(model, w: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        acts = model.trace(torch.from_numpy(w.astype(dtype)))
    return {k: v.cpu().numpy() for k, v in acts.items()}


def load_savedmodel(root: Path):
    import tf_keras as keras

    return keras.models.load_model(str(root), compile=False)


def savedmodel_output(model, w: np.ndarray) -> np.ndarray:
    """The notebook's calls on the loaded SavedModel: style calculator, then synthesis."""
    styles = model.style_vector_calculator(w.astype(np.float32), training=False)
    return np.asarray(model.g_synthesis(styles, training=False))


HOOKS = Hooks(
    output_tol={"float32": 1e-4, "float64": 1e-9},   # issue 3's bars, on the images
    layer_tol={"float32": 1e-4, "float64": 1e-9},
    make_inputs=make_inputs,
    check_inputs=check_inputs,
    tf_rebuild=tf_rebuild,
    tf_trace=tf_trace,
    pt_trace=pt_trace,
    load_savedmodel=load_savedmodel,
    savedmodel_output=savedmodel_output,
    default_size=lambda config: config["resolution"],
)
