"""The PyTorch AttFind backend on a GPU: parity with the TF effects and speed (PyTorch only).

    python bench/attfind_cuda.py --weights weights/reference --dlatents reference/dlatents.pkl \\
        [--tfrecord reference/examples_1.tfrecord] [--device cuda]

1. On the converted reference weights: CUDA effects against CPU effects (same code) and, if the
   release's examples_1.tfrecord is given, against TF's; the AttFind ranking of both.
2. Evaluations per second and one image's full sweep at the reference size, TF32 off.
3. The release's 256 px configuration (``attfind_flops.release_models``: widths up to 512,
   MobileNetV1 1.0, random weights, which do not change the work) on ``--images-256`` images,
   for each of ``--batch-sizes-256``: the float32 sweep's evaluations/s and % of the device's
   peaks (FLOPs counted by ``attfind_flops``); the ``--precision`` sweep (default TF32; on a CPU
   emulated, for checking, not speed) alone and certified (``attfind.certify``: every AttFind
   decision re-checked in float32, the probe and the recomputation counted in its time); whether
   the certified ranking equals the float32 sweep's; the peak memory. On CUDA also the float32
   effects against the CPU's on the first coordinate of every style layer. Target: >= 800
   evaluations/s (a release in under an hour) with the ranking equal to float32's.

On 2 CPU cores a full 256 px image takes hours; ``--coordinates-256 2 --images-256 2
--batch-sizes-256 8`` sweeps two coordinates per style layer (about 15 minutes).

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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attfind.effects_pt import PRECISIONS  # noqa: E402


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
    ap.add_argument("--images-256", type=int, default=4, help="Images swept per batch size at 256 px (0: skip).")
    ap.add_argument("--batch-sizes-256", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--coordinates-256", type=int, default=0,
                    help="Coordinates per style layer swept at 256 px, spread over it (0: all; on 2 CPU cores a "
                         "full image takes hours: try 2).")
    ap.add_argument("--precision", choices=PRECISIONS, default="tf32",
                    help="The reduced precision certified against float32 at 256 px (float32: none).")
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

    if args.images_256:
        release_256(args)


def timed(fn, device):
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def release_256(args) -> None:
    """Part 3: the release's 256 px configuration, float32 against ``--precision`` certified
    (``attfind.certify``), per batch size: rates, % of peak, peak memory, the ranking check."""
    import numpy as np
    import torch

    import attfind_flops as af
    from attfind import certify
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects

    device = torch.device(args.device)
    g, clf = af.release_models(256)
    w = np.random.default_rng(0).normal(size=(args.images_256, g.config["w_dim"])).astype(np.float32)
    space = g.space
    per_layer = args.coordinates_256 or max(space.sizes)
    sample = [space.coordinate(layer, int(c)) for layer, size in enumerate(space.sizes)
              for c in np.unique(np.linspace(0, size - 1, min(per_layer, size)).round().astype(int))]
    counts = [sum(space.split(j)[0] == layer for j in sample) for layer in range(len(space.sizes))]
    costs = af.layer_costs(g, clf, torch.as_tensor(w[:1]), batch=1)
    with torch.no_grad():
        conv, rgb = g.style_vectors(torch.as_tensor(w[:1]))
        whole = af.flops_of(lambda: clf(g.synthesis(conv, rgb)))
    image_flops = af.sweep_flops(costs, counts, whole)
    peaks = af.device_peaks(device, torch.get_num_threads())
    evaluations = 2 * len(sample) * len(w)
    print(f"3. 256 px release configuration ({len(space)} coordinates; {len(sample)} of them swept"
          f"{'' if len(sample) == len(space) else f', {per_layer} per style layer'}) on {len(w)} images: "
          f"{evaluations} evaluations, {image_flops / 1e9:.1f} GFLOP per image")

    def percent(flops_per_s: float) -> str:
        return ", ".join(f"{100 * flops_per_s / v:.1f}% of the {k} peak" for k, (v, _) in peaks.items())

    for batch in args.batch_sizes_256:
        torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
        f32 = TorchEffects(g, clf, batch_size=batch, device=device)
        lo, hi = sel.style_ranges(f32.styles(w))
        f32.image(w[0], lo, hi, coordinates=sample[:2])                          # warm-up
        full, t32 = timed(lambda: [f32.image(x, lo, hi, coordinates=sample) for x in w], device)
        base = np.stack([b for b, _ in full])
        e32 = np.stack([e[:, sample] for _, e in full])
        truth = sel.attfind(e32, base)
        if np.abs(e32).max() < 1e-3 or len(set(sel.split_by_class(base))) < 2:
            raise SystemExit(f"degenerate 256 px inputs: max |effect| {np.abs(e32).max():.1e}, classes "
                             f"{sorted(set(sel.split_by_class(base).tolist()))}; a ranking check on them proves nothing")
        line = (f"   batch {batch}: float32 {evaluations / t32:,.2f} evaluations/s "
                f"({percent(len(w) * image_flops / t32)})")
        if args.precision != "float32":
            reduced = TorchEffects(g, clf, batch_size=batch, device=device, precision=args.precision)
            reduced.image(w[0], lo, hi, coordinates=sample[:2])                  # warm-up
            err, t_probe = timed(lambda: certify.probe_error(reduced, f32, w, lo, hi, per_layer=2, images=2), device)
            low, t_low = timed(lambda: np.stack([reduced.image(x, lo, hi, coordinates=sample)[1][:, sample]
                                                 for x in w]), device)
            exact = certify.recompute_with(f32, w, lo, hi)
            (result, cert, _), t_cert = timed(lambda: certify.certified_attfind(
                low, base, err[sample], lambda cols: exact([sample[i] for i in cols])), device)
            total = t_probe + t_low + t_cert
            line += (f"; {args.precision} {evaluations / t_low:,.2f}/s alone ({percent(len(w) * image_flops / t_low)}), "
                     f"certified {evaluations / total:,.2f}/s ({t32 / total:.2f}x float32; without the error "
                     f"probe, which a full sweep amortizes, {evaluations / (total - t_probe):,.2f}/s, "
                     f"{t32 / (total - t_probe):.2f}x; {cert.fraction:.1%} of the "
                     f"coordinates recomputed in float32, {cert.rounds} rounds, bound raised {cert.bound_raised}x, "
                     f"max |{args.precision} - float32| {np.abs(low - e32).max():.1e}); "
                     f"ranking equal to the float32 sweep's: {result.ranking == truth.ranking} "
                     f"({len(truth.ranking)} attributes)")
        print(line + f"; peak memory {af.peak_memory_gib(device):.2f} GiB "
              f"({'GPU, allocated' if device.type == 'cuda' else 'resident, whole process'})", flush=True)
        if device.type == "cuda" and batch == args.batch_sizes_256[0]:
            first = [space.coordinate(layer, 0) for layer in range(len(space.sizes))]
            on_cpu = TorchEffects(g, clf, batch_size=batch).image(w[0], lo, hi, coordinates=first)[1][:, first]
            print(f"   float32 effects, CUDA vs CPU ({len(first)} coordinates): max abs diff "
                  f"{np.abs(full[0][1][:, first] - on_cpu).max():.1e}")
        del f32
        torch.cuda.empty_cache() if device.type == "cuda" else None
    for name, (_, how) in peaks.items():
        print(f"   peak {name}: {how}")


if __name__ == "__main__":
    main()
