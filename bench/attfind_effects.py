"""AttFind's heavy step: StyleSpace coordinate evaluations per second, PyTorch backend against
the notebook-style TensorFlow loop, same models, same machine, one run.

    .venv/bin/python bench/attfind_effects.py                       # 64 px reference (built if not given)
    .venv/bin/python bench/attfind_effects.py --reference reference --weights weights/reference
    .venv/bin/python bench/attfind_effects.py --resolution 256 --channel-max 512   # the release's size

One evaluation = one coordinate moved in one direction, the image regenerated, clamped and
classified. TF: ``attfind.effects_tf.TFEffects`` on the SavedModels loaded as the notebook
loads them, one image and one shift at a time through the style bias, eagerly (as the notebook)
and under ``tf.function`` (as make-reference writes examples_1.tfrecord); timed on a sample of
coordinates spread over every layer. PyTorch: ``attfind.effects_pt.TorchEffects`` on the
converted weights. The full sweep of one image is measured where it takes under a few minutes,
else extrapolated from the sampled rate (the output says which).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import use_all_cores  # noqa: E402


def sample_coordinates(sizes, per_layer: int):
    import numpy as np

    out, start = [], 0
    for size in sizes:
        out += [start + int(c) for c in np.linspace(0, size - 1, min(per_layer, size)).round()]
        start += size
    return sorted(set(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, help="reference release folder (built if not given)")
    ap.add_argument("--weights", type=Path, help="its converted weights (converted if not given)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--channel-max", type=int, default=16, help="generator width cap when building")
    ap.add_argument("--tf-per-layer", type=int, default=4, help="TF: coordinates sampled per style layer")
    ap.add_argument("--pt-images", type=int, default=4, help="PyTorch: images swept in full")
    ap.add_argument("--pt-per-layer", type=int, default=0,
                    help="PyTorch: sample this many coordinates per layer instead of the full sweep (0: full)")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()

    import numpy as np
    from crosscheck.tf_side import load_savedmodel

    import models_pt
    from attfind import selection as sel
    from attfind.effects_pt import TorchEffects
    from attfind.effects_tf import TFEffects, conv_styles
    from crosscheck.reference_release import make_reference
    from models_pt.dlatents import dlatent_matrix, load_dlatents
    from porting.readers import open_checkpoint
    from porting.release import convert_release

    cores = use_all_cores()
    tmp = Path(tempfile.mkdtemp(prefix="bench-attfind-"))
    ref = args.reference
    if ref is None:
        ref = tmp / "reference"
        print(f"building a {args.resolution} px reference (widths up to {args.channel_max}) in {ref} ...", flush=True)
        make_reference(ref, resolution=args.resolution, channel_max=args.channel_max, attfind=False,
                       num_dlatents=8)
    weights = args.weights
    if weights is None:
        weights = tmp / "weights"
        convert_release(ref, weights, progress=False)

    tf_models = {}
    for stem in ("generator", "mobilenet"):
        with open_checkpoint(ref / f"{stem}.savedmodel.zip") as ck:
            tf_models[stem] = load_savedmodel(ck)
    pt = models_pt.load(weights)
    dl = dlatent_matrix(load_dlatents(ref / "dlatents.pkl"))
    styles = conv_styles(tf_models["generator"], dl)
    lo, hi = sel.style_ranges(styles)
    res = pt["generator"].config["resolution"]

    rows = []
    sizes = pt["generator"].style_sizes
    num_styles = sum(sizes)
    coords = sample_coordinates(sizes, args.tf_per_layer)
    for compiled in (False, True):
        tf_be = TFEffects(tf_models["generator"], tf_models["mobilenet"], compiled=compiled)
        tf_be.image(dl[0], lo, hi, style=styles[0], coordinates=coords[:1])     # warm-up (and trace)
        t = time.perf_counter()
        tf_be.image(dl[0], lo, hi, style=styles[0], coordinates=coords)
        rate = 2 * len(coords) / (time.perf_counter() - t)
        rows.append((f"TF notebook loop, {'tf.function' if compiled else 'eager (as the notebook)'}",
                     rate, f"{len(coords)} coordinates x 2 sampled"))

    pt_be = TorchEffects(pt["generator"], pt["mobilenet"], batch_size=args.batch_size)
    pt_be.image(dl[0], lo, hi, coordinates=coords[:4])                   # warm-up
    if args.pt_per_layer:
        pt_coords = sample_coordinates(sizes, args.pt_per_layer)
        t = time.perf_counter()
        pt_be.image(dl[0], lo, hi, coordinates=pt_coords)
        rate = 2 * len(pt_coords) / (time.perf_counter() - t)
        rows.append(("PyTorch TorchEffects (batched, prefix once)", rate,
                     f"{len(pt_coords)} coordinates x 2 sampled, batch {args.batch_size}"))
    else:
        n = min(args.pt_images, len(dl))
        t = time.perf_counter()
        for i in range(n):
            pt_be.image(dl[i], lo, hi)
        rate = 2 * num_styles * n / (time.perf_counter() - t)
        rows.append(("PyTorch TorchEffects (batched, prefix once)", rate,
                     f"{n} full sweeps, batch {args.batch_size}"))

    print(f"\nAttFind effects at {res} px, {num_styles} StyleSpace coordinates, {cores} cores")
    print(f"{'backend':<42} {'evals/s':>9} {'one image, full sweep':>22}  measured on")
    for name, rate, how in rows:
        sweep = 2 * num_styles / rate
        print(f"{name:<42} {rate:>9.1f} {_duration(sweep):>22}  {how}")
    pt_rate = rows[-1][1]
    print(f"\nPyTorch / TF eager loop: {pt_rate / rows[0][1]:.1f}x;  "
          f"PyTorch / TF tf.function loop: {pt_rate / rows[1][1]:.1f}x")


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


if __name__ == "__main__":
    main()
