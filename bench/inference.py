"""Inference speed: PyTorch port vs the TF SavedModel it came from, same machine, one run.

    .venv/bin/python bench/inference.py --release reference --weights weights/reference

Prints images per second for each model at batch 1 and 8 and the ratio PyTorch / TF (higher is
better for PyTorch). TF runs the SavedModel as the notebook loads it, under ``tf.function``;
PyTorch runs the readable module (``models_pt.load``) and its deployment form
(``models_pt.inference.optimize_for_inference``). Threads are pinned to the machine's cores for
both frameworks.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import images_per_second, use_all_cores  # noqa: E402


def bench_classifier(release: Path, weights: Path, batches, seconds: float) -> list[tuple]:
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    import torch

    import models_pt
    from models_pt.inference import optimize_for_inference
    from porting.readers import open_checkpoint

    rows = []
    with open_checkpoint(release / "mobilenet.savedmodel.zip") as ck:
        tf_model = keras.models.load_model(str(ck.root), compile=False)
        size = tf_model.input_shape[1] or 256
        tf_fn = tf.function(lambda x: tf_model(x, training=False))
        pt = models_pt.load(weights / "mobilenet.safetensors")
        fast = optimize_for_inference(pt)
        for b in batches:
            x = np.random.default_rng(0).uniform(-1, 1, (b, size, size, 3)).astype(np.float32)
            xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            with torch.inference_mode():
                t_tf = images_per_second(lambda: tf_fn(x).numpy(), b, seconds)
                t_pt = images_per_second(lambda: pt(xt), b, seconds)
                t_fast = images_per_second(lambda: fast(xt), b, seconds)
            rows.append(("classifier", b, t_tf, t_pt, t_fast))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", type=Path, default=Path("reference"))
    ap.add_argument("--weights", type=Path, default=Path("weights/reference"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = ap.parse_args()

    import tensorflow as tf
    import torch

    cores = use_all_cores()
    rows = bench_classifier(args.release, args.weights, args.batches, args.seconds)
    print(f"machine: {cores} cores, torch {torch.__version__}, tensorflow {tf.__version__}")
    print(f"{'model':<12} {'batch':>5} {'TF img/s':>9} {'PT img/s':>9} {'PT fast':>9} "
          f"{'PT/TF':>6} {'fast/TF':>7}")
    for model, b, t_tf, t_pt, t_fast in rows:
        print(f"{model:<12} {b:>5} {t_tf:>9.1f} {t_pt:>9.1f} {t_fast:>9.1f} {t_pt / t_tf:>6.2f} "
              f"{t_fast / t_tf:>7.2f}")


if __name__ == "__main__":
    main()
