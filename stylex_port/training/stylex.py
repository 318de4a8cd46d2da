"""``cli.py train``: StylEx training on a labelled image folder, resumable, on one process or many.

What a run writes into ``--out`` (rank 0 alone writes):

* ``checkpoint.pt``: everything a resumed run needs (models, EMA, optimizer moments and step
  counts, the path-length mean, the data order, both random generators, the loss history),
  written to a temporary file and renamed, so a kill during a write leaves the previous one;
* ``weights/``: the converted format (``generator`` = the EMA generator, ``encoder``,
  ``discriminator``, the fixed classifier copied) that ``models_pt.load``, ``attfind``,
  ``flip-rate``, ``user-study`` and ``fid`` read;
* ``dlatents.pkl``: the held-out images' dlatents (the encoder's output and the classifier's
  probabilities, the release's format) for ``attfind --dlatents``;
* ``samples/step_NNNNNN.png``: held-out images over their reconstructions, and samples of
  each class from fixed z; ``losses.json``, ``losses.png``; ``train.json``: the settings, the
  time, and the held-out reconstruction's L1 and classifier agreement.

Several processes (``torchrun --nproc_per_node N cli.py train ...``): ``torch.distributed``
with NCCL on GPUs and gloo on the CPU. Every rank draws the same global batch and random
numbers and takes its strided shard (``StepInputs.shard``); gradients are averaged with one
all-reduce per phase. That is what DistributedDataParallel's reducer does, written out,
because the reducer does not support the double backward of R1 and the path length.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stylex_port.training.data import DataError, load_folder, split

CHECKPOINT = "checkpoint.pt"
FAULT_ENV = "STYLEX_TRAIN_FAULT"   # tests: "step:K" (killed after step K) or "write:K" (inside the K-th checkpoint write)


@dataclass
class TrainOptions:
    resolution: int = 32
    channel_max: int = 64             # the generator's widest layer (the release: 512)
    resnet_channel_max: int | None = None   # the encoder's and discriminator's (default: channel_max)
    z_dim: int = 64                   # mapping network width = the encoder's latent (the release: 512)
    mapping_layers: int = 4           # (the release: 8)
    init: str | None = None           # a converted release folder to fine-tune
    steps: int = 1000
    batch: int = 16
    accumulate: int = 1
    lr: float = 0.002
    encoder_lr: float | None = None
    betas: tuple = (0.0, 0.99)
    optimizer: str = "keras"
    ema_half_life: float = 10_000     # images
    ema_rampup: float | None = 0.05   # StyleGAN2-ADA's: the half-life at most this share of the images seen
    objective: dict = field(default_factory=dict)   # models_pt.stylex.Objective's fields
    holdout: float = 0.1
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    bf16: bool = False
    threads: int = 0
    sample_every: int = 500
    checkpoint_every: int = 500


class TrainingError(DataError):
    """A run that cannot start or go on, with what to do about it."""


# ---------------------------------------------------------------------- processes
class Distributed:
    """Gradients and statistics averaged over the ranks of ``torch.distributed``."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.world, self.rank = dist.get_world_size(), dist.get_rank()

    def grads(self, params) -> None:
        import torch

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, t):
        t = t.clone()
        self.dist.all_reduce(t)
        return t / self.world


def start_processes(device: str):
    """(rank, world, sync, device): from torchrun's environment when ``WORLD_SIZE`` > 1."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        from models_pt.stylex import NoSync

        return 0, 1, NoSync(), torch.device(device)
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    return dist.get_rank(), world, Distributed(), dev


def lost_peer(error: BaseException) -> bool:
    """A collective that failed because another process is gone (not an error of this one's)."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistBackendError", ())) or isinstance(error, getattr(dist, "DistNetworkError", ())):
        return True
    text = str(error).lower()
    return any(k in text for k in ("connection closed", "connection reset", "broken pipe", "gloo", "nccl"))


# ---------------------------------------------------------------------- data order
class DataOrder:
    """Batches of ``batch`` training indices: a fresh permutation per epoch from its own generator
    (the last incomplete batch of an epoch is dropped); its state goes into the checkpoint."""

    def __init__(self, n: int, batch: int, seed: int):
        import torch

        if batch > n:
            raise TrainingError(f"--batch {batch} is larger than the {n} training images")
        self.n, self.batch = n, batch
        self.rng = torch.Generator().manual_seed(seed)
        self.perm, self.pos, self.epoch = None, n, -1

    def next(self) -> np.ndarray:
        import torch

        if self.pos + self.batch > self.n:
            self.perm, self.pos, self.epoch = torch.randperm(self.n, generator=self.rng), 0, self.epoch + 1
        out = self.perm[self.pos:self.pos + self.batch].numpy()
        self.pos += self.batch
        return out

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state(), "perm": self.perm, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, s: dict) -> None:
        self.rng.set_state(s["rng"])
        self.perm, self.pos, self.epoch = s["perm"], s["pos"], s["epoch"]


