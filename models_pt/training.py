"""Training with the ported models as TF trains them: Keras' Adam, and the StyleGAN2 regularisers.

PyTorch only (like the rest of ``models_pt``). What differs from PyTorch's defaults, and why:

* **Adam.** Keras' ``Adam`` (``tf_keras.optimizers.Adam``, and TF1's ``AdamOptimizer`` that
  StyleGAN2 trained with) adds epsilon to ``sqrt(v)`` *before* the bias correction ("epsilon
  hat"): ``var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``. ``torch.optim.Adam``
  adds it after: ``var -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)``. The two differ
  by a factor ``sqrt(1 - b2^t)`` on epsilon (0.1 at step 1 with StyleGAN2's beta2 0.99), which no
  fixed flag of PyTorch's Adam reproduces. ``KerasAdam`` is Keras' rule, step for step, with
  Keras' float32 roundings of its constants (the learning rate, the betas' powers).
* **BatchNorm** (the classifier): Keras' momentum 0.99 is PyTorch's 0.01, set from the weights'
  header (``models_pt.classifier.keras_momentum``); both update the running variance with the
  unbiased batch variance on TF's float32 path (its fused kernel).
* **Noise** (the generator): fresh per-image noise in training mode (``Generator.noise_like``).

``r1_penalty`` and ``path_length_penalty`` are the second-order terms of StyleGAN2's losses
(their gradients with respect to the weights differentiate an input gradient), written once so
that ``verify --train`` checks exactly what a training loop computes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

STYLEGAN2_ADAM = {"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-8}   # StyleGAN2's G and D optimizer


class KerasAdam(torch.optim.Optimizer):
    """Adam with Keras' update rule (``tf_keras.optimizers.Adam``, ``adaptive_epsilon=False``):

        m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
        var -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)

    To the last bit of a float64 run, as Keras computes it: the learning rate held in float32
    (Keras' learning-rate variable is created in float32), and ``beta^t`` of the bias corrections
    taken from the betas rounded to float32 (Keras' ``tf.cast(self.beta_2, dtype)`` of a Python
    float goes through a float32 constant: 0.99 becomes 0.9900000095, which moves step 1's
    update by 5e-7 relative); the moment updates use the betas as given. ``keras_rounding=False``
    uses every constant as given. Plain tensor ops, one parameter at a time (no fused kernels),
    so the float32 rounding model of ``verify --train`` sees every operation."""

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-7,
                 keras_rounding: bool = True):
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if lr <= 0 or eps < 0:
            raise ValueError(f"lr must be > 0 and eps >= 0, got lr={lr}, eps={eps}")
        self.keras_rounding = keras_rounding
        lr = float(np.float32(lr)) if keras_rounding else float(lr)   # (a scheduler's values are used as set)
        super().__init__(params, {"lr": lr, "betas": tuple(float(b) for b in betas), "eps": float(eps)})
        if keras_rounding:   # param groups' own learning rates, held in float32 as well
            for group in self.param_groups:
                group["lr"] = float(np.float32(group["lr"]))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # one step count for the optimizer, as Keras' ``iterations``: a parameter without a
        # gradient in some step is skipped, and its bias correction still counts that step
        self.iterations = getattr(self, "iterations", 0) + 1
        t = self.iterations
        for group in self.param_groups:
            b1, b2 = group["betas"]
            p1, p2 = (float(np.float32(b)) for b in (b1, b2)) if self.keras_rounding else (b1, b2)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v, g = state["m"], state["v"], p.grad
                alpha = group["lr"] * math.sqrt(1 - p2 ** t) / (1 - p1 ** t)
                m.add_((g - m) * (1 - b1))
                v.add_((g.square() - v) * (1 - b2))
                p.sub_((m * alpha) / (v.sqrt() + group["eps"]))
        return loss


def r1_penalty(discriminator, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image, the squared norm of the discriminator's input gradient, ``sum |d D / d x|^2``
    (StyleGAN2's R1, before its gamma / 2), with the graph kept so that its gradient with respect
    to the weights (a second-order term) can be taken."""
    x = images.detach().requires_grad_(True)
    score = discriminator(x, labels)
    (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


def path_length_penalty(generator, w: torch.Tensor, y: torch.Tensor, noise: list | None = None) -> torch.Tensor:
    """Per image, ``sum |J_w^T y|^2``: the squared length of the synthesis' Jacobian with respect
    to the dlatent applied to image-space ``y`` (StyleGAN2's path length, before its running mean
    and weight), graph kept for the second-order gradient. ``noise``: see ``Generator.synthesis``."""
    w = w.detach().requires_grad_(True) if not w.requires_grad else w
    images = generator(w, noise=noise)
    (grad,) = torch.autograd.grad((images * y).sum(), w, create_graph=True)
    return grad.square().sum(dim=1)
