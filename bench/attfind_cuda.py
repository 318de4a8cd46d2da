"""The PyTorch AttFind backend on a GPU: parity with the TF effects and speed (PyTorch only).

    python bench/attfind_cuda.py --weights weights/reference --dlatents reference/dlatents.pkl \\
        [--tfrecord reference/examples_1.tfrecord] [--device cuda]

1. On the converted reference weights: CUDA effects against CPU effects (same code) and, if the
   release's examples_1.tfrecord is given, against TF's; the AttFind ranking of both.
2. Evaluations per second and one image's full sweep at the reference size, TF32 off.
3. The release's 256 px configuration (``attfind_flops.release_models``: widths up to 512,
   MobileNetV1 1.0, random weights, which do not change the work) on ``--images-256`` images,
   for each of ``--batch-sizes-256`` and each generator form of ``--forms`` (readable; fused and
   composite, ``models_pt.inference.fuse_generator``; delta, ``attfind.delta``: the readable
   modules, each effect computed as the change carried from the edited layer on, certified with
   a bound ``a + b |effect|``): the float32 sweep's evaluations/s and %
   of the device's peaks (FLOPs counted by ``attfind_flops``) and its ranking against the first
   form's; each ``--precision`` sweep (default TF32; on a CPU emulated, for checking, not speed)
   alone and certified (``attfind.certify``: every AttFind decision re-checked in float32, the
   probe and the recomputation counted in its time), or alone only (``--no-certify``); the peak
   memory. On CUDA also the float32 effects against the CPU's on the first coordinate of every
   style layer, and with ``--profile`` the kernels of one batch by time. Target: >= 800
   evaluations/s (a release in under an hour) with the ranking equal to float32's; measured on
   an H200 in docs/benchmarks.md.

``--coordinate-stride 8`` sweeps every 8th coordinate of each style layer (the full sweep's mix
of layers, so the rate is a full sweep's). On 2 CPU cores a full 256 px image takes hours;
``--coordinates-256 2 --images-256 2 --batch-sizes-256 8`` sweeps two coordinates per style
layer (about 15 minutes).

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attfind.effects_pt import PRECISIONS  # noqa: E402

FORMS = ("readable", "fused", "composite", "delta")
"""The generator's forms at 256 px: the readable module, ``fuse_generator``'s, that with
``composite_up`` (``TorchEffects(fuse=...)``: False, True, "composite"), and the delta path
(``TorchEffects(form="delta")``, readable modules)."""


def backend_args(form: str) -> dict:
    """``TorchEffects``' arguments for a form of ``FORMS``."""
    if form == "delta":
        return {"form": "delta"}
    return {"fuse": {"readable": False, "fused": True, "composite": "composite"}[form]}


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
    ap.add_argument("--coordinate-stride", type=int, default=1,
                    help="Sweep every N-th coordinate of each style layer at 256 px: the release's mix of "
                         "layers, so the rate is a full sweep's (overrides --coordinates-256).")
    ap.add_argument("--precision", choices=PRECISIONS, nargs="+", default=["tf32"],
                    help="The reduced precisions certified against float32 at 256 px (float32: none).")
    ap.add_argument("--forms", choices=FORMS, nargs="+", default=list(FORMS[:3]),
                    help="The generator forms swept at 256 px (models_pt.inference.fuse_generator; "
                         "composite: also the up-sampling conv and its FIR as one transposed conv); the "
                         "first one's float32 ranking is the one every other is checked against.")
    ap.add_argument("--no-certify", action="store_true",
                    help="Time each --precision sweep alone (its error and its uncertified ranking), no certificate.")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="Let cuDNN time its algorithms for each new shape and keep the fastest.")
    ap.add_argument("--profile", action="store_true",
                    help="On CUDA, print the kernels of one batch of first-layer edits by time.")
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
        fused = TorchEffects(models["generator"], models["mobilenet"], batch_size=args.batch_size,
                             device=args.device, fuse=True)
        f_out = [fused.image(w, lo, hi) for w in dl]
        f_eff = np.stack([e for _, e in f_out])
        print(f"   fused generator form vs TF: max abs diff {np.abs(f_eff - te).max():.2e} (bar 1e-4); ranking "
              f"identical: {sel.attfind(f_eff, np.stack([b for b, _ in f_out])).ranking == r_tf.ranking}")

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


def sample_coordinates(space, per_layer: int, stride: int) -> list[int]:
    """The 256 px sweep's coordinates: every ``stride``-th of each style layer (the release's mix
    of layers, so the rate is the full sweep's), or ``per_layer`` spread over each layer (0: all)."""
    if stride > 1:
        return [space.coordinate(layer, c) for layer, size in enumerate(space.sizes) for c in range(0, size, stride)]
    per = per_layer or max(space.sizes)
    return [space.coordinate(layer, int(c)) for layer, size in enumerate(space.sizes)
            for c in np.unique(np.linspace(0, size - 1, min(per, size)).round().astype(int))]