# ---------------------------------------------------------------------- faults (tests)
def _fault(kind: str, count: int) -> None:
    """Kill this process (SIGKILL: no cleanup, as a crash or an OOM kill) where ``FAULT_ENV`` says."""
    want = os.environ.get(FAULT_ENV, "")
    if want == f"{kind}:{count}" and (os.environ.get("RANK", "0") == os.environ.get("STYLEX_TRAIN_FAULT_RANK", "0")):
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(path: Path, state: dict, count: int) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill at any point leaves
    the previous checkpoint whole."""
    import torch

    from porting.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        _fault("write", count)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def load_checkpoint(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); delete it to start "
                            "over") from None


# ---------------------------------------------------------------------- the run
def check_groups(group: int, batch: int, micro: int, world: int, accumulate: int) -> None:
    """The discriminator's minibatch-stddev groups (``min(group, N)`` images) must be those of
    one process with the whole batch: each micro-batch a multiple of the group, and, when the
    batch is split, at least one group."""
    if not group:
        return
    if micro % min(group, micro):
        raise TrainingError(f"each micro-batch is {micro} images; the discriminator's minibatch standard deviation "
                            f"needs a multiple of its group ({group}) or at most {group}")
    if (world > 1 or accumulate > 1) and micro < min(group, batch):
        raise TrainingError(f"--batch {batch} over {world} process(es) x {accumulate} accumulation step(s) leaves "
                            f"{micro} images per micro-batch, fewer than the discriminator's minibatch-stddev group "
                            f"({group}): the groups would not be one process's; raise --batch to at least "
                            f"{group * world * accumulate}")


def load_models(opts: TrainOptions, label_size: int, log=print):
    """(G, E, D): fresh ones, or a converted release's (``opts.init``)."""
    import models_pt
    from models_pt.stylex import fresh_models

    if opts.init is None:
        m = fresh_models(opts.resolution, label_size, channel_max=opts.channel_max,
                         resnet_channel_max=opts.resnet_channel_max, z_dim=opts.z_dim,
                         mapping_layers=opts.mapping_layers, seed=opts.seed)
        return m["generator"], m["encoder"], m["discriminator"]
    loaded = models_pt.load(opts.init)
    by_kind = {m.kind: m for m in loaded.values()}
    missing = [k for k in ("generator", "encoder", "discriminator") if k not in by_kind]
    if missing:
        raise TrainingError(f"--init {opts.init}: the folder lacks {', '.join(missing)}")
    G, E, D = (by_kind[k] for k in ("generator", "encoder", "discriminator"))
    log(f"fine-tuning {opts.init}: its generator's widths {G.config['channels']} and z_dim {G.config['z_dim']} "
        "are used (--channel-max, --resnet-channel-max, --z-dim and --mapping-layers do not apply)")
    if G.config["resolution"] != opts.resolution:
        raise TrainingError(f"--init {opts.init}: its generator is {G.config['resolution']} px, --resolution is "
                            f"{opts.resolution}")
    if G.config["label_size"] != label_size:
        raise TrainingError(f"--init {opts.init}: its generator takes {G.config['label_size']} classes, the data "
                            f"and classifier have {label_size}")
    return G, E, D


def fingerprint(data, opts: TrainOptions, classifier: Path) -> dict:
    """What a resumed run must share with the one it resumes: the images, the classifier's
    bytes and the options (all but the length, the threads, the device and how often it writes)."""
    import hashlib

    import models_pt

    h = hashlib.sha256()
    for f in data.files:
        h.update(str(f.relative_to(data.root)).encode())
    h.update(memoryview(np.ascontiguousarray(data.pixels)).cast("B"))
    keep = {k: v for k, v in asdict(opts).items() if k not in ("steps", "threads", "sample_every", "checkpoint_every",
                                                                 "device")}
    return {"data_sha256": h.hexdigest(), "classifier_sha256": models_pt.file_sha256(classifier),
            "options": json.loads(json.dumps(keep))}


