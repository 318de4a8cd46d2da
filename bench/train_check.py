"""verify --train on a converted release: every model's verdict, every training control's, and the cost.

    .venv/bin/python bench/train_check.py --release R --weights W [--float64-only] [--json out.json]

For each model of the release: TF's training step on its float64 and float32 rebuilds
(``crosscheck.train_check``), then the port and each of its kind's training controls
(``porting.controls.TRAIN_CONTROLS``) judged on that one truth (``porting.train_check``): per
candidate the worst float64 score (exact when <= 1; a control must go over), the worst float32
score against the rounding model's bound (the float32 run held to its float64 run on the same
branches), the branches the float32 run flipped, TF's own float32 error over the same bound (on
its own branches, so with the jumps of its flips: information), and the seconds of each phase. The figures of docs/training.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--release", type=Path, required=True, help="a reference (or the real) release folder")
    p.add_argument("--weights", type=Path, required=True, help="its converted folder")
    p.add_argument("--float64-only", action="store_true", help="the exact verdict alone (no rounding model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and TF threads (set on purpose)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    import tensorflow as tf
    import torch

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    import models_pt
    from crosscheck import train_check as tft
    from porting import train_check as ptt
    from porting.kernels import describe, torch_kernels
    from porting.readers import open_checkpoint

    manifest = models_pt.read_manifest(args.weights)
    out = {"release": str(args.release), "kernels": torch_kernels(), "models": {}}
    print(f"{'model':<14} {'candidate':<34} {'score64':>9} {'score':>6} {'flips':>6} {'TF score':>8}  result")
    for stem, entry in manifest["models"].items():
        pt = models_pt.load(args.weights / entry["weights"])
        kind = pt.kind
        if kind not in ptt.TRAIN_KINDS:
            continue
        t0 = time.perf_counter()
        with open_checkpoint(args.release / entry["source"]) as ck:
            variables = ck.read_all()
        inputs = ptt.train_inputs(kind, pt.config, seed=args.seed)
        truth = tft.tf_quantities(kind, tft.rebuild(kind, pt.config, "float64", variables), inputs, "float64", pt)
        tf32 = None if args.float64_only else \
            tft.tf_quantities(kind, tft.rebuild(kind, pt.config, "float32", variables), inputs, "float32", pt)
        tf_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        reports = ptt.judge_training_controls(kind, truth, tf32, pt, inputs)
        judged = time.perf_counter() - t1
        rows = {}
        for name, r in reports.items():
            w64, w32 = r.worst64(), r.worst() if r.fit32 is not None else None
            tf_scores = [row.tf_error / row.bound for row in r.layers if row.tf_error is not None and row.bound]
            flips = r.inputs.split("flipped ")[1].split(" ")[0] if "flipped" in r.inputs else "-"
            rows[name] = {"passed": r.passed, "score64": w64.score64, "worst64": w64.name,
                          "score": None if w32 is None else w32.score, "worst": None if w32 is None else w32.name,
                          "flips": flips, "tf_score": max(tf_scores) if tf_scores else None,
                          "phases": r.phases, "rows": len(r.layers)}
            print(f"{stem:<14} {name:<34} {w64.score64:>9.2e} "
                  f"{'-' if w32 is None else format(w32.score, '.2f'):>6} {flips:>6} "
                  f"{'-' if not tf_scores else format(max(tf_scores), '.2f'):>8}  {'pass' if r.passed else 'FAIL'}")
        out["models"][stem] = {"kind": kind, "candidates": rows, "tf_seconds": round(tf_seconds, 1),
                               "judge_seconds": round(judged, 1), "quantities": len(truth)}
        print(f"{'':<14} {len(truth)} quantities; TF {tf_seconds:.0f} s, the port and "
              f"{len(reports) - 1} control(s) {judged:.0f} s ({reports['correct'].phases})")
    print(f"kernels: {describe({'pytorch': out['kernels']})}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    correct_ok = all(m["candidates"]["correct"]["passed"] for m in out["models"].values())
    controls_fail = all(not c["passed"] for m in out["models"].values() for n, c in m["candidates"].items()
                        if n != "correct")
    return 0 if correct_ok and controls_fail else 1


if __name__ == "__main__":
    sys.exit(main())
