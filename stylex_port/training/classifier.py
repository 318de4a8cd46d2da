"""Train the classifier StylEx explains: a MobileNetV1 of the release's architecture on a folder.

The architecture is the release's (``models_pt.classifier.MobileNetV1``: TF's padding, BatchNorm
epsilon 1e-3 and Keras' momentum 0.99), at a width multiplier (``alpha``) and input size of your
choice, so every command reads the result as it reads the release's classifier. After training,
the BatchNorm running statistics are recomputed over the training images (a cumulative average
in training mode; with Keras' slow momentum a short run's statistics would still remember the
first batches). A classifier that predicts one class for (nearly) every held-out image is
refused: it would switch StylEx's classifier term off silently (one reproduction study trained
with such a classifier without noticing).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stylex_port.training.data import DataError, ImageFolder, load_folder, split

DEGENERATE_SHARE = 0.95   # one class predicted for at least this share of held-out images ...


@dataclass
class ClassifierOptions:
    resolution: int = 32
    alpha: float = 0.25
    steps: int = 1000
    batch: int = 32
    lr: float = 1e-3
    holdout: float = 0.1
    augment: bool = True         # random shifts of up to resolution / 16 pixels
    hflip: bool = False          # random horizontal flips (off: digits and text are not symmetric)
    seed: int = 0
    threads: int = 0             # torch CPU threads (0: every core)


class DegenerateClassifier(DataError):
    """A classifier that predicts one class for (nearly) every held-out image."""


def degenerate(predicted: np.ndarray, labels: np.ndarray, classes: list[str]) -> str | None:
    """Why a classifier is degenerate, or None: one class predicted for >= 95% of held-out images
    when fewer than 95% of them are of that class."""
    values, counts = np.unique(predicted, return_counts=True)
    top = int(values[counts.argmax()])
    share = counts.max() / len(predicted)
    true_share = float((labels == top).mean())
    if share >= DEGENERATE_SHARE and true_share < DEGENERATE_SHARE:
        return (f"it predicts {classes[top]!r} for {share:.0%} of the {len(predicted)} held-out images "
                f"({true_share:.0%} are {classes[top]!r}); StylEx's classifier term would be switched off. "
                "Train longer, balance the classes or lower --lr")
    return None


def augment(x, rng, shift: int, hflip: bool):
    """Random integer shifts (edge padding) and optional flips of a batch, from a torch Generator."""
    import torch
    import torch.nn.functional as F

    if shift:
        n, _, h, w = x.shape
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=rng)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=rng)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if hflip:
        flip = torch.rand(len(x), generator=rng) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def recompute_bn_statistics(model, data: ImageFolder, index: np.ndarray, batch: int) -> None:
    """Every BatchNorm's running mean and variance as the cumulative average over ``index``'s
    images in training mode (PyTorch's ``momentum=None``); the momentum is put back after."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():   # near-equal batches (each weighs alike in the average), none of one image
        for part in np.array_split(index, max(1, -(-len(index) // batch))):
            model(data.images(part))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def predict(model, data: ImageFolder, index: np.ndarray, batch: int = 128, device="cpu", dtype=None):
    """Class probabilities ``[N, classes]`` of ``index``'s images (a CPU tensor), eval mode; the
    images go to ``device`` in ``dtype`` (default: float32)."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([torch.softmax(model(data.images(index[s:s + batch]).to(device, dtype or torch.float32)),
                                        1).cpu() for s in range(0, len(index), batch)])


def train_classifier(data_dir: str | Path, out_dir: str | Path, opts: ClassifierOptions, progress: bool = True,
                     log=print) -> dict:
    """Train, check, write ``<out>/mobilenet.safetensors``, ``manifest.json`` and ``classifier.json``;
    returns what ``classifier.json`` holds. Raises ``DataError`` (``DegenerateClassifier`` for a
    one-class predictor, in which case nothing is written)."""
    import os

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from models_pt.classifier import MobileNetV1
    from models_pt.release_facts import CLASSIFIER_ASSUMED
    from stylex_port.training.weights import write_models

    if opts.resolution < 32:
        raise DataError(f"--resolution {opts.resolution}: MobileNetV1 divides its input by 32; use at least 32")
    if opts.steps < 1 or opts.batch < 2:
        raise DataError(f"--steps {opts.steps} and --batch {opts.batch}: need at least 1 step of at least 2 images")
    torch.set_num_threads(opts.threads or os.cpu_count() or 1)
    data = load_folder(data_dir, opts.resolution, progress=progress)
    train, held = split(data.labels, opts.holdout, opts.seed, data.classes)
    log(f"{data.root}: {len(data)} images of {len(data.classes)} classes "
        f"({', '.join(f'{c} {n}' for c, n in data.counts().items())}); training on {len(train)}, "
        f"holding out {len(held)}")
    torch.manual_seed(opts.seed)
    model = MobileNetV1(alpha=opts.alpha, depth_multiplier=1, num_classes=len(data.classes),
                        bn_epsilon=CLASSIFIER_ASSUMED["bn_epsilon"], strided_padding=CLASSIFIER_ASSUMED["strided_padding"],
                        bn_momentum=CLASSIFIER_ASSUMED["bn_momentum"], dropout=CLASSIFIER_ASSUMED["dropout"])
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr)
    rng = torch.Generator().manual_seed(opts.seed)
    shift = opts.resolution // 16 if opts.augment else 0
    history, t0 = [], time.perf_counter()
    model.train()
    bar = tqdm(range(opts.steps), desc="training the classifier", unit="step", disable=not progress)
    for _ in bar:
        idx = train[torch.randint(len(train), (opts.batch,), generator=rng).numpy()]
        x = augment(data.images(idx), rng, shift, opts.hflip)
        loss = F.cross_entropy(model(x), torch.from_numpy(data.labels[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        bar.set_postfix_str(f"loss {np.mean(history[-20:]):.3f}")
    seconds = time.perf_counter() - t0
    recompute_bn_statistics(model, data, train, 64)
    probs = predict(model, data, held).numpy()
    predicted = probs.argmax(1)
    accuracy = float((predicted == data.labels[held]).mean())
    why = degenerate(predicted, data.labels[held], data.classes)
    if why:
        raise DegenerateClassifier(f"{data.root}: the trained classifier is degenerate: {why}")
    confusion = np.zeros((len(data.classes),) * 2, dtype=int)
    np.add.at(confusion, (data.labels[held], predicted), 1)
    info = {"data": str(data.root), "classes": data.classes, "images": data.counts(),
            "train_images": len(train), "held_out_images": len(held),
            "held_out_accuracy": accuracy, "confusion (rows: true, columns: predicted)": confusion.tolist(),
            "train_accuracy": float((predict(model, data, train).numpy().argmax(1) == data.labels[train]).mean()),
            "seconds": round(seconds, 1), "loss_first_last_20": [float(np.mean(history[:20])), float(np.mean(history[-20:]))],
            "options": asdict(opts)}
    out_dir = Path(out_dir)
    write_models(out_dir, {"classifier": model}, {"by": "cli.py train-classifier", **{k: info[k] for k in (
        "data", "classes", "held_out_accuracy", "options")}})
    from porting.atomic import write_json

    write_json(out_dir / "classifier.json", info)
    (out_dir / "losses.json").write_text(json.dumps({"cross_entropy": history}))
    return info
