"""StylEx training in PyTorch: the objective, one step, fresh models and the generator's EMA.

PyTorch only, like the rest of ``models_pt``: what ``cli.py train`` runs, and what a user imports
to train in their own loop. The authors released no training code; the objective is the paper's
(Lang et al. 2021, sec. 3) as the reproduction studies and the first author's answers they report
describe it (``docs/training.md`` says where they disagree and which default was taken):

* the generator is fed from the **encoder** (``w = E(x) ++ C(x)``) and from the **mapping
  network** (``w = mapping(z) ++ C(x_r)``, the probabilities of a randomly drawn real image),
  alternately, step by step (``Objective.alternate``; the encoder on even steps);
* the **discriminator** is conditioned on those probabilities (projection form: the sum of its
  per-class outputs weighted by them, ``models_pt.resnet_d.Discriminator``) and trained with
  StyleGAN2's logistic loss, plus R1 on real images every ``r1_interval`` steps, its weight
  ``r1_gamma / 2`` multiplied by the interval (lazy regularisation);
* the **generator and encoder** get the non-saturating loss; in encoder steps also the
  reconstruction ``x' = G(E(x) ++ C(x))`` in image space (L1) and in w space (L1 between
  ``E(x')`` and ``E(x)``) and the classifier's ``KL(C(x) || C(x'))``; every ``pl_interval``
  steps StyleGAN2's path-length penalty (a mapping-network batch), multiplied by its interval;
* the **classifier** stays fixed (eval mode, no gradient to its weights);
* an **EMA** of the generator (``ema_beta`` per step) is what gets written out.

Every random draw of a step (z, noise, the drawn images' probabilities, the path-length
direction) is made by ``draw_inputs`` from one ``torch.Generator`` and handed to ``step``, so a
step is a function of its inputs: a resumed run draws what the uninterrupted one drew, several
processes take their shards of one global draw (``StepInputs.shard``), and a TF step can be fed
the same numbers.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from models_pt.training import STYLEGAN2_ADAM, KerasAdam, path_length_penalty, r1_penalty

ENCODER, MAPPING = "encoder", "mapping"


@dataclass
class Objective:
    """The StylEx loss terms and their weights (0 turns a term off). Defaults: see the module."""

    adversarial: float = 1.0          # non-saturating loss of the generator (and encoder)
    r1_gamma: float = 1.0             # R1: gamma / 2 * |dD/dx|^2 on real images
    r1_interval: int = 16             # lazy: every N steps, the weight multiplied by N (StyleGAN2)
    path_length: float = 2.0          # StyleGAN2's pl_weight
    pl_interval: int = 4
    pl_decay: float = 0.01            # the running mean of path lengths
    rec_image: float = 1.0            # L1 between x and G(E(x) ++ C(x))
    rec_w: float = 1.0                # L1 between E(x') and E(x)
    classifier_kl: float = 1.0        # KL(C(x) || C(x'))
    alternate: bool = True            # encoder and mapping network alternately; False: the encoder always
    ema_beta: float = 0.999           # G_ema = beta G_ema + (1 - beta) G, every step

    def __post_init__(self):
        for f in ("r1_interval", "pl_interval"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        for f in ("adversarial", "r1_gamma", "path_length", "rec_image", "rec_w", "classifier_kl"):
            if getattr(self, f) < 0:
                raise ValueError(f"the weight {f} must be >= 0, got {getattr(self, f)}")

    def branch(self, step: int) -> str:
        """Which network feeds the generator at ``step`` (0-based)."""
        return MAPPING if self.alternate and step % 2 else ENCODER

    def r1_due(self, step: int) -> bool:
        return self.r1_gamma > 0 and step % self.r1_interval == 0

    def pl_due(self, step: int) -> bool:
        return self.path_length > 0 and step % self.pl_interval == 0


def ema_beta_for(batch: int, half_life_images: float, rampup: float | None = None, images_seen: int = 0) -> float:
    """StyleGAN2's EMA: the weight of the old average per step of ``batch`` images, so that the
    average forgets half of itself every ``half_life_images`` images (10,000 in StyleGAN2).
    ``rampup`` (StyleGAN2-ADA's ``ema_rampup``, 0.05 there): the half-life is at most that share
    of the images seen so far, so a short run's average is not still its initialisation."""
    half_life = float(half_life_images)
    if rampup is not None:
        half_life = min(half_life, max(images_seen, batch) * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


@dataclass
class StepInputs:
    """Everything a step uses, drawn in advance (``draw_inputs``). The real images and their
    classifier probabilities; per phase (``d`` the discriminator's, ``g`` the generator's) z, the
    probabilities that condition the mapping branch, and the noise of each conv layer; the
    path-length batch. Tensors batch-first; noise lists of ``[N, 1, r, r]``."""

    real: torch.Tensor
    probs: torch.Tensor
    d_z: torch.Tensor
    d_probs: torch.Tensor
    d_noise: list
    g_z: torch.Tensor
    g_probs: torch.Tensor
    g_noise: list
    pl_z: torch.Tensor
    pl_probs: torch.Tensor
    pl_noise: list
    pl_y: torch.Tensor

    def _map(self, fn) -> "StepInputs":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = [fn(t) for t in v] if isinstance(v, list) else fn(v)
        return StepInputs(**out)

    def shard(self, rank: int, world: int) -> "StepInputs":
        """Rank ``rank``'s images of ``world``: every ``world``-th, from ``rank``. Strided, so the
        discriminator's minibatch-stddev groups (``reshape(g, -1, ...)``: image i in group
        i mod N/g) hold the same images as in one process with the whole batch."""
        return self._map(lambda t: t[rank::world])

    def chunks(self, k: int) -> list["StepInputs"]:
        """``k`` micro-batches for gradient accumulation (strided, as ``shard``)."""
        return [self.shard(i, k) for i in range(k)]

    def to(self, device=None, dtype=None) -> "StepInputs":
        return self._map(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None))


def draw_inputs(rng: torch.Generator, real: torch.Tensor, probs: torch.Tensor, pool_probs: torch.Tensor,
                generator) -> StepInputs:
    """One step's random draws from ``rng`` (CPU, float32; cast with ``StepInputs.to``):
    ``pool_probs`` are the classifier's probabilities of every training image, from which the
    mapping branch's conditions are drawn (a randomly drawn real image's, per the first author)."""
    n, z_dim = real.shape[0], generator.config["z_dim"]

    def probs_of_random_images():
        return pool_probs[torch.randint(len(pool_probs), (n,), generator=rng)].float()

    def noise():
        return generator.noise_like(n, generator=rng, dtype=torch.float32, device="cpu")

    d = (torch.randn(n, z_dim, generator=rng), probs_of_random_images(), noise())
    g = (torch.randn(n, z_dim, generator=rng), probs_of_random_images(), noise())
    pl = (torch.randn(n, z_dim, generator=rng), probs_of_random_images(), noise())
    h = real.shape[-1]
    pl_y = torch.randn(real.shape, generator=rng) / math.sqrt(h * real.shape[-2])   # StyleGAN2's scale
    return StepInputs(real, probs.float(), *d, *g, *pl, pl_y)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision results (under autocast) widened to float32 before a softmax; others as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class NoSync:
    """One process: nothing to exchange. ``Distributed`` (``stylex_port.training``) averages
    gradients and statistics over the ranks of ``torch.distributed``."""

    world = 1

    def grads(self, params) -> None:
        pass

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        return t


def make_optimizer(params, kind: str, lr: float, betas=STYLEGAN2_ADAM["betas"], eps=STYLEGAN2_ADAM["eps"]):
    """``kind`` ``"keras"`` (``KerasAdam``, TF's update rule: what the release's TF training
    used) or ``"torch"`` (``torch.optim.Adam``; epsilon after the bias correction). ``params``:
    a list of tensors or of param groups (``{"params", "lr"}``)."""
    if kind == "keras":
        return KerasAdam(params, lr=lr, betas=betas, eps=eps)
    if kind == "torch":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)
    raise ValueError(f"optimizer must be 'keras' or 'torch', got {kind!r}")


