"""AttFind's heavy step in TensorFlow, the way the authors' notebook does it.

One image and one coordinate shift at a time: to move StyleSpace coordinate ``j`` (channel ``c``
of conv style layer ``l``) by ``delta``, add ``delta`` to ``c`` of that layer's style bias
(``generator.style_vector_calculator.style_dense_blocks[l].dense_bias.weights[0]``), run the
style calculator and the synthesis, clamp, classify, and put the bias back. The models are
whatever objects have the notebook's API: the released SavedModels loaded with
``tf_keras.models.load_model`` or ``models_tf``'s reference models.

``compiled=True`` runs the same per-shift computation (same bias mutation, same one image)
under one ``tf.function`` instead of eagerly: the numbers are the same (the test suite checks
it), it is several times faster, and ``make-reference`` uses it to write ``examples_1.tfrecord``.
The benchmark times the eager loop, as the notebook runs.

``TFEffects`` implements ``attfind.backend.EffectsBackend``. Layer: ``attfind``; it imports TF
and the StyleSpace helper (``models_pt.stylespace``, pure NumPy), nothing of ``models_tf``.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from models_pt.stylespace import StyleSpace


def _tf():
    import tensorflow as tf
    return tf


def style_biases(generator) -> list:
    """The conv style layers' bias variables, each ``[1, C_l]``, in StyleSpace order."""
    return [b.dense_bias.weights[0] for b in generator.style_vector_calculator.style_dense_blocks]


def style_vectors(generator, w: np.ndarray):
    """``(conv styles, ToRGB styles)`` through the notebook's API, of dlatents ``[N, D]`` or of
    per-layer dlatents ``[N, layers, D]``: the released SavedModel's style calculator takes one
    ``[N, D]`` w per call, so it runs once per w-layer and keeps the styles each layer feeds (conv
    style i from layer i, ToRGB style i from layer 2i + 1, as StyleGAN2 assigns them)."""
    if w.ndim == 2:
        return generator.style_vector_calculator(w, training=False)
    per_layer = [generator.style_vector_calculator(np.ascontiguousarray(w[:, k]), training=False)
                 for k in range(w.shape[1])]
    conv = [per_layer[k][0][k] for k in range(len(per_layer[0][0]))]
    rgb = [per_layer[2 * k + 1][1][k] for k in range(len(per_layer[0][1]))]
    return conv, rgb


def conv_styles(generator, dlatents: np.ndarray, batch: int = 16, dtype=np.float32) -> np.ndarray:
    """dlatents ``[N, D]`` -> StyleSpace ``[N, S]`` (the conv styles, concatenated)."""
    out = []
    for i in range(0, len(dlatents), batch):
        w = np.asarray(dlatents[i:i + batch], np.float32).astype(dtype)
        conv, _ = generator.style_vector_calculator(w, training=False)
        out.append(np.concatenate([np.asarray(s) for s in conv], axis=1))
    return np.concatenate(out)


def classify_generated(generator, classifier, dlatent) -> np.ndarray:
    """The notebook's helper: logits of the classifier on the clamped image of ``dlatent [1, D]``."""
    tf = _tf()
    images = generator.g_synthesis(generator.style_vector_calculator(dlatent, training=False), training=False)
    images = tf.clip_by_value(images, -1.0, 1.0)
    return classifier(tf.transpose(images, [0, 2, 3, 1]), training=False)  # the classifier is NHWC


