"""What verify costs, and how its verdict changes with the number of test inputs (``--num-images``).

    .venv/bin/python bench/verify_num_images.py --release R --weights W [--counts 4,8,16,32]

For every model of a converted release and every count: the seconds of one verify, split into
its phases (TF's float32 and float64 runs, the port's float64 run, the port's float32 run, the
rounding model's noisy float64 runs), the worst float64 score (exact when <= 1), the worst
float32 score against the rounding model's bound and, for information, the old ratio (the
port's error over TF's own) of that layer. Without --release, a 64 px reference release
(seed 7, no AttFind sweep) is built and converted in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--release", type=Path, help="a reference (or the real) release folder")
    p.add_argument("--weights", type=Path, help="its converted folder")
    p.add_argument("--counts", default="4,8,16,32")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and TF threads (set on purpose)")
    args = p.parse_args(argv)

    import tensorflow as tf
    import torch

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    import models_pt
    from porting.readers import open_checkpoint
    from crosscheck.verify import round_trip, tf_reference
    from porting.verdict import judge_module

    tmp = None
    if args.release is None:
        from crosscheck.reference_release import make_reference
        from porting.release import convert_release

        tmp = tempfile.TemporaryDirectory(prefix="verify-n-")
        args.release, args.weights = Path(tmp.name) / "release", Path(tmp.name) / "weights"
        make_reference(args.release, seed=7, resolution=64, num_dlatents=32, attfind=False)
        convert_release(args.release, args.weights, progress=False)
    manifest = json.loads((args.weights / "manifest.json").read_text())
    counts = [int(c) for c in args.counts.split(",")]
    print(f"release {args.release}; {args.threads} threads; verify (float64 exactness and the float32 bound)")
    print(f"{'model':<14} {'images':>6} {'seconds':>8} {'TF':>6} {'PT64':>6} {'PT32':>6} {'model':>6} "
          f"{'score64':>8} {'score':>6} {'worst layer':<32} {'ratio':>6}  verdict")
    for stem, entry in manifest["models"].items():
        header = models_pt.read_header(args.weights / entry["weights"])
        for n in counts:
            t0 = time.perf_counter()
            with open_checkpoint(args.release / entry["source"]) as ck:
                ref = tf_reference(ck, header["kind"], header["config"], "float32", n,
                                   dlatents=args.release / "dlatents.pkl")
            report = judge_module(ref, models_pt.load(args.weights / entry["weights"]))
            seconds = time.perf_counter() - t0
            worst, ph = report.worst(), report.phases
            print(f"{report.model:<14} {n:>6} {seconds:>8.1f} {ph['tf']:>6.1f} {ph['float64']:>6.1f} "
                  f"{ph['float32']:>6.1f} {ph['rounding model']:>6.1f} {report.worst64().score64:>8.1e} "
                  f"{worst.score:>6.2f} {worst.name:<32} {worst.ratio:>6.2f}  {'pass' if report.passed else 'FAIL'}",
                  flush=True)
    for n in counts:
        t0 = time.perf_counter()
        trip = round_trip(args.release, args.weights, manifest, n)
        worst = trip.worst()
        print(f"{'round trip':<14} {n:>6} {time.perf_counter() - t0:>8.1f} {'':>6} {'':>6} {'':>6} {'':>6} "
              f"{trip.worst64().score64:>8.1e} {worst.score:>6.2f} {worst.name:<32} {worst.ratio:>6.2f}  "
              f"{'pass' if trip.passed else 'FAIL'}", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