def optimizer_state(opt) -> dict:
    """An optimizer's full state, ``KerasAdam``'s step count too (Keras' ``iterations``)."""
    return {"state_dict": opt.state_dict(), "iterations": getattr(opt, "iterations", None)}


def load_optimizer_state(opt, state: dict) -> None:
    opt.load_state_dict(state["state_dict"])
    if state.get("iterations") is not None:
        opt.iterations = state["iterations"]


class StylExTrainer:
    """The models, their optimizers, the EMA generator and the path-length mean; ``step`` runs one
    StylEx step (the discriminator phase, then the generator-and-encoder phase) on given inputs.

    ``lr``: the generator's and discriminator's learning rate; ``encoder_lr`` the encoder's (one
    study needed 1e-5 to keep it from diverging); ``accumulate``: micro-batches per step, their
    gradients summed (each loss divided by their number); ``autocast``: a dtype (``torch.bfloat16``)
    the forward passes run in under ``torch.autocast`` (a GPU option); ``sync``: the gradient
    and statistics exchange between processes (``NoSync``: one process); ``ema_schedule(step)``:
    the EMA's beta at a step (default: ``objective.ema_beta`` at every step)."""

    def __init__(self, G, E, D, C, objective: Objective | None = None, *, lr: float = STYLEGAN2_ADAM["lr"],
                 encoder_lr: float | None = None, betas=STYLEGAN2_ADAM["betas"], eps=STYLEGAN2_ADAM["eps"],
                 optimizer: str = "keras", accumulate: int = 1, autocast=None, sync=None, G_ema=None,
                 ema_schedule=None):
        self.G, self.E, self.D, self.C = G, E, D, C
        self.objective = objective or Objective()
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.accumulate, self.autocast, self.sync = accumulate, autocast, sync or NoSync()
        self.ema_schedule = ema_schedule or (lambda step: self.objective.ema_beta)
        self.G_ema = G_ema if G_ema is not None else copy.deepcopy(G).eval().requires_grad_(False)
        C.eval().requires_grad_(False)
        for m in (G, E, D):
            m.train()
        enc_lr = lr if encoder_lr is None else encoder_lr
        self.opt_g = make_optimizer([{"params": list(G.parameters()), "lr": lr},
                                     {"params": list(E.parameters()), "lr": enc_lr}], optimizer, lr, betas, eps)
        self.opt_d = make_optimizer(list(D.parameters()), optimizer, lr, betas, eps)
        self.pl_mean = torch.zeros((), dtype=torch.float64)
        self.steps_done = 0

    # ------------------------------------------------------------------ pieces
    def _ctx(self, device):
        if self.autocast is None:
            return torch.autocast(device_type=device.type, enabled=False)
        return torch.autocast(device_type=device.type, dtype=self.autocast)

    def fake(self, inp: StepInputs, branch: str, phase: str):
        """The generator's images in ``branch`` and the probabilities that condition them, plus,
        in the encoder branch, the encoder's latents (for the reconstruction in w space)."""
        noise = inp.d_noise if phase == "d" else inp.g_noise
        if branch == ENCODER:
            latent = self.E(inp.real)
            w = torch.cat([latent, inp.probs.to(latent.dtype)], dim=1)
            return self.G(w, noise=noise), inp.probs, latent
        z, probs = (inp.d_z, inp.d_probs) if phase == "d" else (inp.g_z, inp.g_probs)
        return self.G(self.G.mapping(z, probs), noise=noise), probs, None

    def d_losses(self, inp: StepInputs, step: int) -> tuple[torch.Tensor, dict]:
        """The discriminator's loss on one (micro-)batch, and its terms."""
        obj, branch = self.objective, self.objective.branch(step)
        with torch.no_grad():
            fake, cond, _ = self.fake(inp, branch, "d")
        terms = {"D real": F.softplus(-self.D(inp.real, inp.probs)).mean(),
                 "D fake": F.softplus(self.D(fake, cond)).mean()}
        loss = terms["D real"] + terms["D fake"]
        if obj.r1_due(step):
            terms["R1"] = r1_penalty(self.D, inp.real, inp.probs).mean()
            loss = loss + obj.r1_gamma / 2 * obj.r1_interval * terms["R1"]
        return loss, terms

    def g_losses(self, inp: StepInputs, step: int) -> tuple[torch.Tensor, dict]:
        """The generator's and encoder's loss on one (micro-)batch, and its terms (the path
        length's per-image lengths under ``"_pl lengths"``, for the running mean)."""
        obj, branch = self.objective, self.objective.branch(step)
        fake, cond, latent = self.fake(inp, branch, "g")
        terms = {"G adversarial": F.softplus(-self.D(fake, cond)).mean()}
        loss = obj.adversarial * terms["G adversarial"]
        if branch == ENCODER:
            terms["reconstruction image L1"] = (fake - inp.real).abs().mean()
            terms["reconstruction w L1"] = (self.E(fake) - latent).abs().mean()
            log_p = F.log_softmax(_wide(self.C(inp.real).detach()), dim=1)
            log_q = F.log_softmax(_wide(self.C(fake)), dim=1)
            terms["classifier KL"] = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
            loss = (loss + obj.rec_image * terms["reconstruction image L1"]
                    + obj.rec_w * terms["reconstruction w L1"] + obj.classifier_kl * terms["classifier KL"])
        if obj.pl_due(step):
            # against the running mean as it stood before this step (StyleGAN2 updates it with
            # this batch first and differentiates through that update: a difference of
            # pl_decay times this batch's mean; the lagged mean is the same on every process)
            w = self.G.mapping(inp.pl_z, inp.pl_probs)
            lengths = path_length_penalty(self.G, w, inp.pl_y, noise=inp.pl_noise).sqrt()
            terms["_pl lengths"] = lengths
            penalty = (lengths - self.pl_mean.to(lengths.dtype)).square().mean()
            terms["path length"] = penalty
            loss = loss + obj.path_length * obj.pl_interval * penalty
        return loss, terms

    # ------------------------------------------------------------------ the step
    def step(self, inp: StepInputs) -> dict[str, float]:
        """One StylEx step on ``inp`` (this process's shard); returns the loss terms, averaged
        over micro-batches and processes."""
        step = self.steps_done
        device = inp.real.device
        if inp.real.shape[0] % self.accumulate:
            raise ValueError(f"a batch of {inp.real.shape[0]} images does not split into {self.accumulate} "
                             "equal micro-batches")
        parts = inp.chunks(self.accumulate) if self.accumulate > 1 else [inp]
        k = len(parts)
        logged: dict[str, torch.Tensor] = {}

        def log(terms):
            for name, v in terms.items():
                if not name.startswith("_"):
                    logged[name] = logged.get(name, 0) + v.detach().double() / k

        # discriminator phase: G and E fixed
        self.D.requires_grad_(True)
        self.G.requires_grad_(False)
        self.E.requires_grad_(False)
        self.opt_d.zero_grad(set_to_none=True)
        for part in parts:
            with self._ctx(device):
                loss, terms = self.d_losses(part, step)
            (loss / k).backward()
            log(terms)
        self.sync.grads(list(self.D.parameters()))
        self.opt_d.step()

        # generator-and-encoder phase: D fixed (its input gradients still flow)
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        self.E.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        lengths = []
        for part in parts:
            with self._ctx(device):
                loss, terms = self.g_losses(part, step)
            (loss / k).backward()
            if "_pl lengths" in terms:
                lengths.append(terms["_pl lengths"].detach().double())
            log(terms)
        self.sync.grads(list(self.G.parameters()) + list(self.E.parameters()))
        self.opt_g.step()
        if lengths:   # the running mean of path lengths, over every process's images (reduced where they are)
            batch_mean = self.sync.mean(torch.cat(lengths).mean()).cpu()
            self.pl_mean = self.pl_mean + self.objective.pl_decay * (batch_mean - self.pl_mean)
        self.D.requires_grad_(True)
        self.update_ema(self.ema_schedule(step))
        self.steps_done += 1
        names = sorted(logged)
        values = self.sync.mean(torch.stack([logged[n] for n in names])) if names else []
        return {n: float(v) for n, v in zip(names, values)} | {"branch": self.objective.branch(step)}

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "E": self.E.state_dict(), "D": self.D.state_dict(),
                "G_ema": self.G_ema.state_dict(), "opt_g": optimizer_state(self.opt_g),
                "opt_d": optimizer_state(self.opt_d), "pl_mean": self.pl_mean.clone(),
                "steps_done": self.steps_done, "objective": asdict(self.objective)}

    def load_state_dict(self, state: dict) -> None:
        for name in ("G", "E", "D", "G_ema"):
            getattr(self, name).load_state_dict(state[name])
        load_optimizer_state(self.opt_g, state["opt_g"])
        load_optimizer_state(self.opt_d, state["opt_d"])
        self.pl_mean = state["pl_mean"].clone()
        self.steps_done = int(state["steps_done"])


