"""The generic chain as a peer: tf2onnx, then onnx2torch, on the release's SavedModels.

    bash bench/generic_chain.sh --release reference256 --weights weights/reference256

(run through generic_chain.sh, which sets up the separate environment). For the classifier and
the generator: conversion time of each step, whether it converts at all, parity of the
resulting PyTorch module with TF on the same inputs, its inference speed at batch 1 and 8
against TF (``tf.function``) and this project's port, and what the result offers: module
names, and whether StyleSpace (the style vectors) is reachable.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, use_all_cores  # noqa: E402


def tf2onnx_convert(saved_model: Path, out: Path) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model),
                        "--output", str(out), "--opset", "17"], capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0 or not out.exists():
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if "Error" in ln or "error" in ln]
        return took, (lines[-1] if lines else (r.stderr or r.stdout).strip().splitlines()[-1])[:300]
    return took, ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    args = ap.parse_args()

    import numpy as np
    import onnx
    import onnx2torch
    import tensorflow as tf
    from crosscheck.tf_side import load_savedmodel
    import torch

    import models_pt
    from models_pt.inference import freeze_for_inference, optimize_for_inference
    from porting import graph_scan
    from porting.readers import open_checkpoint
    from porting.samples import sample_images

    cores = use_all_cores()
    tmp = Path(tempfile.mkdtemp(prefix="generic-chain-"))
    print(f"machine: {cores} cores; tf2onnx + onnx2torch {onnx2torch.__version__ if hasattr(onnx2torch, '__version__') else ''}")

    # ---------------------------------------------------------------- classifier
    with open_checkpoint(args.release / "mobilenet.savedmodel.zip") as ck:
        tf_model = load_savedmodel(ck)          # scanned there; tf2onnx loads the same folder
        t_onnx, err = tf2onnx_convert(ck.root, tmp / "mobilenet.onnx")
    if err:
        print(f"classifier: tf2onnx failed after {t_onnx:.1f} s: {err}")
        return
    t = time.perf_counter()
    chain = onnx2torch.convert(onnx.load(str(tmp / "mobilenet.onnx"))).eval()
    t_torch = time.perf_counter() - t
    size = tf_model.input_shape[1] or 256
    port = models_pt.load(args.weights / "mobilenet.safetensors")
    fast = optimize_for_inference(port)
    x = sample_images(4, size, seed=11)
    ref = tf_model(x, training=False).numpy()
    with torch.inference_mode():
        got_chain = chain(torch.from_numpy(x)).numpy()            # the chain keeps TF's NHWC input
        got_port = port(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    names = [n for n, _ in chain.named_modules() if n][:6]
    print(f"\nclassifier ({size} px): tf2onnx {t_onnx:.1f} s, onnx2torch {t_torch:.1f} s")
    print(f"  parity with TF: chain {np.abs(got_chain - ref).max():.2e}, port {np.abs(got_port - ref).max():.2e}")
    print(f"  the chain's module names: {names} ... ({sum(1 for _ in chain.modules())} modules; the port's: "
          f"{[n for n, _ in port.named_modules() if n][:4]} ...)")
    tf_fn = tf.function(lambda a: tf_model(a, training=False))
    frozen = freeze_for_inference(port, torch.zeros(1, 3, size, size))
    print(f"  {'batch':>5} {'TF img/s':>9} {'chain':>8} {'port':>8} {'port opt':>8} {'port frz':>8} "
          f"{'chain/TF':>8} {'port/chain':>10} {'opt/chain':>9} {'frz/chain':>9}")
    for b in args.batches:
        xb = sample_images(b, size, seed=12)
        xt = torch.from_numpy(np.ascontiguousarray(xb.transpose(0, 3, 1, 2)))
        xh = torch.from_numpy(xb)
        with torch.inference_mode():
            r = interleaved({"tf": lambda: tf_fn(xb), "chain": lambda: chain(xh), "port": lambda: port(xt),
                             "opt": lambda: fast(xt), "frz": lambda: frozen(xt)}, b, args.seconds, args.rounds)
        c = r["chain"]
        print(f"  {b:>5} {r['tf']:>9.1f} {c:>8.1f} {r['port']:>8.1f} {r['opt']:>8.1f} {r['frz']:>8.1f} "
              f"{c / r['tf']:>8.2f} {r['port'] / c:>10.2f} {r['opt'] / c:>9.2f} {r['frz'] / c:>9.2f}", flush=True)

    # ---------------------------------------------------------------- generator
    with open_checkpoint(args.release / "generator.savedmodel.zip") as ck:
        graph_scan.check(ck.root, shown=str(ck.source))   # tf2onnx loads the SavedModel itself
        t_onnx, err = tf2onnx_convert(ck.root, tmp / "generator.onnx")
    print(f"\ngenerator: tf2onnx {'failed' if err else 'converted'} in {t_onnx:.1f} s" + (f": {err}" if err else ""))
    if not err:
        g = onnx.load(str(tmp / "generator.onnx"))
        ins = [(i.name, [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]) for i in g.graph.input]
        print(f"  its inputs: {ins}  (the serving signature: z and labels; the style vectors are internal "
              "tensors, so StyleSpace edits are not reachable without editing the graph)")
        try:
            t = time.perf_counter()
            onnx2torch.convert(g)
            print(f"  onnx2torch converted it in {time.perf_counter() - t:.1f} s")
        except Exception as e:
            print(f"  onnx2torch failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


if __name__ == "__main__":
    main()