def profile_batch(backend, w, lo, hi, batch: int) -> None:
    """The CUDA kernels of one batch of first-layer edits (the whole generator and classifier),
    by time: where a sweep's time goes."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cols = [backend.space.coordinate(0, c) for c in range(min(batch // 2, backend.space.sizes[0]))]
    backend.image(w, lo, hi, coordinates=cols)                                  # warm-up
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        backend.image(w, lo, hi, coordinates=cols)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if getattr(e, "self_device_time_total", 0) > 0]
    total = sum(e.self_device_time_total for e in events)
    print(f"   profile, {backend.precision}, {backend.fused or ('delta' if backend.form == 'delta' else 'readable')}: "
          f"{2 * len(cols)} edits "
          f"of layer 0, {total / 1e3:.1f} ms of kernels")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:10]:
        print(f"     {100 * e.self_device_time_total / total:5.1f}%  {e.count:5d} x  {e.key[:90]}")


def release_256(args) -> None:
    """Part 3: the release's 256 px configuration, per batch size and generator form of
    ``--forms``: the float32 sweep, then each ``--precision`` alone and certified
    (``attfind.certify``) or alone only, with rates, % of peak, the ranking against the first
    form's float32 sweep's, and the peak memory over the batch size's forms."""
    import torch

    import attfind_flops as af

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    g, clf = af.release_models(256)
    w = np.random.default_rng(0).normal(size=(args.images_256, g.config["w_dim"])).astype(np.float32)
    space = g.space
    sample = sample_coordinates(space, args.coordinates_256, args.coordinate_stride)
    counts = [sum(space.split(j)[0] == layer for j in sample) for layer in range(len(space.sizes))]
    costs = af.layer_costs(g, clf, torch.as_tensor(w[:1]), batch=1)
    with torch.no_grad():
        conv, rgb = g.style_vectors(torch.as_tensor(w[:1]))
        whole = af.flops_of(lambda: clf(g.synthesis(conv, rgb)))
    image_flops = af.sweep_flops(costs, counts, whole)
    peaks = af.device_peaks(device, torch.get_num_threads())
    evaluations = 2 * len(sample) * len(w)
    print(f"3. 256 px release configuration ({len(space)} coordinates; {len(sample)} of them swept, per layer "
          f"{counts}) on {len(w)} images: {evaluations} evaluations, {image_flops / 1e9:.1f} GFLOP per image, "
          f"{image_flops / (2 * len(sample)) / 1e9:.1f} per evaluation", flush=True)

    def percent(seconds: float) -> str:
        flops_per_s = len(w) * image_flops / seconds
        return ", ".join(f"{100 * flops_per_s / v:.1f}% of the {k} peak" for k, (v, _) in peaks.items())

    for batch in args.batch_sizes_256:
        torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
        first: dict = {}          # the first form that ran: its ranking, effects and seconds
        for form in args.forms:
            try:
                sweep_form(args, g, clf, w, sample, batch, device, form, first, evaluations, percent)
            except torch.cuda.OutOfMemoryError as e:      # the form's tensors go with the traceback
                print(f"   batch {batch}, {form}: out of GPU memory ({str(e).splitlines()[0][:120]})", flush=True)
            torch.cuda.empty_cache() if device.type == "cuda" else None
        print(f"   batch {batch}: peak memory over its forms {af.peak_memory_gib(device):.2f} GiB "
              f"({'GPU, allocated' if device.type == 'cuda' else 'resident, whole process'})", flush=True)
    for name, (_, how) in peaks.items():
        print(f"   peak {name}: {how}")


def sweep_form(args, g, clf, w, sample, batch, device, form, first, evaluations, percent) -> None:
    """One generator form at one batch size: the float32 sweep, each reduced precision, the
    profile, and (once) the CUDA-against-CPU check; ``first`` holds the first form's results."""
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects

    space = g.space
    fuse = backend_args(form)
    f32 = TorchEffects(g, clf, batch_size=batch, device=device, **fuse)
    lo, hi = sel.style_ranges(f32.styles(w))
    base, e32, t32 = sweep(f32, w, lo, hi, sample, device)
    ranking = sel.attfind(e32, base).ranking
    if not first:
        check_inputs(e32, base)
        first.update(form=form, ranking=ranking, effects=e32, seconds=t32)
    print(f"   batch {batch}, {form}: float32 {evaluations / t32:,.1f} evaluations/s ({percent(t32)}; "
          f"{first['seconds'] / t32:.2f}x {first['form']}'s; max |effect - {first['form']}'s| "
          f"{np.abs(e32 - first['effects']).max():.1e}; ranking equal to {first['form']}'s float32: "
          f"{ranking == first['ranking']}, {len(ranking)} attributes)", flush=True)
    for precision in [p for p in args.precision if p != "float32"]:
        certified(args, g, clf, batch, device, fuse, precision, w, lo, hi, sample, f32, base, e32,
                  t32, evaluations, first["ranking"], percent)
    if device.type != "cuda" or batch != args.batch_sizes_256[0]:
        return
    if args.profile:
        profile_batch(f32, w[0], lo, hi, batch)
        if "tf32" in args.precision:
            profile_batch(TorchEffects(g, clf, batch_size=batch, device=device, precision="tf32", **fuse),
                          w[0], lo, hi, batch)
    if form == first["form"]:
        coords = [space.coordinate(layer, 0) for layer in range(len(space.sizes))]
        on_cpu = TorchEffects(g, clf, batch_size=batch, **fuse).image(w[0], lo, hi, coordinates=coords)
        on_cpu = on_cpu[1][:, coords]
        on_gpu = f32.image(w[0], lo, hi, coordinates=coords)[1][:, coords]
        print(f"   float32 effects, {form} form, CUDA vs CPU ({len(coords)} coordinates): max abs diff "
              f"{np.abs(on_gpu - on_cpu).max():.1e}", flush=True)


