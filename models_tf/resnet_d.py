"""Reference StylEx encoder and discriminator: StyleGAN2's "resnet" discriminator layout, NCHW.

Both: FromRGB (1x1 conv, bias, lrelu) at the top resolution; for each r from the top down to 8
a block of Conv0 (3x3), Conv1Down (FIR blur, 3x3 stride 2) and Skip (FIR blur, 1x1 stride 2,
no bias), summed and scaled by 1/sqrt(2); then at 4x4 a 3x3 conv, a dense layer and the output
dense layer. The discriminator appends the minibatch standard deviation before the 4x4 conv and
conditions on the labels: its output layer has ``label_size`` units and the score is their sum
weighted by the label probabilities (ASSUMPTION of release-format.md, in ``Discriminator.call``).
Names as release-format.md lists them; the model name gives the scope (``encoder/``,
``discriminator_1/``).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models_tf.ops import SQRT2, Bias, EqualizedDense, fir_filter


def release_config(kind: str, resolution: int = 256) -> dict:
    return {"resolution": resolution, "channel_base": 32768, "channel_max": 512, "label_size": 2,
            "latent_size": 512, "mbstd_group": 4 if kind == "discriminator" else 0}


def small_config(kind: str, resolution: int = 32, channel_max: int = 32, label_size: int = 2) -> dict:
    return {**release_config(kind, resolution), "channel_max": channel_max, "label_size": label_size,
            "latent_size": 16}


def channels(config: dict) -> dict[int, int]:
    res = [2 ** i for i in range(2, int(math.log2(config["resolution"])) + 1)]
    if "channels" in config:
        return dict(zip(res, config["channels"]))
    return {r: min(config["channel_base"] // r, config["channel_max"]) for r in res}


class Conv(keras.layers.Layer):
    """Equalized-LR conv, NCHW; ``down``: FIR blur then stride 2 'valid' (StyleGAN2's padding)."""

    def __init__(self, cout: int, kernel: int, down: bool = False, **kw):
        super().__init__(**kw)
        self.cout, self.kernel, self.down = cout, kernel, down

    def build(self, shape):
        cin = int(shape[1])
        self.weight = self.add_weight(name="weight", shape=(self.kernel, self.kernel, cin, self.cout),
                                      initializer=keras.initializers.RandomNormal(0, 1))
        self.scale = 1 / math.sqrt(cin * self.kernel * self.kernel)

    def call(self, x):
        if self.down:
            p = (4 - 2) + (self.kernel - 1)
            x = fir_filter(x, (p + 1) // 2, p // 2, gain=1.0)
        xh = tf.transpose(x, [0, 2, 3, 1])
        if self.down:
            y = tf.nn.conv2d(xh, self.weight * self.scale, 2, "VALID")
        else:
            y = tf.nn.conv2d(xh, self.weight * self.scale, 1, "SAME")
        return tf.transpose(y, [0, 3, 1, 2])


class Block(keras.layers.Layer):
    def __init__(self, cmid: int, cout: int, **kw):
        super().__init__(**kw)
        self.conv0 = Conv(cmid, 3, name="Conv0")
        self.bias0 = Bias((1, cmid, 1, 1), "BiasAct0", act=True, name="Conv0Bias")
        self.conv1 = Conv(cout, 3, down=True, name="Conv1Down")
        self.bias1 = Bias((1, cout, 1, 1), "BiasAct1", act=True, name="Conv1DownBiasAct")
        self.skip = Conv(cout, 1, down=True, name="Skip")

    def call(self, x):
        y = self.bias1(self.conv1(self.bias0(self.conv0(x))))
        return (y + self.skip(x)) * (1 / SQRT2)


def minibatch_stddev(x, group: int):
    """StyleGAN2's minibatch standard deviation: one extra feature map of the mean std within
    groups of ``group`` images (the batch size must be divisible by min(group, N))."""
    n, c, h, w = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    g = tf.minimum(group, n)
    y = tf.reshape(x, [g, -1, c, h, w])
    y = y - tf.reduce_mean(y, axis=0)
    y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + 1e-8)
    y = tf.reduce_mean(y, axis=[1, 2, 3])                         # [N / g]
    y = tf.tile(tf.reshape(y, [-1, 1, 1, 1]), [g, 1, h, w])       # [N, 1, h, w]
    return tf.concat([x, y], axis=1)


class ResnetD(keras.Model):
    """Shared body; ``prefix`` is '' (discriminator) or 'Encoder' (encoder) in layer names."""

    prefix = ""
    output_name = "style_gan2_dense"

    def __init__(self, config: dict, name: str, out_units: int):
        super().__init__(name=name)
        self.config = dict(config)
        ch, p = channels(config), self.prefix
        top = config["resolution"]
        self.from_rgb = Conv(ch[top], 1, name=f"{p}FromRGB{top}x{top}/StyleGAN2Conv2D")
        self.from_rgb_bias = Bias((1, ch[top], 1, 1), "FromRGBBias", act=True,
                                  name=f"{p}FromRGB{top}x{top}/FusedBiasActivation")
        self.blocks = [Block(ch[r], ch[r // 2], name=f"{p or 'Discriminator'}Block{r}x{r}")
                       for r in sorted(ch, reverse=True) if r > 4]
        self.conv4 = Conv(ch[4], 3, name="Conv4x4")
        self.conv4_bias = Bias((1, ch[4], 1, 1), "ConvBiasAct4x4", act=True, name=f"{p}ConvBiasAct4x4")
        self.dense4 = EqualizedDense(ch[4], name=f"{p}Dense4x4")
        self.dense4_bias = Bias((ch[4],), "DenseBiasAct4x4", act=True, name=f"{p}DenseBiasAct4x4")
        self.out = EqualizedDense(out_units, name=self.output_name)
        self.out_bias = Bias((out_units,), "OutputBiasAct", act=False, name=f"{p}OutputBiasAct")

    def features(self, images, acts: dict | None = None):
        x = self.from_rgb_bias(self.from_rgb(images))
        if acts is not None:
            acts["fromrgb"] = x
        for block in self.blocks:
            x = block(x)
            if acts is not None:
                acts[block.name] = x
        if self.config.get("mbstd_group"):  # the discriminator only
            x = minibatch_stddev(x, self.config["mbstd_group"])
        x = self.conv4_bias(self.conv4(x))
        x = self.dense4_bias(self.dense4(tf.reshape(x, [tf.shape(x)[0], -1])))
        if acts is not None:
            acts["dense4x4"] = x
        return self.out_bias(self.out(x))


class Encoder(ResnetD):
    prefix = "Encoder"
    output_name = "style_gan2_dense"

    def __init__(self, config: dict):
        super().__init__(config, "encoder", config["latent_size"])

    def call(self, images, training=None):
        """NCHW images in [-1, 1] -> latents [N, latent_size]."""
        return self.features(images)

    def trace(self, images) -> dict:
        acts: dict = {}
        acts["latent"] = self.features(images, acts)
        return acts


class Discriminator(ResnetD):
    output_name = "style_gan2_dense_4"

    def __init__(self, config: dict):
        super().__init__(config, "discriminator_1", config["label_size"])

    def call(self, inputs, training=None):
        """[NCHW images, label probabilities [N, label_size]] -> scores [N, 1]."""
        images, labels = inputs
        out = self.features(images)
        return tf.reduce_sum(out * tf.cast(labels, out.dtype), axis=1, keepdims=True)

    def trace(self, inputs) -> dict:
        images, labels = inputs
        acts: dict = {}
        acts["logits"] = self.features(images, acts)
        acts["score"] = tf.reduce_sum(acts["logits"] * tf.cast(labels, acts["logits"].dtype), axis=1,
                                      keepdims=True)
        return acts


MODELS = {"encoder": Encoder, "discriminator": Discriminator}


def build(kind: str, config: dict, dtype: str = "float32"):
    previous = keras.backend.floatx()
    keras.backend.set_floatx(dtype)
    try:
        model = MODELS[kind](config)
        images = tf.zeros([2, 3, config["resolution"], config["resolution"]], dtype)
        model(images if kind == "encoder" else (images, tf.zeros([2, config["label_size"]], dtype)))
    finally:
        keras.backend.set_floatx(previous)
    return model


def seeded(kind: str, config: dict, seed: int = 0):
    rng = np.random.default_rng(seed)
    model = build(kind, config)
    for v in model.variables:
        shape = tuple(v.shape)
        if "Bias" in v.name:
            value = rng.normal(0, 0.2, shape)
        else:
            value = rng.normal(0, 1, shape)
        v.assign(value.astype(np.float32))
    return model


# --------------------------------------------------------------------------- the TF side of verification

def reference_model(kind: str, config: dict, dtype: str = "float32"):
    return build(kind, config, dtype)


def _cast(inputs, dtype):
    return tuple(a.astype(dtype) for a in inputs) if isinstance(inputs, tuple) else inputs.astype(dtype)


def trace_activations(model, inputs, dtype: str) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.trace(_cast(inputs, dtype)).items()}


def notebook_output(saved, inputs) -> np.ndarray:
    return np.asarray(saved(_cast(inputs, np.float32), training=False))


def notebook_input_size(saved) -> int | None:
    return None
