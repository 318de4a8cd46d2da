"""Ops the TF reference models share (NCHW): FIR resampling, leaky ReLU with gain, the
equalized-learning-rate dense layer and the stored-bias layer. One place on the TF side, as
``models_pt/ops.py`` is on the PyTorch side."""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

SQRT2 = math.sqrt(2.0)
FIR = [1.0, 3.0, 3.0, 1.0]


# --------------------------------------------------------------------------- FIR resampling (NCHW)

def _fir_kernel(gain: float, dtype) -> tf.Tensor:
    k = np.outer(FIR, FIR)
    return tf.constant(k / k.sum() * gain, dtype=dtype)


def fir_filter(x: tf.Tensor, pad0: int, pad1: int, gain: float) -> tf.Tensor:
    """Pad (pad0 before, pad1 after, both spatial axes), then a depthwise 4x4 FIR filter."""
    c = x.shape[1]
    x = tf.pad(x, [[0, 0], [0, 0], [pad0, pad1], [pad0, pad1]])
    k = tf.tile(_fir_kernel(gain, x.dtype)[:, :, None, None], [1, 1, c, 1])
    y = tf.nn.depthwise_conv2d(tf.transpose(x, [0, 2, 3, 1]), k, [1, 1, 1, 1], "VALID")
    return tf.transpose(y, [0, 3, 1, 2])


def zero_upsample(x: tf.Tensor) -> tf.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W] with each sample at (2i, 2j) and zeros between."""
    n, c, h, w = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    x = tf.reshape(x, [n, c, h, 1, w, 1])
    x = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, 1], [0, 0], [0, 1]])
    return tf.reshape(x, [n, c, 2 * h, 2 * w])


def fir_upsample(x: tf.Tensor) -> tf.Tensor:
    """2x up-sampling of the skip RGB: zeros inserted, padded (2, 1), FIR with gain 4."""
    return fir_filter(zero_upsample(x), 2, 1, gain=4.0)


def lrelu(x: tf.Tensor) -> tf.Tensor:
    """Leaky ReLU 0.2 with gain sqrt(2). Written out: tf.nn.leaky_relu keeps its alpha as a 32-bit
    attribute (0.2000000030), which float64 parity would see."""
    return tf.where(x >= 0, x, x * 0.2) * SQRT2


# --------------------------------------------------------------------------- layers

class EqualizedDense(keras.layers.Layer):
    """y = x @ (weight * lr_mul / sqrt(fan_in)); the stored weight is unscaled."""

    def __init__(self, units: int, weight_name: str = "weight", lr_mul: float = 1.0, **kw):
        super().__init__(**kw)
        self.units, self.weight_name, self.lr_mul = units, weight_name, lr_mul

    def build(self, shape):
        self.weight = self.add_weight(name=self.weight_name, shape=(int(shape[-1]), self.units),
                                      initializer=keras.initializers.RandomNormal(0, 1 / self.lr_mul))
        self.scale = self.lr_mul / math.sqrt(int(shape[-1]))

    def call(self, x):
        return tf.matmul(x, self.weight * self.scale)


class Bias(keras.layers.Layer):
    """Adds a stored bias of shape ``shape`` (times lr_mul), then optionally leaky ReLU * sqrt(2)."""

    def __init__(self, shape, weight_name: str, act: bool, lr_mul: float = 1.0, **kw):
        super().__init__(**kw)
        self.bias_shape, self.weight_name, self.act, self.lr_mul = tuple(shape), weight_name, act, lr_mul

    def build(self, _):
        self.bias = self.add_weight(name=self.weight_name, shape=self.bias_shape, initializer="zeros")

    def call(self, x):
        x = x + self.bias * self.lr_mul
        return lrelu(x) if self.act else x