def train(data_dir, classifier_path, out_dir, opts: TrainOptions, *, resume: bool = False, progress: bool = True,
          log=print) -> dict:
    """Run (or resume) StylEx training; returns what ``train.json`` holds (rank 0; other ranks
    return ``{}``). Under torchrun, the process group is closed at the end."""
    try:
        return _train(data_dir, classifier_path, out_dir, opts, resume, progress, log)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _train(data_dir, classifier_path, out_dir, opts, resume, progress, log) -> dict:
    import torch
    from tqdm import tqdm

    import models_pt
    from models_pt.stylex import Objective, StylExTrainer, draw_inputs, ema_beta_for
    from stylex_port.training.classifier import degenerate, predict
    from stylex_port.training.weights import find_classifier

    rank, world, sync, device = start_processes(opts.device)
    torch.set_num_threads(opts.threads or max(1, (os.cpu_count() or 1) // world))
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(opts.dtype)
    if dtype is None:
        raise TrainingError(f"--dtype {opts.dtype}: float32 or float64")
    if opts.bf16 and device.type != "cuda":
        raise TrainingError("--bf16 is a GPU option (autocast on CUDA); on the CPU train in float32")
    if opts.batch % (world * opts.accumulate):
        raise TrainingError(f"--batch {opts.batch} must split evenly over {world} process(es) x "
                            f"{opts.accumulate} accumulation step(s)")
    micro = opts.batch // (world * opts.accumulate)
    if opts.checkpoint_every < 1 or opts.sample_every < 1 or opts.steps < 0:
        raise TrainingError("--checkpoint-every and --sample-every must be at least 1, --steps at least 0")
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise TrainingError(f"{ckpt_path} exists: --resume continues that run; or choose another --out")
    if resume and not ckpt_path.exists():
        raise TrainingError(f"--resume: {ckpt_path} does not exist (no checkpoint written yet); start without "
                            "--resume")

    data = load_folder(data_dir, opts.resolution, progress=progress and rank == 0)
    train_idx, held_idx = split(data.labels, opts.holdout, opts.seed, data.classes)
    cpath = find_classifier(classifier_path)
    C = models_pt.load(cpath).to(device, dtype).eval().requires_grad_(False)
    if C.config["num_classes"] != len(data.classes):
        raise TrainingError(f"{cpath}: the classifier has {C.config['num_classes']} classes, {data.root} has "
                            f"{len(data.classes)} ({', '.join(data.classes)})")
    G, E, D = load_models(opts, len(data.classes), log)
    check_groups(D.config["mbstd_group"], opts.batch, micro, world, opts.accumulate)
    pool = predict(C, data, train_idx, device=device, dtype=dtype)
    held_probs = predict(C, data, held_idx, device=device, dtype=dtype)
    why = degenerate(held_probs.argmax(1).numpy(), data.labels[held_idx], data.classes)
    if why:
        raise TrainingError(f"{cpath}: on {data.root}'s held-out images {why}")
    G, E, D = (m.to(device, dtype) for m in (G, E, D))
    objective = Objective(**{"ema_beta": ema_beta_for(opts.batch, opts.ema_half_life), **opts.objective})

    def ema_schedule(step: int) -> float:
        return ema_beta_for(opts.batch, opts.ema_half_life, opts.ema_rampup, (step + 1) * opts.batch)

    trainer = StylExTrainer(G, E, D, C, objective, lr=opts.lr, encoder_lr=opts.encoder_lr, betas=tuple(opts.betas),
                            optimizer=opts.optimizer, accumulate=opts.accumulate,
                            autocast=torch.bfloat16 if opts.bf16 else None, sync=sync, ema_schedule=ema_schedule)
    order = DataOrder(len(train_idx), opts.batch, opts.seed)
    rng = torch.Generator().manual_seed(opts.seed + 1)
    history: list[dict] = []
    seconds = 0.0
    writes = 0
    fp = fingerprint(data, opts, cpath)
    if resume:
        state = load_checkpoint(ckpt_path)
        if state.get("fingerprint") != fp:
            theirs = state.get("fingerprint", {})
            diff = sorted(k for k in set(fp["options"]) | set(theirs.get("options", {}))
                          if fp["options"].get(k) != theirs.get("options", {}).get(k))
            what = ("the data differ" if theirs.get("data_sha256") != fp["data_sha256"] else
                    "the classifier differs" if theirs.get("classifier_sha256") != fp["classifier_sha256"] else
                    f"options {diff} differ")
            raise TrainingError(f"{ckpt_path}: written by another run ({what}); resume with the same data and "
                                "options, or choose another --out")
        trainer.load_state_dict(state["trainer"])
        order.load_state_dict(state["order"])
        rng.set_state(state["rng"])
        history, seconds = state["history"], state["seconds"]
        log(f"resuming {ckpt_path} at step {trainer.steps_done} of {opts.steps}")

    def checkpoint():
        nonlocal writes
        if rank == 0:
            writes += 1
            save_checkpoint(ckpt_path, {"trainer": trainer.state_dict(), "order": order.state_dict(),
                                        "rng": rng.get_state(), "history": history, "seconds": seconds,
                                        "fingerprint": fp}, writes)
        if world > 1:
            sync.dist.barrier()

    if world > 1:   # torchrun stops the other ranks with SIGTERM when one fails: say what to do
        def stopped(signum, frame):
            sys.stderr.write(f"\nrank {rank}: stopped (SIGTERM) at step {trainer.steps_done} of {opts.steps}: torchrun "
                             "stops every process when another process of the job failed (its report follows); "
                             f"{ckpt_path} holds the last checkpoint: run the same command with --resume to finish\n")
            sys.stderr.flush()
            os._exit(128 + signum)

        signal.signal(signal.SIGTERM, stopped)
    fixed = sample_inputs(G, data, held_idx, held_probs, len(data.classes), opts.seed)
    bar = tqdm(total=opts.steps, initial=trainer.steps_done, desc="training StylEx", unit="step",
               disable=not progress or rank != 0)
    last = trainer.steps_done
    shown = {}
    while trainer.steps_done < opts.steps:
        t0 = time.perf_counter()
        idx = order.next()
        inp = draw_inputs(rng, data.images(train_idx[idx]), pool[idx], pool, G)
        inp = inp.to(device, dtype).shard(rank, world)
        try:
            terms = trainer.step(inp)
        except RuntimeError as e:
            if world > 1 and lost_peer(e):
                raise TrainingError(f"rank {rank}: lost the other processes at step {trainer.steps_done} "
                                    f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); the last checkpoint "
                                    f"is {ckpt_path}: run the same command with --resume") from None
            raise
        seconds += time.perf_counter() - t0
        history.append(terms)
        step = trainer.steps_done
        bar.update(1)
        shown.update({k: v for k, v in terms.items() if k != "branch"})
        bar.set_postfix_str(f"rec {shown.get('reconstruction image L1', float('nan')):.3f} "
                            f"D {terms['D real'] + terms['D fake']:.2f} G {terms['G adversarial']:.2f} "
                            f"{opts.batch * step / max(seconds, 1e-9):.1f} img/s")
        _fault("step", step)
        if step % opts.checkpoint_every == 0 and step < opts.steps:
            checkpoint()
        if rank == 0 and (step % opts.sample_every == 0 or step == opts.steps):
            write_samples(trainer, fixed, out_dir / "samples" / f"step_{step:06d}.png")
    bar.close()
    if trainer.steps_done > last or not resume:   # decided alike on every rank
        checkpoint()
    if rank != 0:
        return {}
    return finish(trainer, data, train_idx, held_idx, held_probs, cpath, out_dir, opts, history, seconds, world,
                  device, dtype, fixed, log)


# ---------------------------------------------------------------------- outputs
def sample_inputs(G, data, held_idx, held_probs, classes: int, seed: int, rows: int = 8) -> dict:
    """The fixed images and z the sample pictures show at every step."""
    import torch

    pick_pos = interleave(data.labels[held_idx], classes)[:rows]
    pick = held_idx[pick_pos]
    g = torch.Generator().manual_seed(seed + 7)
    z = torch.randn(rows, G.config["z_dim"], generator=g)
    return {"real": data.images(pick), "probs": held_probs[pick_pos], "z": z, "classes": classes}


def interleave(labels: np.ndarray, classes: int) -> np.ndarray:
    """Positions of ``labels`` taking each class in turn (0, 1, 0, 1, ...), for pictures."""
    per = [list(np.flatnonzero(labels == c)) for c in range(classes)]
    out = []
    while any(per):
        for p in per:
            if p:
                out.append(p.pop(0))
    return np.array(out, dtype=int)


def reconstruct(trainer, images, probs, device, dtype, batch: int = 64):
    """The EMA generator's reconstructions ``G(E(x) ++ C(x))`` and the encoder's dlatents, eval mode."""
    import torch

    E, G = trainer.E, trainer.G_ema
    mode = E.training
    E.eval()
    recs, ws = [], []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = images[s:s + batch].to(device, dtype)
            w = torch.cat([E(x), probs[s:s + batch].to(device, dtype)], 1)
            ws.append(w.cpu())
            recs.append(G(w).clamp(-1, 1).cpu())
    E.train(mode)
    return torch.cat(recs), torch.cat(ws)


def write_samples(trainer, fixed: dict, path: Path) -> Path:
    """One PNG: held-out images (row 1) over their reconstructions (row 2), then a row of samples
    per class from the same z (the class's one-hot probabilities through the mapping network)."""
    import torch

    from attfind.pictures import to_pil
    from porting.atomic import atomic_path

    device = next(trainer.G.parameters()).device
    dtype = next(trainer.G.parameters()).dtype
    recs, _ = reconstruct(trainer, fixed["real"], fixed["probs"], device, dtype)
    rows = [fixed["real"], recs]
    with torch.no_grad():
        for c in range(fixed["classes"]):
            onehot = torch.zeros(len(fixed["z"]), fixed["classes"])
            onehot[:, c] = 1
            rows.append(trainer.G_ema.sample(fixed["z"].to(device, dtype), onehot.to(device, dtype)).clamp(-1, 1).cpu())
    from PIL import Image

    n, size = len(fixed["real"]), max(64, fixed["real"].shape[-1])
    sheet = Image.new("RGB", (n * size, len(rows) * size), "white")
    for r, row in enumerate(rows):
        for i, img in enumerate(row[:n]):
            sheet.paste(to_pil(img.float().numpy(), size), (i * size, r * size))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def plot_losses(history: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from porting.atomic import atomic_path

    names = sorted({k for h in history for k in h if k != "branch"})
    adversarial = [n for n in names if n.startswith(("D ", "G ", "R1", "path"))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, group, title in ((axes[0], adversarial, "adversarial and regularisers"),
                             (axes[1], [n for n in names if n not in adversarial], "StylEx reconstruction and classifier terms")):
        for name in group:
            steps = [i for i, h in enumerate(history) if name in h]
            values = np.array([history[i][name] for i in steps])
            k = max(1, len(values) // 50)
            smooth = np.convolve(values, np.ones(k) / k, mode="valid") if len(values) >= k else values
            ax.plot(steps[k - 1:], smooth, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def finish(trainer, data, train_idx, held_idx, held_probs, cpath, out_dir, opts, history, seconds, world, device,
           dtype, fixed, log) -> dict:
    import torch

    from porting.atomic import write_json
    from porting.dlatents import save_dlatents
    from stylex_port.training.weights import write_models

    images = data.images(held_idx)
    recs, ws = reconstruct(trainer, images, held_probs, device, dtype)
    C = trainer.C
    with torch.no_grad():
        rec_probs = torch.cat([torch.softmax(C(recs[s:s + 64].to(device, dtype)), 1).cpu()
                               for s in range(0, len(recs), 64)])
    agreement = float((rec_probs.argmax(1) == held_probs.argmax(1)).double().mean())
    l1 = float((recs - images.to(recs.dtype)).abs().mean())
    info = {"data": str(data.root), "classes": data.classes, "classifier": str(cpath),
            "train_images": len(train_idx), "held_out_images": len(held_idx), "steps": trainer.steps_done,
            "processes": world, "device": str(device), "seconds": round(seconds, 1),
            "seconds_per_1000_steps": round(1000 * seconds / max(1, len(history)), 1),
            "held_out": {"reconstruction_l1": l1, "classifier_agreement": agreement},
            "objective": {k: v for k, v in trainer.state_dict()["objective"].items() if k != "ema_beta"},
            "ema": {"half_life_images": opts.ema_half_life, "rampup": opts.ema_rampup,
                    "beta_at_last_step": trainer.ema_schedule(trainer.steps_done - 1)},
            "lpips": "off: its network's weights are not available offline",
            "options": asdict(opts)}
    trained = {"by": "cli.py train", "steps": trainer.steps_done, "data": str(data.root), "classes": data.classes}
    write_models(out_dir / "weights", {"generator": trainer.G_ema, "encoder": trainer.E, "discriminator": trainer.D},
                 trained, copy_from={"classifier": cpath})
    names = [str(data.files[i].relative_to(data.root)) for i in held_idx]
    save_dlatents(out_dir / "dlatents.pkl", [(n, w.float().numpy()) for n, w in zip(names, ws)])
    (out_dir / "losses.json").write_text(json.dumps(history))
    plot_losses(history, out_dir / "losses.png")
    write_json(out_dir / "train.json", info)
    log(f"{trainer.steps_done} steps; held-out reconstruction L1 {l1:.4f}, classifier agrees on {agreement:.0%} of "
        f"{len(held_idx)} held-out reconstructions; wrote {out_dir / 'weights'}, {out_dir / 'dlatents.pkl'}, "
        f"{out_dir / 'samples'}")
    return info