def sweep(backend, w, lo, hi, sample, device):
    """One sweep of ``sample`` on every image, after a warm-up: base logits, effects, seconds."""
    backend.image(w[0], lo, hi, coordinates=sample[:2])                       # warm-up
    full, seconds = timed(lambda: [backend.image(x, lo, hi, coordinates=sample) for x in w], device)
    return np.stack([b for b, _ in full]), np.stack([e[:, sample] for _, e in full]), seconds


def check_inputs(effects, base) -> None:
    from attfind import selection as sel

    classes = sel.split_by_class(base)
    if np.abs(effects).max() < 1e-3 or len(set(classes.tolist())) < 2:
        raise SystemExit(f"degenerate 256 px inputs: max |effect| {np.abs(effects).max():.1e}, classes "
                         f"{sorted(set(classes.tolist()))}; a ranking check on them proves nothing")


def certified(args, g, clf, batch, device, fuse, precision, w, lo, hi, sample, f32, base, e32, t32,
              evaluations, truth, percent) -> None:
    """``precision``'s sweep alone, then certified against ``f32`` (the error probe and the float32
    recomputation counted in its time); its ranking against this form's float32 and ``truth``."""
    from attfind import certify
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects

    reduced = TorchEffects(g, clf, batch_size=batch, device=device, precision=precision, **fuse)
    reduced.image(w[0], lo, hi, coordinates=sample[:2])                     # warm-up
    low, t_low = timed(lambda: np.stack([reduced.image(x, lo, hi, coordinates=sample)[1][:, sample] for x in w]),
                       device)
    if args.no_certify:
        print(f"     {precision}: {evaluations / t_low:,.1f}/s alone ({percent(t_low)}; {t32 / t_low:.2f}x float32); "
              f"max |{precision} - float32| {np.abs(low - e32).max():.1e}, median "
              f"{np.median(np.abs(low - e32)):.1e} (median |effect| {np.median(np.abs(e32)):.1e}); its own ranking, "
              f"uncertified, equal to float32's: {sel.attfind(low, base).ranking == sel.attfind(e32, base).ranking}",
              flush=True)
        return
    if reduced.form == "delta":         # the bound a + b |effect|, its probe on each layer's largest too
        whole = np.zeros((*low.shape[:2], reduced.num_styles, low.shape[3]))
        whole[:, :, sample] = low
        err, t_probe = timed(lambda: certify.probe_bound(reduced, f32, w, lo, hi, per_layer=2, images=2,
                                                         effects=whole).columns(sample), device)
    else:
        err, t_probe = timed(lambda: certify.probe_error(reduced, f32, w, lo, hi, per_layer=2, images=2)[sample],
                             device)
    exact = certify.recompute_with(f32, w, lo, hi)
    (result, cert, _), t_cert = timed(lambda: certify.certified_attfind(
        low, base, err, lambda cols: exact([sample[i] for i in cols])), device)
    total = t_probe + t_low + t_cert
    print(f"     {precision}: {evaluations / t_low:,.1f}/s alone ({percent(t_low)}; {t32 / t_low:.2f}x float32); "
          f"certified {evaluations / total:,.1f}/s ({t32 / total:.2f}x float32; without the error probe, which a "
          f"full sweep amortizes, {evaluations / (total - t_probe):,.1f}/s, {t32 / (total - t_probe):.2f}x); "
          f"{cert.fraction:.1%} of the coordinates recomputed in float32, {cert.rounds} rounds, bound raised "
          f"{cert.bound_raised}x, bound at most {cert.bound_max:.1e}, max |{precision} - float32| "
          f"{np.abs(low - e32).max():.1e}, median {np.median(np.abs(low - e32)):.1e}; ranking equal to "
          f"this form's float32 sweep's: {result.ranking == sel.attfind(e32, base).ranking}, to the first "
          f"form's: {result.ranking == truth}", flush=True)


if __name__ == "__main__":
    main()
