"""Is verify's verdict right on weights nobody tuned it on? A sweep over many reference releases.

For every seed: ``make-reference`` (no AttFind sweep), ``convert`` the folder, then every model
is judged by ``porting.verify.judge_module`` as ``verify`` judges it, in float32 (against the
float64 truth) and in float64 -- the correct port and every negative control of
``porting.controls`` on the same TF reference. Cases per seed:

* the release's four models at ``--resolution`` (generator widths alternate between
  ``--channel-max`` and twice that across seeds) and the encode-reconstruct round trip;
* the release's classifier at an odd input size (``--odd-size``);
* a classifier seeded at 256 px (the release's size; ``--classifier-size``), converted from its
  zip like the rest.

Every layer's figures are stored (``<out>/seed_<S>.json``, written atomically; a rerun skips
seeds already done), so the summary can be re-evaluated for any factor and floor:

    .venv/bin/python bench/verdict_sweep.py --seeds 0-19                  # run (or resume) and summarise
    .venv/bin/python bench/verdict_sweep.py --seeds 0-19 --summary-only --factor 6 --floor-ulps 4

The summary: per case and control, the worst score of the correct port (must stay <= 1, margin
= 1 / score) and the smallest score of each control (must be > 1, margin = score), in float32
and float64; the factor a correct port needed at most and the smallest a control reached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def layer_figures(report) -> list:
    """Per layer: [name, tf_error, port_error, truth_peak] (float32) or [name, |TF-PT|, max|TF|]."""
    if report.dtype == "float32":
        return [[r.name, r.tf_error, r.port_error, r.truth_peak] for r in report.layers]
    return [[r.name, r.max_abs_diff, r.ref_max_abs] for r in report.layers]


def judge_case(case: str, zip_path: Path, weights: Path, num_images: int, size: int | None = None,
               num_images64: int = 4) -> list[dict]:
    import models_pt
    from porting import controls
    from porting.readers import open_checkpoint
    from crosscheck.verify import tf_reference

    header = models_pt.read_header(weights)
    module = models_pt.load(weights)
    rows = []
    for dtype in ("float32", "float64"):
        t0 = time.perf_counter()
        with open_checkpoint(zip_path) as ck:
            n = num_images if dtype == "float32" else num_images64
            ref = tf_reference(ck, header["kind"], header["config"], dtype, n, size)
        reports = controls.judge_with_controls(ref, module)
        seconds = time.perf_counter() - t0
        for name, report in reports.items():
            rows.append({"case": case, "kind": header["kind"], "dtype": dtype, "control": name,
                         "size": ref.size, "passed": report.passed, "score": report.worst().score,
                         "first_failure": report.first_failure, "layers": layer_figures(report),
                         # TF reference + the port + every control: on the "correct" row only
                         "seconds": round(seconds, 2) if name == "correct" else None})
    return rows


def run_seed(seed: int, work: Path, args) -> dict:
    import shutil

    import numpy as np

    from crosscheck.reference_release import make_reference, save_savedmodel_zip, seeded_classifier
    from crosscheck.verify import round_trip
    from models_tf.classifier import default_config
    from porting.convert import convert_path
    from porting.release import convert_release

    t0 = time.perf_counter()
    src, weights = work / f"release_{seed}", work / f"weights_{seed}"
    channel_max = args.channel_max * (2 if seed % 2 else 1)
    make_reference(src, seed=seed, resolution=args.resolution, num_dlatents=16, channel_max=channel_max,
                   attfind=False)
    conversion = convert_release(src, weights, progress=False)
    manifest = json.loads((weights / "manifest.json").read_text())
    rows = []
    for stem, entry in conversion.models.items():
        rows += judge_case(f"{entry['kind']}@{args.resolution}", src / entry["source"], weights / entry["weights"],
                           args.num_images, num_images64=args.num_images64)
    rows += judge_case(f"classifier@{args.odd_size}", src / "mobilenet.savedmodel.zip",
                       weights / "mobilenet.safetensors", args.num_images, size=args.odd_size,
                       num_images64=args.num_images64)
    trip = round_trip(src, weights, manifest, args.num_images)
    rows.append({"case": "round trip", "kind": "round trip", "dtype": "float32", "control": "correct",
                 "size": args.resolution, "passed": trip.passed, "score": trip.worst().score,
                 "first_failure": trip.first_failure, "layers": layer_figures(trip), "seconds": trip.seconds})

    s = args.classifier_size
    clf = seeded_classifier(default_config(s), seed=seed)
    zip_path = save_savedmodel_zip(clf, work / f"mobilenet_{s}_{seed}.savedmodel.zip", "mobilenet.savedmodel")
    out, _ = convert_path(zip_path, work / f"mobilenet_{s}_{seed}.safetensors")
    rows += judge_case(f"classifier@{s} (seeded at {s})", zip_path, out, args.num_images,
                       num_images64=args.num_images64)
    if not args.keep:
        shutil.rmtree(src), shutil.rmtree(weights)
        zip_path.unlink(), out.unlink()
    return {"seed": seed, "resolution": args.resolution, "channel_max": channel_max,
            "num_images": args.num_images, "num_images64": args.num_images64, "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
            "numpy": np.__version__}


# ----------------------------------------------------------------- summary

def rescore(row: dict, rule) -> float:
    """The row's worst score under ``rule`` (factor, floor), from the stored per-layer figures."""
    if row["dtype"] == "float32":
        return max(rule.ratio32(tf, pt, peak) / rule.factor for _, tf, pt, peak in row["layers"])
    return max(d / rule.bound64(peak) for _, d, peak in row["layers"])


