"""Inference speed of every model: PyTorch port vs the TF SavedModel vs onnxruntime, one run.

    .venv/bin/python bench/inference.py --release reference256 --weights weights/reference256 \\
        [--onnx onnx/reference256] [--batches 1 8] [--models classifier generator encoder discriminator]

Images per second at each batch size and the ratios against TF (higher is better for the
other). TF runs each SavedModel as the notebook loads it, under ``tf.function``; PyTorch runs
the readable module (``models_pt.load``) and, for the classifier, its deployment forms
(``models_pt.inference``: ``optimize_for_inference``, "opt", any size; ``freeze_for_inference``,
"frz", ``torch.export`` + AOTInductor for 256 px, one build per batch size, whose compile
seconds are printed and kept out of the timing); onnxruntime runs the files of
``cli.py export-onnx`` (exported here if ``--onnx`` has none). The generator is timed as the
notebook uses it: style vectors of dlatents, then the synthesis. Threads: all cores for each.
This machine is shared with others: every figure is the median of ``--rounds`` rounds that
take the variants in turn, and the spread between runs is reported with the README's table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, use_all_cores  # noqa: E402

from models_pt.release_facts import RELEASE_STEMS as STEMS  # noqa: E402  (model kind -> file stem in a release)



def bench_model(kind: str, release: Path, weights: Path, onnx_dir: Path, batches, seconds: float, rounds: int) -> list[tuple]:
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf
    from crosscheck.tf_side import load_savedmodel
    import torch

    import models_pt
    from models_pt.inference import freeze_for_inference, optimize_for_inference
    from porting.onnx_export import export, onnx_feed, reference_inputs
    from porting.readers import open_checkpoint

    stem = STEMS[kind]
    pt = models_pt.load(weights / f"{stem}.safetensors")
    size = pt.config["resolution"] if kind != "classifier" else None
    with open_checkpoint(release / f"{stem}.savedmodel.zip") as ck:
        tf_model = load_savedmodel(ck)
    if kind == "classifier":
        size = tf_model.input_shape[1] or 256
    onnx_path = onnx_dir / f"{stem}.onnx"
    if not onnx_path.exists():
        export(pt, onnx_path, size if kind == "classifier" else None)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count()
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    if kind == "classifier":
        tf_fn = tf.function(lambda x: tf_model(x, training=False))
    elif kind == "generator":
        tf_fn = tf.function(lambda w: tf_model.g_synthesis(tf_model.style_vector_calculator(w, training=False),
                                                           training=False))
    elif kind == "discriminator":
        tf_fn = tf.function(lambda x, y: tf_model((x, y), training=False))
    else:
        tf_fn = tf.function(lambda x: tf_model(x, training=False))
    fast = optimize_for_inference(pt) if kind in ("classifier", "generator") else None
    frozen = None

    rows = []
    for b in batches:
        x = reference_inputs(pt, b, size, seed=5)
        feed = onnx_feed(pt, x)
        if kind == "classifier":
            xt = (torch.from_numpy(feed["images"]),)
            tf_args = (x,)
        elif kind == "discriminator":
            xt = (torch.from_numpy(x[0]), torch.from_numpy(x[1]))
            tf_args = x
        else:
            xt = (torch.from_numpy(x),)
            tf_args = (x,)

        def run_onnx():
            if kind == "generator":   # style vectors (PyTorch, tiny) then the ONNX synthesis
                with torch.inference_mode():
                    conv, rgb = pt.style_vectors(xt[0])
                names = [i.name for i in session.get_inputs()]
                return session.run(None, dict(zip(names, [s.numpy() for s in conv + rgb])))
            return session.run(None, feed)

        if kind == "classifier":   # AOTInductor builds for the first batch size here, then per new one
            start = time.perf_counter()
            if frozen is None:
                frozen = freeze_for_inference(pt, xt[0])
            else:
                with torch.inference_mode():
                    frozen(*xt)
            print(f"  (frz: {time.perf_counter() - start:.1f} s to compile for batch {b})", flush=True)
        with torch.inference_mode():
            t = interleaved({"tf": lambda: tf_fn(*tf_args), "pt": lambda: pt(*xt),
                             "fast": (lambda: fast(*xt)) if fast is not None else None,
                             "frozen": (lambda: frozen(*xt)) if frozen is not None else None,
                             "ort": run_onnx}, b, seconds, rounds)
        t_tf, t_pt, t_fast, t_frozen, t_ort = (t[k] for k in ("tf", "pt", "fast", "frozen", "ort"))
        rows.append((kind, size, b, t_tf, t_pt, t_fast, t_frozen, t_ort))
        print(_row(rows[-1]), flush=True)
    return rows


HEADER = (f"{'model':<14} {'px':>4} {'batch':>5} {'PT/TF':>6} {'opt/TF':>6} {'frz/TF':>6} {'ORT/TF':>6} "
          f"{'frz/ORT':>7}   {'TF img/s':>8} {'PT':>7} {'PT opt':>7} {'PT frz':>7} {'ORT':>7}")


def _row(r) -> str:
    kind, size, b, t_tf, t_pt, t_fast, t_frozen, t_ort = r
    best = t_frozen or t_fast or t_pt

    def ratio(v, width=6):
        return f"{v / t_tf:>{width}.2f}" if v else f"{'-':>{width}}"

    def ips(v):
        return f"{v:>7.3g}" if v else f"{'-':>7}"
    return (f"{kind:<14} {size:>4} {b:>5} {ratio(t_pt)} {ratio(t_fast)} {ratio(t_frozen)} {ratio(t_ort)} "
            f"{best / t_ort:>7.2f}   {t_tf:>8.2f} {ips(t_pt)} {ips(t_fast)} {ips(t_frozen)} {ips(t_ort)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", type=Path, default=Path("reference"))
    ap.add_argument("--weights", type=Path, default=Path("weights/reference"))
    ap.add_argument("--onnx", type=Path, default=None, help="folder of exported .onnx files [default: <weights>/onnx]")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--models", nargs="+", default=list(STEMS), choices=list(STEMS))
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    args = ap.parse_args()

    import onnxruntime
    import tensorflow as tf
    import torch

    cores = use_all_cores()
    onnx_dir = args.onnx or args.weights / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cores} cores, torch {torch.__version__}, tensorflow {tf.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print(HEADER, flush=True)
    rows = []
    for kind in args.models:
        rows += bench_model(kind, args.release, args.weights, onnx_dir, args.batches, args.seconds, args.rounds)
    print("\nsummary (ratios > 1: faster than TF under tf.function)")
    print(HEADER)
    for r in rows:
        print(_row(r))


if __name__ == "__main__":
    main()
