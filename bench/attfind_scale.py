"""AttFind at scale: the effects on Ray workers against the single-process path, Ray's own
overhead, and what a whole 256 px release sweep costs on 1, 8 and 64 GPUs. PyTorch only.

    .venv/bin/python bench/attfind_scale.py --weights weights/reference --dlatents reference/dlatents.pkl
    .venv/bin/python bench/attfind_scale.py ... --cpu-256        # also the 256 px rate per CPU core

1. Evaluations/s of the effects of ``--images`` images (no cache): the single-process path
   (``attfind.cache.local_source``, torch on every core), then 1 and 2 Ray workers on a local
   cluster started for the run (``attfind.distributed.sweep``; each worker cores // N threads).
   For Ray, the wall time with and without the cluster's start (workers loading the models);
   the effects must be bit-identical to the single-process ones.
2. Ray's own overhead per unit of work (a unit is one image, so per image too): the same driver
   loop and the same messages (the dlatent and the style ranges in, base logits and a [2, S, 2]
   effects array out, one progress message per batch) with workers that compute nothing.
3. The projected time of a full 256 px release sweep (250 images x 5,760 coordinates x 2 on the
   release's configuration) on 1, 8 and 64 GPUs, one worker per GPU, from a per-GPU rate
   (``--gpu-rate``; default the H200 figure measured by bench/attfind_cuda.py for the readable
   generator form, which the command runs, and the 800/s target), the overhead measured in 2 and the cluster start measured in 1 plus a CUDA start.
4. ``--cpu-256``: evaluations/s of one CPU core at 256 px (the release's configuration, random
   weights, which does not change the work), on a sample of coordinates of every style layer
   weighted by the layer's size (each sampled call's base image taken off; its prefix, which a
   sweep renders once per layer, left in: a slight overestimate of the time); from it, a
   CPU-only user's time per image and per release.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RELEASE_IMAGES, RELEASE_COORDINATES = 250, 5760


class NullBackend:
    """TorchEffects' interface, computing nothing: what is left of a unit is Ray's own work."""

    def __init__(self, num_styles: int, batches: int):
        self.num_styles, self.batches = num_styles, batches

    def image(self, dlatent, style_min, style_max, shift_size=1.0, coordinates=None, on_progress=None, style=None):
        import numpy as np

        for _ in range(self.batches):
            if on_progress is not None:
                on_progress(self.num_styles / self.batches)
        return np.zeros(2, np.float32), np.zeros((2, self.num_styles, 2), np.float32)


def null_worker_class(num_styles: int, batches: int):
    from attfind.distributed import EffectsWorker

    class NullWorker(EffectsWorker):
        def setup(self, weights, expected, device, batch_size, threads):
            self.backend = NullBackend(num_styles, batches)
            return {"pid": os.getpid(), "node": "", "device": "none", "threads": 0}
    return NullWorker


def ray_run(weights, expected, dlatents, lo, hi, workers: int, batch_size: int, worker_class=None):
    import numpy as np

    from attfind import distributed

    opts = distributed.ClusterOptions(workers=workers, worker_class=worker_class)
    report = distributed.SweepReport()
    t = time.perf_counter()
    out = {}
    for i, b, e in distributed.sweep(weights, expected, dlatents, list(range(len(dlatents))), lo, hi, 1.0,
                                     batch_size, opts, report, log=lambda m: None):
        out[i] = (b, e)
    wall = time.perf_counter() - t
    base = np.stack([out[i][0] for i in range(len(dlatents))])
    eff = np.stack([out[i][1] for i in range(len(dlatents))])
    return wall, report, base, eff


def cpu_256_rate(seconds_per_layer: float) -> tuple[float, list]:
    import numpy as np
    import torch

    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects
    from models_pt.classifier import MobileNetV1
    from models_pt.generator import Generator

    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = Generator(resolution=256, channels=[512, 512, 512, 512, 512, 256, 128], z_dim=512, w_dim=514,
                  label_size=2, mapping_layers=8, mapping_lr_mul=0.01)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias") and "styles" in name:
                p.zero_()
    clf = MobileNetV1(alpha=1.0, depth_multiplier=1, num_classes=2, bn_epsilon=1e-3,
                      strided_padding="explicit").eval()
    backend = TorchEffects(g, clf, batch_size=8)
    w = np.random.default_rng(0).normal(size=(4, 514)).astype(np.float32)
    lo, hi = sel.style_ranges(backend.styles(w))
    t = time.perf_counter()
    backend.image(w[0], lo, hi, coordinates=[])           # the base image alone, once per image in a sweep
    t_base = time.perf_counter() - t
    rows, weighted = [], 0.0
    for layer, size in enumerate(backend.space.sizes):
        first = backend.space.coordinate(layer, 0)
        t = time.perf_counter()
        n = calls = 0
        while n == 0 or time.perf_counter() - t < seconds_per_layer:   # 4 evaluations per call
            backend.image(w[0], lo, hi, coordinates=[first + n % size, first + (n + 1) % size])
            n, calls = n + 2, calls + 1
        # each call also renders the base image and the layer's prefix, which a sweep does once
        # per image and once per layer: the base is taken off, the prefix (at most a base) is not
        per_eval = (time.perf_counter() - t - calls * t_base) / (2 * n)
        rows.append((layer, size, per_eval))
        weighted += 2 * size * per_eval
    return 2 * backend.num_styles / weighted, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="A converted release folder (64 px reference).")
    ap.add_argument("--dlatents", type=Path, required=True)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--null-units", type=int, default=400, help="Units of the overhead measurement.")
    ap.add_argument("--gpu-rate", type=float, nargs="+", default=[187.5, 800.0],
                    help="Evaluations/s of one GPU at 256 px for the projection.")
    ap.add_argument("--cuda-start", type=float, default=30.0,
                    help="Seconds a GPU worker needs to start CUDA and load the 256 px models (assumed).")
    ap.add_argument("--cpu-256", action="store_true")
    ap.add_argument("--cpu-256-seconds", type=float, default=8.0, help="Seconds per style layer.")
    args = ap.parse_args()

    import numpy as np
    import torch

    import models_pt
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects
    from attfind.cache import local_source
    from attfind.release import open_release
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    cores = os.cpu_count()
    print(f"torch {torch.__version__}, {cores} cores; {args.weights}")
    rel = open_release(args.weights)
    gen, clf, entries = rel.generator, rel.classifier, rel.entries
    dl = dlatent_matrix(load_dlatents(args.dlatents))[:args.images]
    torch.set_num_threads(cores)
    backend = TorchEffects(gen, clf, batch_size=args.batch_size)
    lo, hi = sel.style_ranges(backend.styles(dl))
    s = backend.num_styles
    evals = 2 * s * len(dl)
    print(f"1. {len(dl)} images x {s} coordinates x 2 = {evals} evaluations, batch {args.batch_size}")

    def single_run(threads):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        got = dict((i, (b, e)) for i, b, e in local_source(backend, dl, lo, hi)(list(range(len(dl))), lambda n: None))
        seconds = time.perf_counter() - t
        torch.set_num_threads(cores)
        return (seconds, np.stack([got[i][0] for i in range(len(dl))]), np.stack([got[i][1] for i in range(len(dl))]))

    singles = {cores: single_run(cores)}
    t_single, base1, eff1 = singles[cores]
    print(f"   single process ({cores} threads): {t_single:.1f} s, {evals / t_single:,.0f} evaluations/s")
    expected = {stem: (entries[stem]["weights"], entries[stem].get("weights_sha256")) for stem in ("generator", "mobilenet")}
    ranking1 = sel.attfind(eff1, base1).ranking
    for workers in (1, 2):
        wall, report, base, eff = ray_run(args.weights, expected, dl, lo, hi, workers, args.batch_size)
        threads = report.threads_per_worker
        if threads not in singles:
            singles[threads] = single_run(threads)
            print(f"   single process ({threads} thread{'s' if threads > 1 else ''}): {singles[threads][0]:.1f} s, "
                  f"{evals / singles[threads][0]:,.0f} evaluations/s")
        same = np.array_equal(eff, singles[threads][2]) and np.array_equal(base, singles[threads][1])
        work = wall - report.startup_seconds - report.stop_seconds
        print(f"   Ray, {workers} worker{'s' if workers > 1 else ''} x {threads} threads: "
              f"{wall:.1f} s in all ({evals / wall:,.0f} evaluations/s = {t_single / wall:.2f}x the single process "
              f"on {cores} threads), of which {report.startup_seconds:.1f} s cluster start and "
              f"{report.stop_seconds:.1f} s stop; between them {evals / work:,.0f} evaluations/s = "
              f"{t_single / work:.2f}x; the workers computed {report.compute_seconds / workers / work:.0%} of that time")
        print(f"      effects bit-identical to the single process on {threads} thread{'s' if threads > 1 else ''}: "
              f"{same}; against {cores} threads: max abs diff {np.abs(eff - eff1).max():.1e}, ranking identical: "
              f"{sel.attfind(eff, base).ranking == ranking1}")
    startup = report.startup_seconds

    print(f"2. Ray's overhead: {args.null_units} units that compute nothing ({s} coordinates, "
          f"{math.ceil(2 * s / args.batch_size)} progress messages each)")
    dl_null = np.repeat(dl[:1], args.null_units, axis=0)
    overhead = {}
    for workers in (1, 2):
        cls = null_worker_class(s, math.ceil(2 * s / args.batch_size))
        wall, report, _, _ = ray_run(args.weights, expected, dl_null, lo, hi, workers, args.batch_size, cls)
        work = wall - report.startup_seconds - report.stop_seconds
        overhead[workers] = work * workers / args.null_units
        print(f"   {workers} worker{'s' if workers > 1 else ''}: {1e3 * work / args.null_units:.2f} ms per unit "
              f"of driver wall time, {1e3 * overhead[workers]:.2f} ms of worker time per unit "
              f"(= per image), cluster start {report.startup_seconds:.1f} s")
    per_unit = max(overhead.values())

    print(f"3. A whole 256 px release: {RELEASE_IMAGES} images x {RELEASE_COORDINATES} x 2 = "
          f"{RELEASE_IMAGES * RELEASE_COORDINATES * 2:,} evaluations, one worker per GPU, one image per unit")
    print(f"   assumptions: every image costs the same; GPUs do not slow each other; Ray's overhead "
          f"{1e3 * per_unit:.1f} ms per unit (measured in 2); cluster start {startup:.0f} s (measured in 1) "
          f"+ {args.cuda_start:.0f} s for CUDA and the 256 px models (assumed); the driver's own work "
          f"(style vectors, selection) negligible")
    print(f"   {'GPU rate':>10}  {'per image':>10}  " + "  ".join(f"{g:>3} GPUs" for g in (1, 8, 64)))
    for rate in args.gpu_rate:
        t_img = 2 * RELEASE_COORDINATES / rate + per_unit
        cells = []
        for gpus in (1, 8, 64):
            total = startup + args.cuda_start + math.ceil(RELEASE_IMAGES / gpus) * t_img
            cells.append(f"{total / 3600:5.2f} h" if total >= 3600 else f"{total / 60:5.1f} min")
        print(f"   {rate:>8.0f}/s  {t_img:>8.1f} s  " + "  ".join(f"{c:>8}" for c in cells))

    if args.cpu_256:
        rate, rows = cpu_256_rate(args.cpu_256_seconds)
        print(f"4. 256 px on one CPU core (release configuration, {sum(r[1] for r in rows)} coordinates): "
              f"{rate:.3f} evaluations/s")
        for layer, size, per in rows:
            print(f"   style layer {layer:>2} ({size:>3} channels): {per:.2f} s per evaluation")
        per_image = 2 * RELEASE_COORDINATES / rate
        print(f"   per image {per_image / 3600:.1f} core-hours; per release {RELEASE_IMAGES * per_image / 3600:,.0f} "
              f"core-hours = {RELEASE_IMAGES * per_image / 86400 / cores:.0f} days on this {cores}-core machine, "
              f"{RELEASE_IMAGES * per_image / 3600 / 64:.0f} h on 64 cores (one worker per core)")
    torch.set_num_threads(cores)


if __name__ == "__main__":
    main()