def group_scores(results: list[dict], rule) -> dict[tuple, list[float]]:
    """(case, control, dtype) -> the score of every seed under ``rule``."""
    groups: dict[tuple, list[float]] = {}
    for res in results:
        for row in res["rows"]:
            key = (row["case"].split(" (")[0], row["control"], row["dtype"])
            groups.setdefault(key, []).append(rescore(row, rule))
    return groups


def summarise(results: list[dict], rule) -> str:
    from porting.controls import CONTROLS

    small = {c.name: c.small for c in CONTROLS}
    groups = group_scores(results, rule)
    seeds = sorted(r["seed"] for r in results)
    lines = [f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}); rule: float32 port error <= {rule.factor:g} x "
             f"max(TF's own error, {rule.floor_ulps:g} eps32 x max|truth|); float64 |TF-PT| <= "
             f"{rule.rel64:g} x max(1, max|TF|). score = deciding figure / its bound (pass: <= 1).", "",
             "Correct port (worst score over the seeds; margin = 1 / score):",
             f"  {'case':<22} {'float32 worst':>13} {'needs factor':>12} {'float64 worst':>13}  all pass"]
    cases = sorted({k[0] for k in groups})
    false_alarms = 0
    for case in cases:
        s32 = groups.get((case, "correct", "float32"), [])
        s64 = groups.get((case, "correct", "float64"), [])
        fails = sum(s > 1 for s in s32 + s64)
        false_alarms += fails
        lines.append(f"  {case:<22} {max(s32):>13.3f} {max(s32) * rule.factor:>12.2f} "
                     f"{(max(s64) if s64 else float('nan')):>13.2e}  {'yes' if not fails else f'NO ({fails})'}")
    lines += ["", "Negative controls (smallest score over the seeds; caught on every seed when > 1):",
              f"  {'control':<30} {'case':<22} {'small':>5} {'float32 min':>11} {'caught':>9} "
              f"{'float64 min':>11} {'caught':>9}"]
    for c in CONTROLS:
        for case in cases:
            s32 = groups.get((case, c.name, "float32"))
            if not s32:
                continue
            s64 = groups.get((case, c.name, "float64"), [])
            n = len(s32)
            lines.append(f"  {c.name:<30} {case:<22} {'yes' if small[c.name] else '':>5} {min(s32):>11.3g} "
                         f"{sum(s > 1 for s in s32):>4}/{n:<4} {min(s64):>11.3g} {sum(s > 1 for s in s64):>4}/{n:<4}")
    lines.append("")
    lines.append(f"false alarms on the correct port: {false_alarms}")
    return "\n".join(lines)


