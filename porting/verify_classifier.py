"""Verification hooks for the MobileNetV1 classifier (imports TensorFlow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from porting.verify import Hooks

# PyTorch module path -> Keras layer name, in network order. Built from the config so that the
# padding layers appear exactly where the TF model has them.


def trace_points(config: dict) -> list[tuple[str, str]]:
    from models_pt.classifier import BLOCKS

    points = [("stem.conv", "conv1"), ("stem.bn", "conv1_bn"), ("stem.act", "conv1_relu")]
    for i, (_, stride) in enumerate(BLOCKS):
        k = i + 1
        if stride == 2 and config["strided_padding"] == "explicit":
            points.append((f"blocks.{i}.pad", f"conv_pad_{k}"))
        points += [(f"blocks.{i}.dw", f"conv_dw_{k}"), (f"blocks.{i}.dw_bn", f"conv_dw_{k}_bn"),
                   (f"blocks.{i}.dw_act", f"conv_dw_{k}_relu"), (f"blocks.{i}.pw", f"conv_pw_{k}"),
                   (f"blocks.{i}.pw_bn", f"conv_pw_{k}_bn"), (f"blocks.{i}.pw_act", f"conv_pw_{k}_relu")]
    points += [("head.pool", "global_average_pooling2d"), ("head.dropout", "dropout"),
               ("head.conv", "conv_preds"), ("head.flatten", "reshape_2"), ("", "predictions")]
    return points


def make_inputs(config: dict, n: int, size: int, seed: int) -> np.ndarray:
    from porting.samples import sample_images

    return sample_images(n, size, seed=seed + 1000)  # NHWC, [-1, 1]


def check_inputs(x: np.ndarray) -> None:
    clamped = float(np.mean(np.abs(x) >= 0.999))
    assert x.ndim == 4 and x.shape[0] > 1, f"need a batch of images, got shape {x.shape}"
    assert clamped < 0.05, f"{clamped:.1%} of input pixels are clamped at +-1"
    assert float(x.std()) > 0.1, "input images are nearly constant"
    assert float(np.abs(x[0] - x[1]).max()) > 0.1, "input images are identical"


def tf_rebuild(config: dict, dtype: str, variables):
    from models_tf.classifier import assign_by_name, build_classifier

    model = build_classifier({**config, "input_size": 0}, dtype=dtype)
    assign_by_name(model, variables)
    return model


def tf_trace(model, x: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    import tf_keras as keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    outs = probe(x.astype(dtype), training=False)
    return {layer.name: o.numpy() for layer, o in zip(layers, outs)}


def pt_trace(model, x: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Forward hooks on the modules of ``trace_points``; 4-d outputs go back to NHWC."""
    import torch

    names = dict(trace_points(model.config))
    modules = dict(model.named_modules())
    captured: dict[str, np.ndarray] = {}
    handles = []
    for path, label in names.items():
        def hook(_m, _inp, out, label=label):
            a = out.detach().cpu().numpy()
            captured[label] = a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
        handles.append(modules[path].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(dtype)))
    finally:
        for h in handles:
            h.remove()
    return {label: captured[label] for label in names.values()}


def load_savedmodel(root: Path):
    """The checkpoint's own SavedModel, loaded as the notebook loads it."""
    import tf_keras as keras

    return keras.models.load_model(str(root), compile=False)


def savedmodel_size(model) -> int | None:
    shape = getattr(model, "input_shape", None)
    return shape[1] if shape and len(shape) == 4 else None


def savedmodel_output(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x.astype(np.float32), training=False))


HOOKS = Hooks(
    output_tol={"float32": 1e-5, "float64": 1e-10},  # issue 2's bars, on the logits
    layer_tol={"float32": 1e-4, "float64": 1e-10},
    make_inputs=make_inputs,
    check_inputs=check_inputs,
    tf_rebuild=tf_rebuild,
    tf_trace=tf_trace,
    pt_trace=pt_trace,
    load_savedmodel=load_savedmodel,
    savedmodel_size=savedmodel_size,
    savedmodel_output=savedmodel_output,
)
