"""Fine-tune a converted StylEx release in PyTorch with the StylEx losses, then export it to TF.

    .venv/bin/python examples/finetune.py --weights weights/reference --steps 30 --out runs/finetune
    .venv/bin/python cli.py verify --train --tf-ckpt runs/finetune/release --weights runs/finetune/weights

The data: ``--images`` images the release's own generator renders (from its ``dlatents.pkl``
when the release folder has one, the rest from random z through the mapping network), labelled
by its classifier. The classifier stays fixed, as in StylEx.

The losses (Lang et al. 2021, "Explaining in Style", sec. 3), each step:

* discriminator: StyleGAN2's logistic loss on real images and on the generator's images of
  random z (conditioned on the real images' label probabilities), plus R1 (``--r1-gamma`` / 2);
* generator and encoder: the non-saturating adversarial loss on the generator's images; the
  reconstruction of real images through the encoder, ``x' = G(E(x) ++ C(x))``, in image space
  (L1; the paper adds LPIPS, whose weights cannot be had without a network here, so it is left
  out) and in w space (L1 between ``E(x')`` and ``E(x)``); the classifier term
  ``KL(C(x) || C(x'))``.

Optimizer: Keras' Adam (``models_pt.training.KerasAdam``: TF's update rule, StyleGAN2's betas and
epsilon). Writes, into ``--out``: ``losses.png`` (the curves), ``losses.json``, ``release/``
(every model exported to TF, ``<stem>.savedmodel.zip``, by ``crosscheck.export``) and
``weights/`` (``cli.py convert`` of that release: what ``models_pt.load`` reads). What the
fine-tuned weights can be compared with: TF's training step at those weights (``verify --train``
on ``release/`` and ``weights/``, and ``verify``); not the original release (it moved), and not
a TF training run of the same length (the data and noise are drawn in PyTorch).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fail(message: str) -> int:
    print(f"finetune: {message}", file=sys.stderr)
    return 2


def stylex_losses(G, E, D, C, real, probs, generator, r1_gamma: float):
    """One step's losses: (discriminator's, generator-and-encoder's, the terms by name)."""
    import torch
    import torch.nn.functional as F

    from models_pt.pipeline import encode
    from models_pt.training import r1_penalty

    n = real.shape[0]
    z = torch.randn(n, G.config["z_dim"], generator=generator)
    fake = G.sample(z, probs)
    # discriminator
    d_real, d_fake = D(real, probs), D(fake.detach(), probs)
    d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
    r1 = r1_penalty(D, real, probs).mean()
    # generator and encoder
    adversarial = F.softplus(-D(fake, probs)).mean()
    w = encode(E, C, real)                           # encoder latent ++ classifier probabilities
    recon = G(w)
    rec_image = (recon - real).abs().mean()
    rec_w = (E(recon) - w[:, :E.config["latent_size"]]).abs().mean()
    log_p = F.log_softmax(C(real), dim=1)
    log_q = F.log_softmax(C(recon), dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    g_loss = adversarial + rec_image + rec_w + kl
    terms = {"D logistic": d_loss, "R1": r1, "G adversarial": adversarial, "reconstruction (image, L1)": rec_image,
             "reconstruction (w, L1)": rec_w, "classifier KL": kl}
    return d_loss + r1_gamma / 2 * r1, g_loss, {k: float(v) for k, v in terms.items()}


def reconstruction_error(G, E, C, images) -> float:
    """The image reconstruction's L1 over every training image, the models in eval mode (the
    stored noise, no random draw): the same measure before and after fine-tuning, where each
    step's value is one random batch under fresh noise."""
    import torch

    from models_pt.pipeline import encode

    modes = [m.training for m in (G, E)]
    G.eval(), E.eval()
    with torch.no_grad():
        error = float(torch.cat([(G(encode(E, C, x)) - x).abs().flatten(1).mean(1)
                                 for x in images.split(16)]).mean())
    for m, mode in zip((G, E), modes):
        m.train(mode)
    return error


def render_data(G, C, count: int, dlatents_path: Path | None, seed: int):
    """``count`` images of the release's generator and its classifier's probabilities."""
    import numpy as np
    import torch

    with torch.no_grad():
        parts = []
        if dlatents_path is not None and dlatents_path.exists():
            from models_pt.dlatents import dlatent_matrix, load_dlatents

            parts.append(G(torch.from_numpy(dlatent_matrix(load_dlatents(dlatents_path))[:count]).float()))
        rest = count - sum(len(x) for x in parts)
        if rest > 0:                                  # the rest from random z through the mapping network
            g = torch.Generator().manual_seed(seed)
            labels = torch.from_numpy(np.random.default_rng(seed).dirichlet(np.ones(G.config["label_size"]), rest))
            parts.append(G.sample(torch.randn(rest, G.config["z_dim"], generator=g), labels.float()))
        images = torch.cat(parts).clamp(-1, 1)
        probs = torch.softmax(C(images), dim=1)
    return images, probs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=Path("weights/reference"), help="a converted release folder")
    p.add_argument("--release", type=Path, default=None,
                   help="its TF release folder (for dlatents.pkl) [default: the manifest's, if it exists]")
    p.add_argument("--out", type=Path, default=Path("runs/finetune"), help="output folder")
    p.add_argument("--steps", type=int, default=30, help="training steps")
    p.add_argument("--batch", type=int, default=4, help="images per step (a multiple of 4, the minibatch-stddev group)")
    p.add_argument("--images", type=int, default=32, help="rendered training images")
    p.add_argument("--lr", type=float, default=0.002, help="Adam's learning rate (StyleGAN2's)")
    p.add_argument("--r1-gamma", type=float, default=1.0, help="R1 weight (StyleGAN2: 10 at 1024 px, less below)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (set on purpose)")
    p.add_argument("--no-export", action="store_true", help="skip the TF export (and the converted weights)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.images < args.batch:
        return fail("need --steps >= 1 and --images >= --batch")
    if args.batch % 4 and args.batch > 4:
        return fail(f"--batch {args.batch}: the discriminator's minibatch standard deviation needs a multiple of 4")

    import numpy as np
    import torch
    from tqdm import tqdm

    import models_pt
    from models_pt.training import STYLEGAN2_ADAM, KerasAdam

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        manifest = models_pt.read_manifest(args.weights)
        models = models_pt.load(args.weights)
    except (models_pt.WeightsError, OSError) as e:
        return fail(str(e))
    by_kind = {m.kind: (stem, m) for stem, m in models.items()}
    missing = [k for k in ("generator", "encoder", "discriminator", "classifier") if k not in by_kind]
    if missing:
        return fail(f"{args.weights}: the release lacks {', '.join(missing)}")
    G, E, D, C = (by_kind[k][1] for k in ("generator", "encoder", "discriminator", "classifier"))
    release = args.release or (Path(manifest["release"]) if manifest.get("release") else None)
    images, probs = render_data(G, C, args.images, release / "dlatents.pkl" if release else None, args.seed)

    C.eval().requires_grad_(False)
    before = reconstruction_error(G, E, C, images)
    for m in (G, E, D):
        m.train()
    settings = {**STYLEGAN2_ADAM, "lr": args.lr}
    opt_d = KerasAdam(D.parameters(), **settings)
    opt_g = KerasAdam(list(G.parameters()) + list(E.parameters()), **settings)
    gen = torch.Generator().manual_seed(args.seed + 1)
    history: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(range(args.steps), desc="fine-tuning", unit="step")
    for _ in bar:
        idx = torch.randperm(args.images, generator=gen)[:args.batch]
        d_loss, g_loss, terms = stylex_losses(G, E, D, C, images[idx], probs[idx], gen, args.r1_gamma)
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        d_loss.backward(inputs=list(D.parameters()))
        g_loss.backward(inputs=list(G.parameters()) + list(E.parameters()))   # before D's weights move
        opt_d.step()
        opt_g.step()
        history.append(terms)
        bar.set_postfix_str(f"rec {terms['reconstruction (image, L1)']:.3f}")
    seconds = time.perf_counter() - t0
    for m in (G, E, D):
        m.eval()
    after = reconstruction_error(G, E, C, images)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "losses.json").write_text(json.dumps({"steps": history, "seconds": round(seconds, 1),
                                                      "reconstruction, every image, eval mode":
                                                          {"before": before, "after": after},
                                                      "settings": {**vars(args), "weights": str(args.weights),
                                                                   "out": str(args.out),
                                                                   "release": str(args.release)}}, indent=1))
    plot(history, args.out / "losses.png")
    first, last = (np.mean([h["reconstruction (image, L1)"] for h in part]) for part in
                   (history[:max(1, len(history) // 5)], history[-max(1, len(history) // 5):]))
    print(f"{args.steps} steps in {seconds:.1f} s; image reconstruction (L1) per step {first:.4f} -> {last:.4f}, "
          f"over every image in eval mode {before:.4f} -> {after:.4f}; wrote {args.out / 'losses.png'}")
    if args.no_export:
        return 0
    from crosscheck.export import export_model
    from porting.release import convert_release

    release_out = args.out / "release"
    if release_out.exists():
        shutil.rmtree(release_out)
    release_out.mkdir(parents=True)
    for stem, module in models.items():
        export_model(args.weights / manifest["models"][stem]["weights"], release_out / f"{stem}.savedmodel.zip",
                     state=module.state_dict())
    result = convert_release(release_out, args.out / "weights", progress=False)
    if result.failed:
        return fail(f"converting the exported release failed: {result.failed}")
    print(f"wrote {release_out} (TF, the release's layout) and {args.out / 'weights'} (converted); check with\n"
          f"  .venv/bin/python cli.py verify --train --tf-ckpt {release_out} --weights {args.out / 'weights'}")
    return 0


def plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in history[0]:
        ax = axes[0] if name.startswith(("D ", "R1", "G ")) else axes[1]
        ax.plot([h[name] for h in history], label=name)
    for ax, title in zip(axes, ("adversarial (discriminator, R1, generator)", "StylEx reconstruction terms")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
