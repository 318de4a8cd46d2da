"""Verification hooks for the StylEx generator (imports TensorFlow).

Inputs are real dlatents of the release: those of the release folder being verified
(``<release>/dlatents.pkl``), else the 250 of the real release shipped with the project
(``../shared/data/released_dlatents.pkl``, what the released encoder produced); cut or padded
to the model's dlatent size when it is not the release's 514. Without either file (a clone
without ``shared/``, one zip verified on its own), seeded Gaussian dlatents, and the report says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from porting.verify import Hooks

RELEASED_DLATENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "released_dlatents.pkl"
GAUSSIAN = "seeded Gaussian dlatents"   # the input source when no dlatents file is at hand


def released_dlatents(path: Path | None = None) -> np.ndarray:
    from porting.dlatents import dlatent_matrix, load_dlatents

    return dlatent_matrix(load_dlatents(Path(path) if path else RELEASED_DLATENTS))


def input_source(dlatents: Path | None = None) -> str:
    """Where ``make_inputs`` takes its dlatents from."""
    if dlatents is not None and Path(dlatents).exists():
        return str(dlatents)
    return str(RELEASED_DLATENTS) if RELEASED_DLATENTS.exists() else GAUSSIAN


def make_inputs(config: dict, n: int, size: int, seed: int, dlatents: Path | None = None) -> np.ndarray:
    """n dlatents [n, w_dim], starting at index ``seed`` of the real ones (wrapping); see the
    module's docstring for where they come from."""
    source = input_source(dlatents)
    if source == GAUSSIAN:
        real = np.random.default_rng(seed).normal(0, 1, (max(n, 2), 512 + 2)).astype(np.float32)
        real[:, 512:] = np.random.default_rng(seed + 1).dirichlet(np.ones(2), len(real))
    else:
        real = released_dlatents(source)
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
    input_source=input_source,
)