class TFEffects:
    """Effects of every coordinate shift on one image at a time, through the style biases."""

    def __init__(self, generator, classifier, compiled: bool = False, dtype=np.float32):
        """``dtype``: the models' (``np.float64`` for float64 rebuilds of ``models_tf``: the
        exactness check of ``crosscheck.verify.attfind_effects``)."""
        self.generator, self.classifier = generator, classifier
        self.dtype = np.dtype(dtype)
        self.biases = style_biases(generator)
        self.space = StyleSpace([int(v.shape[-1]) for v in self.biases])
        self.num_styles = len(self.space)
        self.compiled = compiled
        fn = lambda w: classify_generated(generator, classifier, w)  # noqa: E731
        self._one = _tf().function(fn) if compiled else fn

    def _logits_of(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(self._one(w))[0]

    def styles(self, dlatents: np.ndarray) -> np.ndarray:
        return conv_styles(self.generator, dlatents, dtype=self.dtype)

    def logits(self, dlatents: np.ndarray) -> np.ndarray:
        """The notebook's helper on each dlatent in turn (one image per call)."""
        return np.stack([self._logits_of(np.asarray(w, np.float32).astype(self.dtype).reshape(1, -1))
                         for w in dlatents])

    def edited_outputs(self, dlatents, deltas: np.ndarray | None = None, batch: int = 32):
        """The notebook's calls with the StyleSpace vectors edited: style calculator (per style
        layer for ``[N, layers, D]`` dlatents), ``deltas`` added, synthesis, clamp, classifier."""
        tf = _tf()
        g = self.generator
        images, logits = [], []
        for i in range(0, len(dlatents), batch):
            conv, rgb = style_vectors(g, np.asarray(dlatents[i:i + batch], np.float32))
            conv = [tf.convert_to_tensor(s) for s in conv]
            if deltas is not None:
                d = np.asarray(deltas[i:i + batch], np.float32)
                conv = [s + d[:, self.space.layer_slice(k)] for k, s in enumerate(conv)]
            img = tf.clip_by_value(g.g_synthesis((conv, list(rgb)), training=False), -1.0, 1.0)
            images.append(np.asarray(img))
            logits.append(np.asarray(self.classifier(tf.transpose(img, [0, 2, 3, 1]), training=False)))
        return np.concatenate(images), np.concatenate(logits)

    def image(self, dlatent, style_min, style_max, shift_size: float = 1.0,
              coordinates: Iterable[int] | None = None, on_progress: Callable[[float], None] | None = None,
              style: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One image: ``(base logits [C], effects [2, S, C])`` (``attfind.backend``). ``style [S]``:
        its StyleSpace vector [default: computed from ``dlatent``]. Each coordinate moves by
        AttFind's shift through its style bias, which is put back bit for bit."""
        w = np.asarray(dlatent, np.float32).astype(self.dtype).reshape(1, -1)
        style = self.styles(w)[0] if style is None else np.asarray(style)
        base = self._logits_of(w)
        effects = np.zeros((2, self.num_styles, base.shape[0]), self.dtype)
        targets = self.space.targets(style_min, style_max)
        for j in (range(self.num_styles) if coordinates is None else coordinates):
            layer, c = self.space.split(int(j))
            var = self.biases[layer]
            original = var.numpy()
            try:
                for d in (0, 1):
                    shift = np.zeros_like(original)
                    shift[0, c] = self.space.delta(style[j], targets[d][j], shift_size)
                    var.assign_add(shift)
                    effects[d, j] = self._logits_of(w) - base
                    var.assign(original)
            finally:
                var.assign(original)
            if on_progress is not None:
                on_progress(1)
        return base, effects

    def discriminator_changes(self, discriminator, dlatents, styles, style_min, style_max, shift_size: float = 2.0,
                              label_size: int | None = None):
        """The TF side of ``discriminator_filter.DiscriminatorFilter``, as the notebook computes it: before, the
        clamped image and its dlatent's labels; after, the style bias shifted, the clamped image
        and the classifier's softmax on it as labels (the bias is put back); the discriminator
        (``discriminator((images_nchw, labels))``) sees each image alone. ``label_size``: the
        dlatent's label part [default: the classifier's number of classes, whose probabilities
        the release's dlatents carry]. A backend built with ``compiled=True`` makes the same calls
        under ``tf.function`` (3.8x faster on the suite's 32 px release: a revived Keras model's
        eager call is slow)."""
        tf = _tf()
        targets = self.space.targets(style_min, style_max)
        before: dict[int, float] = {}
        after: dict[tuple, float] = {}     # both greedy runs ask about the same coordinates
        classes = label_size

        def clamped(w):
            img = self.generator.g_synthesis(self.generator.style_vector_calculator(w, training=False), training=False)
            return tf.clip_by_value(img, -1.0, 1.0)

        def classify(img):
            return self.classifier(tf.transpose(img, [0, 2, 3, 1]), training=False)

        def unedited(w, k: int):          # the dlatent's own labels
            return discriminator((clamped(w), w[:, -k:]), training=False)

        def edited(w):                    # the classifier's softmax on the edited image
            img = clamped(w)
            return discriminator((img, tf.nn.softmax(classify(img))), training=False)

        if self.compiled:
            unedited, edited = tf.function(unedited), tf.function(edited)

        def changes(images, d: int, j: int) -> np.ndarray:
            nonlocal classes
            layer, c = self.space.split(int(j))
            var = self.biases[layer]
            out = []
            for n in images:
                if (n, d, j) in after:
                    out.append(after[(n, d, j)])
                    continue
                w = tf.constant(np.asarray(dlatents[n], np.float32).reshape(1, -1))
                if n not in before:
                    classes = classes or int(classify(clamped(w)).shape[-1])
                    before[n] = float(np.asarray(unedited(w, classes))[0, 0])
                original = var.numpy()
                shift = np.zeros_like(original)
                shift[0, c] = self.space.delta(styles[n][j], targets[d][j], shift_size)
                try:
                    var.assign_add(shift)
                    value = float(np.asarray(edited(w))[0, 0])
                finally:
                    var.assign(original)
                after[(n, d, j)] = value - before[n]
                out.append(after[(n, d, j)])
            return np.abs(np.asarray(out))
        return changes
