"""AttFind's effects in reduced precision: the plain path against the delta path (``attfind.delta``).

    .venv/bin/python bench/attfind_delta.py --weights W --dlatents D --json OUT \\
        [--images 32] [--truth-images 2] [--images-256 2 --coordinates-256 1]

On the converted release ``W`` (every coordinate of the sweep, on ``--images`` images):

1. The float32 plain sweep, the reference. For TF32 and BF16 (both emulated as ``cli.py
   attfind`` runs them on a CPU: TF32's operands rounded, BF16 autocast) the plain and the delta
   path's effects: their error against float32 (median, max), the ratio, the evaluations/s.
2. Where the CPU has BF16 kernels (AMX or AVX-512 BF16), oneDNN's own BF16 arithmetic for float32
   (``ONEDNN_DEFAULT_FPMATH_MODE=BF16``, in a child process): both paths' errors the same way.
3. On ``--truth-images`` images, the float64 truth: the float32 plain and delta sweeps' error
   against it, and their scores in the effects verdict (``porting.verdict.judge``, the rounding
   model's bound; <= 1 passes).
4. For each reduced precision and path, the certificate (``attfind.certify``: the plain path with
   today's flat bound, the delta path with ``a + b |effect|``): the share of coordinates
   recomputed in float32, the bound's largest value, the ranking against float32's.
5. With ``--images-256``: the release's 256 px configuration (``attfind_flops.release_models``,
   random weights) on ``--coordinates-256`` coordinates per style layer: step 1's errors, and on
   ``--truth-256`` images both float32 paths against float64 (and the float64 paths' agreement).

``--json OUT`` writes every figure; its ``"tf32"`` and ``"bf16"`` hold ``plain_median``,
``delta_median``, ``plain_max``, ``delta_max`` (the release's, step 1). Measured figures:
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

REDUCED = ("tf32", "bf16")


def sweep(backend, dlatents, lo, hi, coordinates=None):
    """``(base [N, C], effects [N, 2, S', C] float64, evaluations/s)`` over ``coordinates`` (all)."""
    cols = list(range(backend.num_styles)) if coordinates is None else list(coordinates)
    t = time.perf_counter()
    out = [backend.image(w, lo, hi, coordinates=None if coordinates is None else cols) for w in dlatents]
    seconds = time.perf_counter() - t
    effects = np.stack([e[:, cols] for _, e in out]).astype(np.float64)
    return np.stack([b for b, _ in out]), effects, 2 * len(cols) * len(dlatents) / seconds


def errors(name: str, plain, delta, reference) -> dict:
    p, d = np.abs(plain - reference), np.abs(delta - reference)
    row = {"plain_median": float(np.median(p)), "delta_median": float(np.median(d)), "plain_max": float(p.max()),
           "delta_max": float(d.max()), "median_ratio": float(np.median(p) / max(np.median(d), 1e-300)),
           "max_ratio": float(p.max() / max(d.max(), 1e-300))}
    print(f"   {name}: |effect - float32| median plain {row['plain_median']:.2e}, delta {row['delta_median']:.2e} "
          f"({row['median_ratio']:.1f}x smaller); max plain {row['plain_max']:.2e}, delta {row['delta_max']:.2e} "
          f"({row['max_ratio']:.1f}x)", flush=True)
    return row


def bf16_kernels() -> bool:
    """Whether oneDNN has BF16 kernels here (AMX or AVX-512 BF16): otherwise its BF16 math mode
    changes nothing."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("amx_bf16", "avx512_bf16"))


def child_onednn_bf16(args) -> None:
    """The child of step 2: both paths in float32 under the BF16 math mode, to ``--child``."""
    models, dl, lo, hi = release(args)
    dl = dl[:args.images]
    from attfind.effects_pt import TorchEffects

    out = {}
    for form in ("plain", "delta"):
        b = TorchEffects(models["generator"], models["mobilenet"], batch_size=args.batch_size, form=form)
        _, out[form], out[f"{form}_rate"] = sweep(b, dl, lo, hi)
    np.savez(args.child, **out)


def release(args):
    import torch

    import models_pt
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    torch.set_num_threads(args.threads or os.cpu_count())
    models = models_pt.load(args.weights)
    dl = dlatent_matrix(load_dlatents(args.dlatents))
    lo, hi = sel.style_ranges(TorchEffects(models["generator"], models["mobilenet"]).styles(dl))
    return models, dl, lo, hi


def certificates(g, c, dl, lo, hi, base, e32, reduced: dict, batch: int) -> dict:
    """Step 4: each path's certificate against the float32 backend."""
    from attfind import certify
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects

    f32 = TorchEffects(g, c, batch_size=batch)
    truth = sel.attfind(e32, base).ranking
    out = {}
    for (precision, form), effects in reduced.items():
        backend = TorchEffects(g, c, batch_size=batch, precision=precision, form=form)
        t = time.perf_counter()
        err = (certify.probe_bound(backend, f32, dl, lo, hi, effects=effects) if form == "delta"
               else certify.probe_error(backend, f32, dl, lo, hi))
        result, cert, _ = certify.certified_attfind(effects, base, err, certify.recompute_with(f32, dl, lo, hi))
        row = {"fraction": cert.fraction, "recomputed": len(cert.recomputed), "rounds": cert.rounds,
               "bound_max": cert.bound_max, "bound_raised": cert.bound_raised, "worst_ratio": cert.worst_ratio,
               "ranking_equal": result.ranking == truth,
               "plain_ranking_equal": sel.attfind(effects, base).ranking == truth,
               "seconds": round(time.perf_counter() - t, 2)}
        out[f"{precision}_{form}"] = row
        print(f"   {precision} {form}: {row['recomputed']} of {cert.num_styles} coordinates recomputed "
              f"({row['fraction']:.1%}), bound at most {row['bound_max']:.3f} (raised {row['bound_raised']}x, worst "
              f"{row['worst_ratio']:.2f} of it); certified ranking = float32's: {row['ranking_equal']} (uncertified: "
              f"{row['plain_ranking_equal']})", flush=True)
    return out


def truth_part(g, c, dl, lo, hi, e_plain, e_delta, images: int, batch: int) -> dict:
    """Step 3: float32 plain and delta against the float64 truth, and their verdict scores, on the
    first ``images`` of ``dl`` (every dlatent: the rounding model takes its style ranges from them,
    as ``lo, hi`` were)."""
    import torch

    from attfind import truth
    from attfind.effects_pt import TorchEffects
    from porting.verdict import judge

    which = list(range(images))
    t64 = TorchEffects(g, c, batch_size=batch, optimize=False, dtype=torch.float64)
    base64, e64, _ = sweep(t64, dl[which], lo, hi)
    d64 = TorchEffects(g, c, batch_size=batch, optimize=False, dtype=torch.float64, form="delta")
    _, e64_delta, _ = sweep(d64, dl[which], lo, hi)
    model = truth.effects_model_error(g, c, dl, which, batch_size=batch, truth=(base64, e64))["effects"]
    rows = {form: judge("effects", e64, got32=e[which], model_error=model)
            for form, e in (("plain", e_plain), ("delta", e_delta))}
    out = {"images": images, "float64_delta_vs_plain": float(np.abs(e64_delta - e64).max()),
           "model_error": float(model)}
    for form, row in rows.items():
        err = np.abs((e_plain if form == "plain" else e_delta)[which] - e64)
        out[form] = {"median": float(np.median(err)), "max": float(err.max()), "score": float(row.score)}
    print(f"3. float64 truth on {images} images: the delta path in float64 agrees with the plain one to "
          f"{out['float64_delta_vs_plain']:.1e}; float32 error median / max / verdict score: plain "
          f"{out['plain']['median']:.2e} / {out['plain']['max']:.2e} / {out['plain']['score']:.2f}, delta "
          f"{out['delta']['median']:.2e} / {out['delta']['max']:.2e} / {out['delta']['score']:.2f} "
          f"(median {out['plain']['median'] / out['delta']['median']:.1f}x smaller)", flush=True)
    return out


def part_256(args) -> dict:
    """Step 5: the 256 px configuration, a sample of coordinates."""
    import attfind_flops as af
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects
    from attfind_cuda import sample_coordinates

    g, c = af.release_models(256)
    w = np.random.default_rng(0).normal(size=(args.images_256, g.config["w_dim"])).astype(np.float32)
    cols = sample_coordinates(g.space, args.coordinates_256, 1)
    f32 = TorchEffects(g, c, batch_size=args.batch_256)
    lo, hi = sel.style_ranges(f32.styles(w))
    _, e32, rate = sweep(f32, w, lo, hi, cols)
    _, e32_delta, rate_delta = sweep(TorchEffects(g, c, batch_size=args.batch_256, form="delta"), w, lo, hi, cols)
    print(f"5. 256 px configuration: {len(cols)} coordinates x {len(w)} images; float32 {rate:.2f} evaluations/s, "
          f"delta {rate_delta:.2f}; median |effect| {np.median(np.abs(e32)):.2e}; float32 delta vs plain: max "
          f"{np.abs(e32_delta - e32).max():.1e}", flush=True)
    out = {"coordinates": len(cols), "images": len(w), "float32_rate": rate, "float32_delta_rate": rate_delta,
           "median_effect": float(np.median(np.abs(e32)))}
    if args.truth_256:
        import torch

        n = min(args.truth_256, len(w))
        runs = {form: sweep(TorchEffects(g, c, batch_size=args.batch_256, optimize=False, dtype=torch.float64,
                                         form=form), w[:n], lo, hi, cols)[1] for form in ("plain", "delta")}
        e64 = runs["plain"]
        out["float64"] = {"images": n, "float64_delta_vs_plain": float(np.abs(runs["delta"] - e64).max()),
                          "plain_max": float(np.abs(e32[:n] - e64).max()),
                          "delta_max": float(np.abs(e32_delta[:n] - e64).max()),
                          "plain_median": float(np.median(np.abs(e32[:n] - e64))),
                          "delta_median": float(np.median(np.abs(e32_delta[:n] - e64)))}
        print(f"   float64 on {n} images: delta vs plain {out['float64']['float64_delta_vs_plain']:.1e}; float32 "
              f"error median / max: plain {out['float64']['plain_median']:.1e} / {out['float64']['plain_max']:.1e}, "
              f"delta {out['float64']['delta_median']:.1e} / {out['float64']['delta_max']:.1e}", flush=True)
    for precision in REDUCED:
        runs = {}
        for form in ("plain", "delta"):
            b = TorchEffects(g, c, batch_size=args.batch_256, precision=precision, form=form)
            _, runs[form], out[f"{precision}_{form}_rate"] = sweep(b, w, lo, hi, cols)
        out[precision] = errors(precision, runs["plain"], runs["delta"], e32)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="a converted release folder")
    ap.add_argument("--dlatents", type=Path, required=True)
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--images", type=int, default=32, help="images swept (every coordinate)")
    ap.add_argument("--truth-images", type=int, default=2, help="images of the float64 truth (0: skip step 3)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    ap.add_argument("--images-256", type=int, default=0, help="images of step 5 (0: skip)")
    ap.add_argument("--coordinates-256", type=int, default=1, help="coordinates per style layer at 256 px")
    ap.add_argument("--batch-256", type=int, default=8)
    ap.add_argument("--truth-256", type=int, default=1, help="images of step 5's float64 truth (0: none)")
    ap.add_argument("--no-onednn-bf16", action="store_true", help="skip step 2")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_onednn_bf16(args)

    import torch

    from attfind.effects_pt import TorchEffects

    models, every, lo, hi = release(args)       # the style ranges come from every dlatent
    dl = every[:args.images]
    g, c = models["generator"], models["mobilenet"]
    f32 = TorchEffects(g, c, batch_size=args.batch_size)
    base, e32, rate32 = sweep(f32, dl, lo, hi)
    _, e32_delta, rate32_delta = sweep(TorchEffects(g, c, batch_size=args.batch_size, form="delta"), dl, lo, hi)
    doc = {"weights": str(args.weights), "images": len(dl), "coordinates": f32.num_styles,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "median_effect": float(np.median(np.abs(e32))), "rates": {"float32_plain": rate32,
                                                                    "float32_delta": rate32_delta}}
    print(f"1. {len(dl)} images x {f32.num_styles} coordinates x 2 directions; float32 plain {rate32:.1f} "
          f"evaluations/s, delta {rate32_delta:.1f}; median |effect| {doc['median_effect']:.2e}; float32 delta vs "
          f"plain: max {np.abs(e32_delta - e32).max():.1e}", flush=True)
    reduced = {}
    for precision in REDUCED:
        runs = {}
        for form in ("plain", "delta"):
            b = TorchEffects(g, c, batch_size=args.batch_size, precision=precision, form=form)
            _, runs[form], doc["rates"][f"{precision}_{form}"] = sweep(b, dl, lo, hi)
            reduced[(precision, form)] = runs[form]
        doc[precision] = errors(f"{precision} (emulated)", runs["plain"], runs["delta"], e32)
        print(f"      evaluations/s: plain {doc['rates'][f'{precision}_plain']:.1f}, delta "
              f"{doc['rates'][f'{precision}_delta']:.1f}", flush=True)
    if not args.no_onednn_bf16:
        if bf16_kernels():
            out = args.json.with_suffix(".onednn.npz") if args.json else Path("onednn_bf16.npz")
            cmd = [sys.executable, __file__, "--weights", str(args.weights), "--dlatents", str(args.dlatents),
                   "--images", str(args.images), "--batch-size", str(args.batch_size), "--threads",
                   str(torch.get_num_threads()), "--child", str(out)]
            subprocess.run(cmd, check=True, env={**os.environ, "ONEDNN_DEFAULT_FPMATH_MODE": "BF16"})
            got = np.load(out)
            print("2. oneDNN's BF16 math mode (ONEDNN_DEFAULT_FPMATH_MODE=BF16):")
            doc["onednn_bf16"] = errors("onednn bf16", got["plain"], got["delta"], e32)
            doc["rates"].update(onednn_bf16_plain=float(got["plain_rate"]), onednn_bf16_delta=float(got["delta_rate"]))
            out.unlink()
        else:
            print("2. oneDNN's BF16 math mode: skipped, this CPU has no BF16 kernels (it would change nothing)")
    if args.truth_images:
        doc["float64"] = truth_part(g, c, every, lo, hi, e32, e32_delta, min(args.truth_images, len(dl)),
                                    args.batch_size)
    print("4. certificates against float32:")
    doc["certificates"] = certificates(g, c, dl, lo, hi, base, e32, reduced, args.batch_size)
    if args.images_256:
        doc["release_256"] = part_256(args)
    if args.json:
        from porting.atomic import write_json

        write_json(args.json, doc)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
