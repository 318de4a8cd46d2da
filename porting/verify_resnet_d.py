"""Verification hooks for the encoder and the discriminator (imports TensorFlow).

Inputs: smooth random NCHW images in [-1, 1] (the same generator of test images as the
classifier's), and for the discriminator label probabilities drawn per image."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from porting.verify import Hooks


def make_images(config: dict, n: int, size: int, seed: int) -> np.ndarray:
    from porting.samples import sample_images

    return sample_images(n, config["resolution"], seed=seed + 2000, channels_last=False)


def make_labelled(config: dict, n: int, size: int, seed: int):
    labels = np.random.default_rng(seed).dirichlet(np.ones(config["label_size"]), n).astype(np.float32)
    return make_images(config, n, size, seed), labels


def check_images(x) -> None:
    from porting.verify_classifier import check_inputs

    check_inputs(np.transpose(x[0] if isinstance(x, tuple) else x, (0, 2, 3, 1)))


def tf_rebuild(kind: str):
    def rebuild(config: dict, dtype: str, variables):
        from models_tf.classifier import assign_by_name
        from models_tf.resnet_d import build

        model = build(kind, config, dtype)
        assign_by_name(model, variables)
        return model
    return rebuild


def _cast(inputs, dtype):
    return tuple(a.astype(dtype) for a in inputs) if isinstance(inputs, tuple) else inputs.astype(dtype)


def tf_trace(model, inputs, dtype: str) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.trace(_cast(inputs, dtype)).items()}


def pt_trace(model, inputs, dtype: str) -> dict[str, np.ndarray]:
    import torch

    args = [torch.from_numpy(a) for a in (_cast(inputs, dtype) if isinstance(inputs, tuple) else (inputs.astype(dtype),))]
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.trace(*args).items()}


def load_savedmodel(root: Path):
    import tf_keras as keras

    return keras.models.load_model(str(root), compile=False)


def savedmodel_output(model, inputs) -> np.ndarray:
    return np.asarray(model(_cast(inputs, np.float32) if isinstance(inputs, tuple) else inputs, training=False))


def _hooks(kind: str, make_inputs) -> Hooks:
    return Hooks(
        output_tol={"float32": 1e-4, "float64": 1e-9},   # issue 4's bars
        layer_tol={"float32": 1e-4, "float64": 1e-9},
        make_inputs=make_inputs, check_inputs=check_images, tf_rebuild=tf_rebuild(kind),
        tf_trace=tf_trace, pt_trace=pt_trace, load_savedmodel=load_savedmodel,
        savedmodel_output=savedmodel_output, default_size=lambda config: config["resolution"],
    )


ENCODER_HOOKS = _hooks("encoder", make_images)
DISCRIMINATOR_HOOKS = _hooks("discriminator", make_labelled)
