"""The release's image -> dlatent pipeline in TF, and what the reference release needs of it.

The release's dlatent of an image is the encoder's output concatenated with the classifier's
softmax probabilities on the same image (``encode``). ``calibrate_encoder`` gives a seeded
encoder the spread of real dlatents, so that AttFind's style ranges on a reference release have
the release's scale. TF only; the dlatents to match are passed in (``release_facts`` says where
the real ones are, ``models_pt.dlatents`` reads them).
"""
from __future__ import annotations

import numpy as np


def encode(encoder, classifier, images_nchw):
    """The release's dlatent of an image: encoder output concatenated with the classifier's
    softmax probabilities on the same image (NHWC for the classifier)."""
    import tensorflow as tf

    probs = tf.nn.softmax(classifier(tf.transpose(images_nchw, [0, 2, 3, 1]), training=False))
    return tf.concat([encoder(images_nchw, training=False), tf.cast(probs, images_nchw.dtype)], axis=1)


def generated_images(generator, dlatents: np.ndarray) -> np.ndarray:
    """Clamped images the generator draws from ``dlatents``, in chunks of about 16."""
    return np.concatenate([np.clip(generator.g_synthesis(generator.style_vector_calculator(chunk)).numpy(), -1, 1)
                           for chunk in np.array_split(dlatents, max(1, len(dlatents) // 16))])


def calibrate_encoder(generator, encoder, target: np.ndarray) -> None:
    """Give a seeded encoder the spread of the dlatents ``target``: its output layer is rescaled,
    per output, so that on the generator's images of ``target`` its outputs have their means and
    standard deviations. (A random encoder maps every image to nearly the same latent, 10x
    narrower than the release's; AttFind's style ranges, and so every shift it makes, would be
    that much smaller.)"""
    images = generated_images(generator, target)
    latent = np.asarray(encoder(images, training=False), np.float64)
    k = latent.shape[1]
    want_mu, want_sd = target[:, :k].mean(axis=0), target[:, :k].std(axis=0)
    bias = encoder.out_bias.bias.numpy().astype(np.float64)
    a = want_sd / np.maximum(latent.std(axis=0), 1e-12)
    encoder.out.weight.assign((encoder.out.weight.numpy() * a[None, :]).astype(np.float32))
    encoder.out_bias.bias.assign((want_mu - (latent.mean(axis=0) - bias) * a).astype(np.float32))


def reference_dlatents(generator, encoder, classifier, real: np.ndarray) -> np.ndarray:
    """dlatents computed as the release's were, on images the generator draws from the real
    dlatents ``real`` (the reference has no photographs)."""
    images = generated_images(generator, real)
    return np.concatenate([encode(encoder, classifier, images[i:i + 16]).numpy()
                           for i in range(0, len(real), 16)]).astype(np.float32)
