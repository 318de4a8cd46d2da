"""The training commands: ``train-classifier`` and ``train`` (registered on ``stylex_port.cli.main``).

Both read a folder with one subfolder of images per class (``stylex_port.training.data``) and
write the converted format that every other command reads. ``docs/training.md`` has the
objective, its defaults and where the sources disagree, and the digits run.
"""
from __future__ import annotations

import functools
import sys

import click

from stylex_port.cli_common import EXIT_BAD_INPUT, log_line, user_errors


def data_errors(fn):
    """A bad image folder, a degenerate classifier or a run that cannot resume: one line, exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from stylex_port.training.data import DataError

        try:
            return fn(*args, **kwargs)
        except DataError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    return wrapper


def resolution_option(default: int):
    return click.option("--resolution", default=default, show_default=True,
                        help="Image size: each image's shorter side is resized to it, then centre-cropped (a power of two).")


@click.command("train-classifier")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="A folder with one subfolder of PNG/JPEG images per class (any size, grey or colour).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Writes mobilenet.safetensors and manifest.json (the converted format), classifier.json.")
@resolution_option(32)
@click.option("--alpha", default=0.25, show_default=True, help="MobileNetV1's width multiplier (the release: 1.0).")
@click.option("--steps", default=1000, show_default=True, help="Training steps.")
@click.option("--batch", default=32, show_default=True, help="Images per step.")
@click.option("--lr", default=1e-3, show_default=True, help="Adam's learning rate.")
@click.option("--holdout", default=0.1, show_default=True,
              help="Share of each class held out for the accuracy (the same split `train` holds out, for the same --seed).")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Random shifts of up to resolution/16 px.")
@click.option("--hflip", is_flag=True, help="Random horizontal flips (not for digits or text).")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0: every core).")
@user_errors
@data_errors
def train_classifier_cmd(data_dir, out_dir, resolution, alpha, steps, batch, lr, holdout, augment, hflip, seed, threads):
    """Train a MobileNetV1 of the release's architecture on an image folder.

    Reports the held-out accuracy, and refuses (exit 2, nothing written) a classifier that
    predicts one class for nearly every held-out image: it would switch StylEx's classifier
    term off."""
    from stylex_port.training.classifier import ClassifierOptions, train_classifier

    opts = ClassifierOptions(resolution=resolution, alpha=alpha, steps=steps, batch=batch, lr=lr, holdout=holdout,
                             augment=augment, hflip=hflip, seed=seed, threads=threads)
    info = train_classifier(data_dir, out_dir, opts, log=log_line)
    click.echo(f"held-out accuracy {info['held_out_accuracy']:.1%} on {info['held_out_images']} images "
               f"(training {info['train_accuracy']:.1%}); {steps} steps in {info['seconds']} s; wrote {out_dir}")


@click.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="A folder with one subfolder of PNG/JPEG images per class (any size, grey or colour).")
@click.option("--classifier", "classifier_path", required=True, type=click.Path(),
              help="The fixed classifier: `train-classifier`'s folder, a converted release, or a .safetensors file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Writes weights/, dlatents.pkl, samples/, losses.json/.png, train.json and checkpoint.pt.")
@resolution_option(32)
@click.option("--channel-max", default=64, show_default=True, help="The generator's widest layer (the release: 512).")
@click.option("--resnet-channel-max", type=int, default=None,
              help="The encoder's and discriminator's widest layer [default: --channel-max].")
@click.option("--z-dim", default=64, show_default=True,
              help="The mapping network's width and the encoder's latent (the release: 512).")
@click.option("--mapping-layers", default=4, show_default=True, help="Mapping network depth (the release: 8).")
@click.option("--init", type=click.Path(file_okay=False), default=None,
              help="Fine-tune a converted release (its generator, encoder, discriminator) instead of starting fresh.")
@click.option("--steps", default=1000, show_default=True, help="Total training steps (a resumed run counts on).")
@click.option("--batch", default=16, show_default=True, help="Images per step, over every process.")
@click.option("--accumulate", default=1, show_default=True, help="Gradient accumulation: micro-batches per step.")
@click.option("--lr", default=0.002, show_default=True, help="Generator's and discriminator's learning rate (StyleGAN2's).")
@click.option("--encoder-lr", type=float, default=None, help="The encoder's learning rate [default: --lr].")
@click.option("--betas", nargs=2, type=float, default=(0.0, 0.99), show_default=True, help="Adam's betas (StyleGAN2's).")
@click.option("--optimizer", type=click.Choice(["keras", "torch"]), default="keras", show_default=True,
              help="keras: TF's Adam rule (epsilon before the bias correction); torch: torch.optim.Adam.")
@click.option("--adversarial", default=1.0, show_default=True, help="Weight of the non-saturating generator loss.")
@click.option("--r1-gamma", default=1.0, show_default=True, help="R1's gamma (the loss is gamma/2 |dD/dx|^2).")
@click.option("--r1-interval", default=16, show_default=True, help="Lazy R1: every N steps, weighted by N.")
@click.option("--path-length", default=2.0, show_default=True, help="Path-length weight (0: off).")
@click.option("--pl-interval", default=4, show_default=True, help="Lazy path length: every N steps, weighted by N.")
@click.option("--rec-image", default=1.0, show_default=True, help="Weight of the image reconstruction (L1).")
@click.option("--rec-w", default=1.0, show_default=True, help="Weight of the w reconstruction (L1 of E(x') and E(x)).")
@click.option("--classifier-kl", default=1.0, show_default=True, help="Weight of KL(C(x) || C(x')).")
@click.option("--alternate/--encoder-only", default=True, show_default=True,
              help="Feed the generator from the encoder and the mapping network alternately, or from the encoder only.")
@click.option("--ema-half-life", default=10_000.0, show_default=True, help="The EMA generator's half-life in images.")
@click.option("--ema-rampup", default=0.05, show_default=True,
              help="The half-life is at most this share of the images seen so far (StyleGAN2-ADA's; 0: off).")
@click.option("--holdout", default=0.1, show_default=True, help="Share of each class held out (dlatents.pkl, metrics).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (under torchrun: each rank its own GPU).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--bf16", is_flag=True, help="bfloat16 autocast for the forward passes (GPU only).")
@click.option("--threads", default=0, show_default=True, help="torch CPU threads per process (0: cores / processes).")
@click.option("--sample-every", default=500, show_default=True, help="Write samples/step_N.png every N steps.")
@click.option("--checkpoint-every", default=500, show_default=True, help="Write checkpoint.pt every N steps.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.pt.")
@user_errors
@data_errors
def train_cmd(data_dir, classifier_path, out_dir, resolution, channel_max, resnet_channel_max, z_dim, mapping_layers,
              init, steps, batch, accumulate, lr, encoder_lr, betas, optimizer, adversarial, r1_gamma, r1_interval,
              path_length, pl_interval, rec_image, rec_w, classifier_kl, alternate, ema_half_life, ema_rampup, holdout, seed,
              device, dtype, bf16, threads, sample_every, checkpoint_every, resume):
    """Train StylEx (generator, encoder, discriminator) with a fixed classifier on an image folder.

    Resumable (--resume ends bit for bit where an uninterrupted run ends, on the CPU); several
    processes with `torchrun --nproc_per_node N cli.py train ...` (gloo on the CPU, NCCL on GPUs)."""
    from stylex_port.training.stylex import TrainOptions, train

    objective = dict(adversarial=adversarial, r1_gamma=r1_gamma, r1_interval=r1_interval, path_length=path_length,
                     pl_interval=pl_interval, rec_image=rec_image, rec_w=rec_w, classifier_kl=classifier_kl,
                     alternate=alternate)
    opts = TrainOptions(resolution=resolution, channel_max=channel_max, resnet_channel_max=resnet_channel_max,
                        z_dim=z_dim, mapping_layers=mapping_layers, init=init, steps=steps, batch=batch,
                        accumulate=accumulate, lr=lr, encoder_lr=encoder_lr, betas=tuple(betas), optimizer=optimizer,
                        ema_half_life=ema_half_life, ema_rampup=ema_rampup or None, objective=objective, holdout=holdout, seed=seed, device=device,
                        dtype=dtype, bf16=bf16, threads=threads, sample_every=sample_every,
                        checkpoint_every=checkpoint_every)
    try:
        objective_error = None
        from models_pt.stylex import Objective

        Objective(**objective)
    except ValueError as e:
        objective_error = str(e)
    if objective_error:
        raise click.BadParameter(objective_error)
    info = train(data_dir, classifier_path, out_dir, opts, resume=resume, log=log_line)
    if info:
        click.echo(f"held-out reconstruction L1 {info['held_out']['reconstruction_l1']:.4f}, classifier agreement "
                   f"{info['held_out']['classifier_agreement']:.0%}; {info['seconds_per_1000_steps']} s per 1,000 steps")


COMMANDS = (train_classifier_cmd, train_cmd)
