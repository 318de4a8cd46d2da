"""Reference MobileNetV1 classifier, laid out as release-format.md assumes the released one is.

The released classifier is a Keras MobileNetV1 (width 1.0, 256x256x3 input, 2 classes, logits
out). We build the same layer sequence and variable names with the Keras 2 API (``tf_keras``):
``conv1``/``conv1_bn``/``conv1_relu``, then for k = 1..13 ``conv_pad_k`` (strided blocks only),
``conv_dw_k``, ``conv_dw_k_bn``, ``conv_dw_k_relu``, ``conv_pw_k``, ``conv_pw_k_bn``,
``conv_pw_k_relu``, and the head ``global_average_pooling2d``, ``dropout``, ``conv_preds``,
``reshape_2``, ``predictions``.

``seeded_classifier`` gives it weights that exercise every conversion hazard while keeping the
signal alive through all 27 conv layers (see its docstring). The last section is the TF side of
verification (``reference_model``, ``trace_activations``, ``notebook_output``,
``notebook_input_size``), the same four functions in every module of ``models_tf`` that holds a model kind.
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras

from models_pt.release_facts import CLASSIFIER_ASSUMED

# (pointwise filters, depthwise stride) of the 13 depthwise-separable blocks.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def default_config(input_size: int = 256) -> dict:
    """The release configuration. What a checkpoint cannot show is assumed in one place,
    ``release_facts.CLASSIFIER_ASSUMED``: ``strided_padding='explicit'`` is keras.applications'
    ZeroPadding2D(((0, 1), (0, 1))) + 'valid' before each strided depthwise conv ('same' would be
    TF 'same' padding on the conv itself; they agree on even sizes, differ on odd ones)."""
    return {"alpha": 1.0, "depth_multiplier": 1, "num_classes": 2, **CLASSIFIER_ASSUMED, "input_size": input_size}


def pt_config(config: dict) -> dict:
    """The config fields the PyTorch module takes (it works at any input size)."""
    return {k: v for k, v in config.items() if k != "input_size"}


def build_classifier(config: dict, dtype: str = "float32") -> keras.Model:
    """Functional MobileNetV1 taking NHWC images in [-1, 1], returning logits [N, classes].

    ``config["input_size"]`` fixes the input size; 0 or absent: any size."""
    size = config.get("input_size")
    shape = (size, size, 3) if size else (None, None, 3)
    eps, alpha, mult = config["bn_epsilon"], config["alpha"], config["depth_multiplier"]
    momentum, dropout = config.get("bn_momentum", 0.99), config.get("dropout", 1e-3)
    kw = {"dtype": dtype}

    def bn(name):
        return keras.layers.BatchNormalization(axis=-1, epsilon=eps, momentum=momentum, name=name, **kw)

    inputs = keras.Input(shape=shape, dtype=dtype, name="input_1")
    x = keras.layers.Conv2D(int(32 * alpha), 3, strides=2, padding="same", use_bias=False,
                            name="conv1", **kw)(inputs)
    x = bn("conv1_bn")(x)
    x = keras.layers.ReLU(6.0, name="conv1_relu", **kw)(x)
    for k, (filters, stride) in enumerate(BLOCKS, start=1):
        padding = "same"
        if stride == 2 and config["strided_padding"] == "explicit":
            x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{k}", **kw)(x)
            padding = "valid"
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding=padding, depth_multiplier=mult,
                                         use_bias=False, name=f"conv_dw_{k}", **kw)(x)
        x = bn(f"conv_dw_{k}_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"conv_dw_{k}_relu", **kw)(x)
        x = keras.layers.Conv2D(int(filters * alpha), 1, use_bias=False, name=f"conv_pw_{k}", **kw)(x)
        x = bn(f"conv_pw_{k}_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"conv_pw_{k}_relu", **kw)(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling2d", **kw)(x)
    x = keras.layers.Dropout(dropout, name="dropout", **kw)(x)
    x = keras.layers.Conv2D(config["num_classes"], 1, padding="same", name="conv_preds", **kw)(x)
    x = keras.layers.Reshape((config["num_classes"],), name="reshape_2", **kw)(x)
    x = keras.layers.Activation("linear", name="predictions", **kw)(x)  # logits: no softmax
    return keras.Model(inputs, x, name="mobilenet_1.00_256")


def seeded_classifier(config: dict, calib_images: np.ndarray, seed: int = 0,
                      progress: bool = False) -> keras.Model:
    """A classifier whose weights exercise every conversion hazard, with a live signal.

    Random conv kernels, then, BatchNorm by BatchNorm in network order, the moving statistics
    are set from the activations that layer actually sees on calibration images and perturbed:
    means shifted, variances scaled, and about one channel in eight driven to a variance near
    1e-3 (its kernel scaled down and its moving variance set to match), so BatchNorm epsilon
    (1e-3 in TF, 1e-5 PyTorch's default) changes the output visibly. gamma and beta are drawn
    away from 1 and 0. The head is fitted so logits spread across images by O(1), with a
    non-zero bias. Uncalibrated statistics would let the input's influence fade ~10x per block
    until the logits no longer depend on the input.
    """
    rng = np.random.default_rng(seed)
    model = build_classifier(config)

    for layer in model.layers:  # random kernels, He-style scale
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = layer.depthwise_kernel
            k.assign(rng.normal(0, np.sqrt(2.0 / 9), k.shape).astype(np.float32))
        elif isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel
            fan_in = int(np.prod(k.shape[:3]))
            k.assign(rng.normal(0, np.sqrt(2.0 / fan_in), k.shape).astype(np.float32))

    from tqdm import tqdm

    layers = model.layers
    bn_layers = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.BatchNormalization)]
    for i in tqdm(bn_layers, desc="calibrating BatchNorm", unit="layer", disable=not progress, leave=False):
        layer = layers[i]
        conv = layers[i - 1]
        kernel = conv.depthwise_kernel if isinstance(conv, keras.layers.DepthwiseConv2D) else conv.kernel
        c = kernel.shape[-1] if not isinstance(conv, keras.layers.DepthwiseConv2D) else \
            kernel.shape[2] * kernel.shape[3]
        # Channels driven to a tiny variance: scale their kernel so var ~ 1e-3.
        small = rng.random(c) < 0.125
        feats = keras.Model(model.input, conv.output)(calib_images, training=False).numpy()
        var = feats.reshape(-1, c).var(axis=0) + 1e-12
        scale = np.where(small, np.sqrt(1e-3 / var), 1.0).astype(np.float32)
        kv = kernel.numpy()
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            kv = kv * scale.reshape(1, 1, kv.shape[2], kv.shape[3])
        else:
            kv = kv * scale.reshape(1, 1, 1, c)
        kernel.assign(kv)
        feats = feats * scale
        mean, var = feats.reshape(-1, c).mean(axis=0), feats.reshape(-1, c).var(axis=0)
        moving_mean = mean + 0.1 * np.sqrt(var) * rng.normal(size=c)
        moving_var = var * rng.uniform(0.7, 1.3, c)
        gamma = rng.uniform(0.6, 1.4, c) * np.where(rng.random(c) < 0.1, -1.0, 1.0)
        beta = rng.normal(0.4, 0.3, c)
        layer.set_weights([a.astype(np.float32) for a in (gamma, beta, moving_mean, moving_var)])

    head = model.get_layer("conv_preds")
    pooled = keras.Model(model.input, model.get_layer("global_average_pooling2d").output)(
        calib_images, training=False).numpy().reshape(len(calib_images), -1)
    # Features that barely vary across images get no large weight: a head that cancels a big
    # common mean would amplify float32 rounding of the features into the logits.
    mu, sd = pooled.mean(axis=0), pooled.std(axis=0)
    sd = np.sqrt(sd ** 2 + np.median(np.abs(pooled), axis=0).mean() ** 2)
    w = rng.normal(0, 1, (pooled.shape[1], config["num_classes"])) / (sd[:, None] * np.sqrt(pooled.shape[1]))
    # Logits spread by 0.2 across images at any size: ~4 orders of magnitude above the float32
    # tolerance, without a head so large it amplifies the features' rounding past it.
    w *= 0.2 / ((pooled - mu) @ w).std(axis=0).mean()
    # Centred logits (so both classes occur) plus a common non-zero offset (softmax ignores it,
    # a dropped bias would not).
    b = -(mu @ w) + rng.uniform(0.2, 0.5) + rng.normal(0, 0.02, config["num_classes"])
    head.set_weights([w.reshape(head.kernel.shape).astype(np.float32), b.astype(np.float32)])
    return model


# --------------------------------------------------------------------------- the TF side of verification

def reference_model(kind: str, config: dict, dtype: str = "float32") -> keras.Model:
    """The reference model of a converted config (any input size), to load variables into."""
    return build_classifier({**config, "input_size": 0}, dtype=dtype)


def trace_activations(model: keras.Model, x: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Every layer's output, by Keras layer name, in network order (the last: the logits)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    outs = probe(x.astype(dtype), training=False)
    return {layer.name: o.numpy() for layer, o in zip(layers, outs)}


def notebook_output(saved, x: np.ndarray) -> np.ndarray:
    """The loaded SavedModel called as the notebook calls it."""
    return np.asarray(saved(x.astype(np.float32), training=False))


def notebook_input_size(saved) -> int | None:
    """The input size a loaded SavedModel declares (None: any)."""
    shape = getattr(saved, "input_shape", None)
    return shape[1] if shape and len(shape) == 4 else None
