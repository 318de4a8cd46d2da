"""The StylEx pipeline in PyTorch: image -> dlatent -> image, as the release's models chain."""
from __future__ import annotations

import torch


def encode(encoder, classifier, images: torch.Tensor) -> torch.Tensor:
    """NCHW images in [-1, 1] -> dlatents: the encoder's output concatenated with the
    classifier's softmax probabilities (how the release's dlatents.pkl was made)."""
    return torch.cat([encoder(images), torch.softmax(classifier(images), dim=1)], dim=1)


def reconstruct(generator, encoder, classifier, images: torch.Tensor) -> torch.Tensor:
    """Images -> dlatents -> the generator's reconstruction, clamped to [-1, 1] as the notebook does."""
    return generator(encode(encoder, classifier, images)).clamp(-1, 1)
