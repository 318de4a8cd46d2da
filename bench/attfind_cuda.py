"""The PyTorch AttFind backend on a GPU: parity with the TF effects and speed (PyTorch only).

    python bench/attfind_cuda.py --weights weights/reference --dlatents reference/dlatents.pkl \\
        [--tfrecord reference/examples_1.tfrecord] [--device cuda]

1. On the converted reference weights: CUDA effects against CPU effects (same code) and, if the
   release's examples_1.tfrecord is given, against TF's; the AttFind ranking of both.
2. Evaluations per second and one image's full sweep on CUDA, at the reference size and at the
   release's 256 px configuration (generator widths up to 512, MobileNetV1 1.0; weights drawn at
   random, which does not change the work), with TF32 off as TorchEffects sets it; at 256 px for
   each of ``--batch-sizes-256``, with the peak GPU memory and the effects against the CPU on two
   coordinates of every style layer. Issue 12's target: >= 800 evaluations/s (a release < 1 h).

One command on a GPU machine, from a fresh clone (about 10 minutes with the 64 px reference):

    make install && .venv/bin/python cli.py make-reference --out reference && \\
    .venv/bin/python cli.py convert --tf-ckpt reference --out weights/reference && \\
    .venv/bin/python bench/attfind_cuda.py --weights weights/reference --dlatents reference/dlatents.pkl \\
        --tfrecord reference/examples_1.tfrecord
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sweep_rate(backend, dlatents, lo, hi, images: int) -> tuple[float, float]:
    import torch

    backend.image(dlatents[0], lo, hi, coordinates=range(8))       # warm-up
    torch.cuda.synchronize() if backend.device.type == "cuda" else None
    t = time.perf_counter()
    for i in range(images):
        backend.image(dlatents[i % len(dlatents)], lo, hi)
    seconds = (time.perf_counter() - t) / images
    return 2 * backend.num_styles / seconds, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--dlatents", type=Path, required=True)
    ap.add_argument("--tfrecord", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--images-256", type=int, default=1, help="Images swept per batch size at 256 px (0: skip).")
    ap.add_argument("--batch-sizes-256", type=int, nargs="+", default=[64, 128, 256])
    args = ap.parse_args()

    import numpy as np
    import torch

    import models_pt
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects
    from models_pt.classifier import MobileNetV1
    from models_pt.generator import Generator
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
    models = models_pt.load(args.weights)
    dl = dlatent_matrix(load_dlatents(args.dlatents))
    cpu = TorchEffects(models["generator"], models["mobilenet"], batch_size=args.batch_size)
    styles = cpu.styles(dl)
    lo, hi = sel.style_ranges(styles)
    gpu = TorchEffects(models_pt.load(args.weights)["generator"], models_pt.load(args.weights)["mobilenet"],
                      batch_size=args.batch_size, device=args.device)
    g_out = [gpu.image(w, lo, hi) for w in dl]
    base = np.stack([b for b, _ in g_out])
    effects = np.stack([e for _, e in g_out])
    c_base, c_eff = cpu.image(dl[0], lo, hi)
    print(f"1. {len(dl)} images x {gpu.num_styles} coordinates at {gpu.generator.config['resolution']} px")
    print(f"   CUDA vs CPU effects, image 0: max abs diff {np.abs(effects[0] - c_eff).max():.2e}, "
          f"base logits {np.abs(base[0] - c_base).max():.2e}")
    if args.tfrecord:
        from attfind.tfrecord import read_examples

        tb, td, te = read_examples(args.tfrecord)
        assert np.array_equal(td, dl), "the tfrecord's dlatents are not these"
        print(f"   CUDA vs TF (tfrecord) effects: max abs diff {np.abs(effects - te).max():.2e} (bar 1e-4), "
              f"base logits {np.abs(base - tb).max():.2e}")
        r_tf, r_gpu = sel.attfind(te, tb), sel.attfind(effects, base)
        print(f"   ranking identical: {r_tf.ranking == r_gpu.ranking}; first: TF {r_tf.ranking[0]}, CUDA {r_gpu.ranking[0]}")

    rate, seconds = sweep_rate(gpu, dl, lo, hi, images=min(8, len(dl)))
    print(f"2. {gpu.generator.config['resolution']} px: {rate:,.0f} evaluations/s, one image's full sweep {seconds:.2f} s")

    if not args.images_256:
        return
    torch.manual_seed(0)
    config = dict(models["generator"].config, resolution=256, channels=[512, 512, 512, 512, 512, 256, 128])
    g256 = Generator(**config)
    with torch.no_grad():
        for name, p in g256.named_parameters():
            if name.endswith("bias") and "styles" in name:
                p.zero_()                                   # styles near 1, as trained ones are
            elif "noise_strength" in name:
                p.fill_(0.1)
    clf256 = MobileNetV1(**models["mobilenet"].config).eval()
    w256 = np.random.default_rng(0).normal(size=(4, config["w_dim"])).astype(np.float32)
    cpu256 = TorchEffects(g256, clf256, batch_size=16)
    lo256, hi256 = sel.style_ranges(cpu256.styles(w256))
    # effects on CUDA against the CPU, on a sample of coordinates of every style layer
    sample = [cpu256.space.coordinate(layer, c) for layer in range(len(cpu256.space.sizes)) for c in (0, 1)]
    _, c_eff = cpu256.image(w256[0], lo256, hi256, coordinates=sample)
    for batch in args.batch_sizes_256:
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
        big = TorchEffects(g256, clf256, batch_size=batch, device=args.device)
        _, g_eff = big.image(w256[0], lo256, hi256, coordinates=sample)
        diff = np.abs(g_eff[:, sample] - c_eff[:, sample]).max()
        rate, seconds = sweep_rate(big, w256, lo256, hi256, images=args.images_256)
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        print(f"   256 px release configuration ({big.num_styles} coordinates), batch {batch}: {rate:,.0f} "
              f"evaluations/s, one image's full sweep {seconds:.1f} s, a release of 250 images "
              f"{250 * seconds / 3600:.2f} h on this GPU; peak GPU memory {peak:.1f} GiB; effects vs CPU "
              f"({len(sample)} coordinates) max abs diff {diff:.1e}")
        del big
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

if __name__ == "__main__":
    main()