def markdown(results: list[dict], rule) -> str:
    """The README's tables: the correct port per case, then one row per control over every case
    it applies to (smallest margin; caught on every seed in float32 / float64)."""
    from porting.controls import CONTROLS

    groups = group_scores(results, rule)
    n = len(results)
    lines = ["| case | largest ratio, port error / TF's own (float32) | margin to the factor | "
             "float64, largest (TF - PT) / bound | false alarms |", "| --- | --- | --- | --- | --- |"]
    for case in sorted({k[0] for k in groups}):
        s32, s64 = groups[(case, "correct", "float32")], groups.get((case, "correct", "float64"), [])
        lines.append(f"| {case} | {max(s32) * rule.factor:.2f} | {1 / max(s32):.1f}x | "
                     f"{(f'{max(s64):.1e}' if s64 else '-')} | {sum(x > 1 for x in s32 + s64)} / {n} |")
    lines += ["", "| control | small | cases | smallest margin, float32 | float32 catches it on every seed | "
              "smallest margin, float64 | float64 catches it on every seed |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in CONTROLS:
        cases = sorted({k[0] for k in groups if k[1] == c.name})
        s32 = [x for case in cases for x in groups[(case, c.name, "float32")]]
        s64 = [x for case in cases for x in groups.get((case, c.name, "float64"), [])]
        missed = [case for case in cases if min(groups[(case, c.name, "float32")]) <= 1]
        caught32 = "yes" if not missed else ("no" if len(missed) == len(cases) else f"no ({', '.join(missed)})")
        lines.append(f"| `{c.name}`: {c.what} | {'yes' if c.small else ''} | {', '.join(cases)} | "
                     f"{min(s32):.3g} | {caught32} | {min(s64):.3g} | {'yes' if min(s64) > 1 else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0-19", help="e.g. 0-19 or 3,5,8")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--channel-max", type=int, default=16, help="generator widths (doubled on odd seeds)")
    p.add_argument("--odd-size", type=int, default=97, help="the release classifier verified at this size too")
    p.add_argument("--classifier-size", type=int, default=256)
    p.add_argument("--num-images", type=int, default=8, help="inputs of the float32 runs (verify's default)")
    p.add_argument("--num-images64", type=int, default=4,
                   help="inputs of the float64 runs (float64 convolutions are slow on CPU; a wrong port is "
                        "off by orders of magnitude there)")
    p.add_argument("--out", default="runs/verdict_sweep", help="per-seed JSON files and summary.txt")
    p.add_argument("--keep", action="store_true", help="keep the releases and converted weights")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and TF threads of this process (default: all cores); two sweeps side by side "
                        "on disjoint --seeds with --threads 1 each finish sooner than one with 2")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--markdown", action="store_true", help="print the README's tables instead")
    p.add_argument("--factor", type=float, default=None, help="re-evaluate with this factor")
    p.add_argument("--floor-ulps", type=float, default=None, help="re-evaluate with this floor")
    args = p.parse_args(argv)

    from dataclasses import replace

    from tqdm import tqdm

    from porting.atomic import write_json
    from porting.verify import RULE

    if args.threads and not args.summary_only:
        import tensorflow as tf
        import torch

        torch.set_num_threads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    todo = [s for s in seeds if not (out / f"seed_{s}.json").exists()]
    if not args.summary_only:
        for seed in tqdm(todo, desc="releases", unit="seed"):
            res = run_seed(seed, out, args)
            write_json(out / f"seed_{seed}.json", res)
            tqdm.write(f"seed {seed}: {res['seconds']:.0f} s, "
                       f"{sum(not r['passed'] for r in res['rows'] if r['control'] == 'correct')} false alarms")
    results = [json.loads((out / f"seed_{s}.json").read_text()) for s in seeds if (out / f"seed_{s}.json").exists()]
    if not results:
        print("no results yet", file=sys.stderr)
        return 1
    rule = replace(RULE, **{k: v for k, v in (("factor", args.factor), ("floor_ulps", args.floor_ulps))
                             if v is not None})
    if args.markdown:
        print(markdown(results, rule))
        return 0
    text = summarise(results, rule)
    times = [r["seconds"] for r in results]
    text += f"\nseconds per seed: median {sorted(times)[len(times) // 2]:.0f}, total {sum(times):.0f}"
    print(text)
    (out / "summary.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