# ---------------------------------------------------------------------- fresh models
@torch.no_grad()
def stylegan2_init(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """StyleGAN2's initialisation of a generator, encoder or discriminator built by its class
    (equalized learning rate: weights N(0, 1), scaled at run time): biases 0, the mapping
    network's weights N(0, 1 / lr_mul^2) (its learning-rate multiplier), the constant input and
    the stored noise N(0, 1), noise strengths 0. Deterministic in ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    for name, p in module.named_parameters():
        if name.endswith("bias") or "bias." in name or name.endswith("noise_strength"):
            p.zero_()
        else:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    mapping = getattr(module, "mapping", None)
    if mapping is not None:
        for w in mapping.weight:
            w.div_(mapping.lr_mul)
    for name, b in module.named_buffers():
        if name.endswith(".noise"):
            b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype))
    return module


def widths(resolution: int, channel_max: int, channel_base: int = 32768) -> list[int]:
    """StyleGAN2's widths at 4, 8, ..., ``resolution``: min(channel_base / r, channel_max)."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return [min(channel_base // r, channel_max) for r in (4 * 2 ** i for i in range(int(math.log2(resolution)) - 1))]


def fresh_models(resolution: int, label_size: int, *, channel_max: int = 512, resnet_channel_max: int | None = None,
                 z_dim: int = 512, latent_size: int | None = None, mapping_layers: int = 8,
                 mapping_lr_mul: float = 0.01, mbstd_group: int = 4, seed: int = 0):
    """A new generator, encoder and discriminator of the release's architecture at other sizes,
    StyleGAN2-initialised: ``{"generator", "encoder", "discriminator"}``. The encoder's latent is
    the mapping network's output size (``z_dim``), so ``E(x) ++ C(x)`` is a dlatent."""
    from models_pt.generator import Generator
    from models_pt.resnet_d import Discriminator, Encoder

    latent_size = z_dim if latent_size is None else latent_size
    if latent_size != z_dim:
        raise ValueError(f"the encoder's latent ({latent_size}) must be the mapping network's output ({z_dim})")
    g_ch = widths(resolution, channel_max)
    r_ch = widths(resolution, resnet_channel_max or channel_max)
    models = {
        "generator": Generator(resolution=resolution, channels=g_ch, z_dim=z_dim, w_dim=z_dim + label_size,
                               label_size=label_size, mapping_layers=mapping_layers, mapping_lr_mul=mapping_lr_mul),
        "encoder": Encoder(resolution=resolution, channels=r_ch, latent_size=latent_size),
        "discriminator": Discriminator(resolution=resolution, channels=r_ch, label_size=label_size,
                                       mbstd_group=mbstd_group),
    }
    for i, m in enumerate(models.values()):
        stylegan2_init(m, seed * 1000 + i)
    return models
