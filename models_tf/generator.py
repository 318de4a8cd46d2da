"""Reference StylEx generator (StyleGAN2 config-f, skip architecture), with the release's names.

Object API as the authors' notebook uses it (release-format.md):

    styles = generator.style_vector_calculator(w, training=False)   # (conv styles, ToRGB styles)
    generator.style_vector_calculator.style_dense_blocks[i].dense_bias.weights[0]   # [1, C_i]
    images = generator.g_synthesis(styles, training=False)          # NCHW, ~[-1, 1]

Variable names come out of Keras 2's name scoping exactly as in the release: the style
calculator and synthesis are built by calling them directly (no model scope), the mapping
network inside the model's own call (``generator/generator_mapping/...``), and the noise
constants and ``dlatent_avg`` are created unscoped in ``__init__``.

The math (run-time equalized learning rate, modulation, demodulation, FIR resampling) is
written out in ``models_tf/ops.py`` (FIR resampling, equalized dense, bias + leaky ReLU) and
``modulated_conv`` below; ``models_pt/generator.py`` computes the same, step for step.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models_tf.ops import Bias, EqualizedDense, fir_filter, fir_upsample
from models_pt.release_facts import GENERATOR_TRAIN_NOISE

# ASSUMPTIONS (not visible in the released variables' names; shapes are): the mapping network
# normalises z (pixel norm), runs `mapping_layers` dense layers with leaky ReLU, then appends the
# label probabilities: w = concat(mapping(z), labels). `dlatent_avg` has the dlatent's size.


def release_config(resolution: int = 256) -> dict:
    return {"resolution": resolution, "channel_base": 32768, "channel_max": 512, "label_size": 2,
            "z_dim": 512, "mapping_layers": 8, "mapping_lr_mul": 0.01}


def small_config(resolution: int = 32, channel_max: int = 32, label_size: int = 2) -> dict:
    """A fast configuration for tests: same structure, few channels."""
    return {"resolution": resolution, "channel_base": 32768, "channel_max": channel_max,
            "label_size": label_size, "z_dim": 32, "mapping_layers": 2, "mapping_lr_mul": 0.01}


def channels(config: dict) -> dict[int, int]:
    """Channels at each resolution 4 .. resolution: from ``channel_base``/``channel_max``, or the
    explicit ``channels`` list a converted checkpoint's config carries."""
    res = [2 ** i for i in range(2, int(math.log2(config["resolution"])) + 1)]
    if "channels" in config:
        return dict(zip(res, config["channels"]))
    return {r: min(config["channel_base"] // r, config["channel_max"]) for r in res}


def w_dim(config: dict) -> int:
    return config.get("w_dim", config["z_dim"] + config["label_size"])


def num_layers(resolution: int) -> int:
    return 2 * int(math.log2(resolution)) - 2


class StyleDenseBlock(keras.layers.Layer):
    """One style layer: style = dense(w) + bias + 1. The +1 is added at run time (ASSUMPTION of
    release-format.md), so the stored bias is centred on 0 and ``dense_bias`` shifts a style
    coordinate one for one, which is how the notebook edits StyleSpace."""

    def __init__(self, channels: int, **kw):
        super().__init__(**kw)
        self.dense = EqualizedDense(channels, name="StyleGAN2Dense")
        self.dense_bias = Bias((1, channels), "bias", act=False, name="FusedBiasActivation")

    def call(self, w):
        return self.dense_bias(self.dense(w)) + 1.0


class StyleVectorCalculator(keras.layers.Layer):
    """w [N, D] or [N, num_layers, D] -> (conv styles, ToRGB styles), two lists of [N, C_in]."""

    def __init__(self, config: dict, **kw):
        super().__init__(**kw)
        ch = channels(config)
        self.resolutions = sorted(ch)
        self.style_dense_blocks = [StyleDenseBlock(ch[4], name="StyleVectorConst")]
        self.torgb_dense_blocks = [StyleDenseBlock(ch[4], name="StyleVectorConstRGB")]
        for r in self.resolutions[1:]:
            i = int(math.log2(r)) - 3
            self.style_dense_blocks.append(StyleDenseBlock(ch[r // 2], name=f"StyleVector{i}_0"))
            self.style_dense_blocks.append(StyleDenseBlock(ch[r], name=f"StyleVector{i}_1"))
            self.torgb_dense_blocks.append(StyleDenseBlock(ch[r], name=f"StyleVectorRGB{i}"))

    def call(self, w, training=None):
        def w_at(layer):  # which w-layer feeds which style layer (as StyleGAN2 assigns them)
            return w[:, layer] if len(w.shape) == 3 else w
        conv = [self.style_dense_blocks[0](w_at(0))]
        rgb = [self.torgb_dense_blocks[0](w_at(1))]
        for k, _ in enumerate(self.resolutions[1:]):
            conv.append(self.style_dense_blocks[1 + 2 * k](w_at(1 + 2 * k)))
            conv.append(self.style_dense_blocks[2 + 2 * k](w_at(2 + 2 * k)))
            rgb.append(self.torgb_dense_blocks[1 + k](w_at(3 + 2 * k)))
        return conv, rgb


def modulated_conv(x, weight, style, demodulate: bool, up: bool):
    """StyleGAN2's modulated conv, NCHW, written as modulate-activations / conv / demodulate.

    weight: stored [kh, kw, in, out], scaled at run time by 1/sqrt(fan_in). ``up``: a stride-2
    transposed convolution with the stored kernel as it is (that orientation is why a plain-conv
    port must flip it), then a FIR blur with gain 4 and padding (1, 1)."""
    kh, kw, cin, cout = weight.shape
    w = weight * (1.0 / math.sqrt(kh * kw * cin))
    x = x * style[:, :, None, None]
    xh = tf.transpose(x, [0, 2, 3, 1])
    if up:
        n, h, wd = tf.shape(xh)[0], xh.shape[1], xh.shape[2]
        y = tf.nn.conv2d_transpose(xh, tf.transpose(w, [0, 1, 3, 2]), [n, 2 * h + 1, 2 * wd + 1, cout],
                                   strides=2, padding="VALID")
    else:
        y = tf.nn.conv2d(xh, w, 1, "SAME")
    y = tf.transpose(y, [0, 3, 1, 2])
    if up:
        y = fir_filter(y, 1, 1, gain=4.0)
    if demodulate:
        # d[n, out] = 1 / sqrt(sum over kh, kw, in of (w * style[n, in])^2 + 1e-8)
        wsq = tf.reduce_sum(tf.square(w), axis=[0, 1])                      # [in, out]
        d = tf.math.rsqrt(tf.matmul(tf.square(style), wsq) + 1e-8)          # [N, out]
        y = y * d[:, :, None, None]
    return y


class ModulatedConv2D(keras.layers.Layer):
    def __init__(self, cout: int, kernel: int, demodulate: bool = True, up: bool = False, **kw):
        super().__init__(**kw)
        self.cout, self.kernel, self.demodulate, self.up = cout, kernel, demodulate, up

    def build(self, shapes):
        cin = int(shapes[0][1])
        self.weight = self.add_weight(name="weight", shape=(self.kernel, self.kernel, cin, self.cout),
                                      initializer=keras.initializers.RandomNormal(0, 1))

    def call(self, inputs):
        x, style = inputs
        return modulated_conv(x, self.weight, style, self.demodulate, self.up)


class GeneratorLayer(keras.layers.Layer):
    """Modulated 3x3 conv (optionally up-sampling), + noise * strength, + bias, lrelu. The noise:
    given in the inputs, or in training with ``random_noise`` fresh per image, else the stored
    constant. (Training is told by Keras' call context, so every call keeps the release's input
    structure and its SavedModel serializes as before.)"""

    def __init__(self, cout: int, noise: tf.Variable, up: bool, random_noise: bool = False, **kw):
        super().__init__(**kw)
        self.conv = ModulatedConv2D(cout, 3, up=up, name="ModulatedConv2D")
        self.bias_act = Bias((1, cout, 1, 1), "BiasAct", act=True, name="FusedBiasAct")
        self.noise, self.random_noise = noise, random_noise

    def build(self, shapes):
        self.noise_strength = self.add_weight(name="NoiseStrength", shape=(1,), initializer="zeros")

    def call(self, inputs, training=None):
        """(x, style), or (x, style, noise [N, 1, H, W])."""
        y = self.conv(inputs[:2])
        if len(inputs) == 3:
            noise = inputs[2]
        elif training and self.random_noise:
            shape = tf.shape(y)
            noise = tf.random.normal([shape[0], 1, shape[2], shape[3]], dtype=y.dtype)
        else:
            noise = self.noise
        return self.bias_act(y + noise * self.noise_strength)


class ToRGB(keras.layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.conv = ModulatedConv2D(3, 1, demodulate=False, name="ModulatedConv2D")
        self.bias = Bias((1, 3, 1, 1), "ToRGBBiasAct", act=False, name="FusedBiasActivation")

    def call(self, inputs):
        return self.bias(self.conv(inputs))


class ConstBlock(keras.layers.Layer):
    def __init__(self, cout: int, noise, random_noise: bool = False, **kw):
        super().__init__(**kw)
        self.cout = cout
        self.layer = GeneratorLayer(cout, noise, up=False, random_noise=random_noise, name="GeneratorLayer4x4")

    def build(self, _):
        self.const = self.add_weight(name="Const4x4", shape=(1, self.cout, 4, 4),
                                     initializer=keras.initializers.RandomNormal(0, 1))

    def call(self, inputs):
        """style, or (style, noise) (given noise: eager runs of the cross-checks only)."""
        style, noise = (inputs, None) if not isinstance(inputs, (tuple, list)) else inputs
        x = tf.tile(self.const, [tf.shape(style)[0], 1, 1, 1])
        return self.layer((x, style) if noise is None else (x, style, noise))


class GeneratorBlock(keras.layers.Layer):
    def __init__(self, cout: int, noise0, noise1, random_noise: bool = False, **kw):
        super().__init__(**kw)
        self.conv0 = GeneratorLayer(cout, noise0, up=True, random_noise=random_noise, name="Conv0Up")
        self.conv1 = GeneratorLayer(cout, noise1, up=False, random_noise=random_noise, name="Conv1")

    def call(self, inputs):
        """(x, style0, style1[, noise0, noise1]) -> both convs' outputs (the first for per-layer
        parity); the noises, [N, 1, r, r], in place of the stored constants."""
        x, s0, s1 = inputs[:3]
        noise = inputs[3:] or None
        x0 = self.conv0((x, s0) if noise is None else (x, s0, noise[0]))
        return x0, self.conv1((x0, s1) if noise is None else (x0, s1, noise[1]))


class Synthesis(keras.layers.Layer):
    """(conv styles, ToRGB styles) -> NCHW image; ``trace`` also returns every block's output."""

    def __init__(self, config: dict, noises: list, **kw):
        super().__init__(**kw)
        ch = channels(config)
        self.resolutions = sorted(ch)
        # training mode draws fresh noise per image: the converted config's train_noise, else the
        # release's assumption (release_facts.GENERATOR_TRAIN_NOISE)
        rand = config.get("train_noise", GENERATOR_TRAIN_NOISE) == "random"
        self.const_block = ConstBlock(ch[4], noises[0], random_noise=rand, name="ConstBlock4x4")
        self.torgbs = [ToRGB(name="ToRGB4x4")]
        self.blocks = []
        for r in self.resolutions[1:]:
            k = 2 * int(math.log2(r)) - 5
            self.blocks.append(GeneratorBlock(ch[r], noises[k], noises[k + 1], random_noise=rand,
                                              name=f"GeneratorBlock{r}x{r}"))
            self.torgbs.append(ToRGB(name=f"ToRGB{r}x{r}"))

    def run(self, styles, acts: dict | None = None, noise=None):
        """``noise``: one [N, 1, r, r] tensor per conv layer in place of the stored constants."""
        conv, rgb = styles
        x = self.const_block(conv[0] if noise is None else (conv[0], noise[0]))
        img = self.torgbs[0]((x, rgb[0]))
        if acts is not None:
            acts["b4/conv"], acts["b4/rgb"] = x, img
        for k, (r, block) in enumerate(zip(self.resolutions[1:], self.blocks)):
            inputs = (x, conv[1 + 2 * k], conv[2 + 2 * k])
            x0, x = block(inputs if noise is None else inputs + tuple(noise[1 + 2 * k: 3 + 2 * k]))
            if acts is not None:
                acts[f"b{r}/conv0"] = x0
            img = fir_upsample(img) + self.torgbs[1 + k]((x, rgb[1 + k]))
            if acts is not None:
                acts[f"b{r}/conv1"], acts[f"b{r}/rgb"] = x, img
        return img

    def call(self, styles, training=None):
        return self.run(styles)


class Mapping(keras.layers.Layer):
    def __init__(self, config: dict, **kw):
        super().__init__(**kw)
        lr = config["mapping_lr_mul"]
        self.dense = [EqualizedDense(config["z_dim"], f"MappingDense_{i}", lr_mul=lr, name=f"Dense{i}")
                      for i in range(config["mapping_layers"])]
        self.bias = [Bias((config["z_dim"],), f"MappingBias_{i}", act=True, lr_mul=lr, name=f"DenseBiasAct{i}")
                     for i in range(config["mapping_layers"])]

    def call(self, inputs, training=None):
        z, labels = inputs
        x = z * tf.math.rsqrt(tf.reduce_mean(tf.square(z), axis=1, keepdims=True) + 1e-8)
        for dense, bias in zip(self.dense, self.bias):
            x = bias(dense(x))
        return tf.concat([x, tf.cast(labels, x.dtype)], axis=1)


class Generator(keras.Model):
    def __init__(self, config: dict, dtype: str = "float32"):
        super().__init__(name="generator", dtype=dtype)
        self.config = dict(config)
        res = config["resolution"]
        n_noise = num_layers(res) - 1
        sizes = [4] + [r for r in sorted(channels(config))[1:] for _ in range(2)]
        self.noises = [self.add_weight(name=f"Noise{k}", shape=(1, 1, sizes[k], sizes[k]), trainable=False,
                                       initializer=keras.initializers.RandomNormal(0, 1))
                       for k in range(n_noise)]
        self.dlatent_avg = self.add_weight(name="dlatent_avg", shape=(w_dim(config),), trainable=False,
                                           initializer="zeros")
        self.style_vector_calculator = StyleVectorCalculator(config, name="generator_style_calculator")
        self.g_synthesis = Synthesis(config, self.noises, name="generator_synthesis")
        self.generator_mapping = Mapping(config, name="generator_mapping")

    def call(self, inputs, training=None):
        """(z [N, z_dim], labels [N, label_size]) -> images NCHW. In training, with train_noise
        "random" (``release_facts.GENERATOR_TRAIN_NOISE``), fresh noise per image (StyleGAN2's
        randomize_noise); otherwise the stored constants. ``g_synthesis.run(styles, noise=...)``
        takes given noise."""
        w = self.generator_mapping(inputs)
        return self.g_synthesis(self.style_vector_calculator(w))

    def trace(self, w) -> dict:
        """Every style vector and every block's activations, then the image (last)."""
        conv, rgb = self.style_vector_calculator(w)
        acts = {f"style/conv{i}": s for i, s in enumerate(conv)}
        acts.update({f"style/torgb{i}": s for i, s in enumerate(rgb)})
        acts["image"] = self.g_synthesis.run((conv, rgb), acts)
        return acts


def build_generator(config: dict, dtype: str = "float32") -> Generator:
    """Build every variable in the release's order of creation (see the module docstring).

    Every layer takes Keras' default float type at construction, so float64 is set for the build."""
    previous = keras.backend.floatx()
    keras.backend.set_floatx(dtype)
    try:
        g = Generator(config, dtype=dtype)
        w = tf.zeros([1, w_dim(config)], dtype)
        g.g_synthesis(g.style_vector_calculator(w))
        g((tf.zeros([1, config["z_dim"]], dtype), tf.zeros([1, config["label_size"]], dtype)))
    finally:
        keras.backend.set_floatx(previous)
    return g


def seeded_generator(config: dict, seed: int = 0) -> Generator:
    """Weights that give images with structure: not saturated, not constant, every term live."""
    rng = np.random.default_rng(seed)
    g = build_generator(config)
    n_rgb = len(channels(config))
    for v in g.variables:
        name, shape = v.name, tuple(v.shape)
        if "/StyleGAN2Dense/" in name:
            value = rng.normal(0, 1, shape) * 1.2          # styles ~ 1 +- 0.75 on released dlatents
        elif "FusedBiasActivation/bias" in name:
            value = rng.normal(0, 0.2, shape)              # style biases: a shift is visible
        elif name.startswith("Noise"):
            value = rng.normal(0, 1, shape)
        elif "NoiseStrength" in name:
            value = rng.uniform(0.05, 0.2, shape)
        elif "ToRGB" in name and "ModulatedConv2D" in name:
            value = rng.normal(0, 0.3 / math.sqrt(n_rgb), shape)  # RGB of O(0.3) after the skip sum
        elif "BiasAct" in name or "MappingBias" in name:
            value = rng.normal(0, 0.1, shape)
        elif name.startswith("dlatent_avg"):
            value = rng.normal(0, 0.5, shape)
        else:                                              # conv, const, mapping weights
            value = rng.normal(0, 1, shape) / (config["mapping_lr_mul"] if "MappingDense" in name else 1)
        v.assign(value.astype(np.float32))
    # Positive mean activations give each image a colour cast that pushes pixels to +-1; the last
    # ToRGB bias takes it out (measured on dlatents like the release's), keeping a small offset.
    # 32 images up to 64 px; above, as many pixels in fewer images (2 at 256 px: 7 s on one
    # core, where 32 took two minutes of every test run that builds the release configuration).
    latent, n = w_dim(config) - config["label_size"], min(32, max(2, 32 * 64 ** 2 // config["resolution"] ** 2))
    w = np.concatenate([rng.normal(0, 0.6, (n, latent)),
                        rng.dirichlet(np.ones(config["label_size"]), n)], axis=1).astype(np.float32)
    cast = g.g_synthesis(g.style_vector_calculator(w)).numpy().mean(axis=(0, 2, 3))
    last_bias = g.g_synthesis.torgbs[-1].bias.bias
    last_bias.assign(last_bias.numpy() - cast.reshape(1, 3, 1, 1))
    return g


# --------------------------------------------------------------------------- the TF side of verification

def reference_model(kind: str, config: dict, dtype: str = "float32") -> Generator:
    return build_generator(config, dtype=dtype)


def trace_activations(model: Generator, w: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.trace(w.astype(dtype)).items()}


def notebook_output(saved, w: np.ndarray) -> np.ndarray:
    """The notebook's calls on the loaded SavedModel: style calculator, then synthesis."""
    styles = saved.style_vector_calculator(w.astype(np.float32), training=False)
    return np.asarray(saved.g_synthesis(styles, training=False))


def notebook_input_size(saved) -> int | None:
    return None
