"""Is verify's verdict right on weights nobody tuned it on, and on kernels we did not pick?

A sweep over many reference releases and a matrix of kernel choices on one machine. Per seed:

**Stage A** (one process, the machine's default kernels): ``make-reference --seed S`` (no
AttFind sweep), ``convert`` the folder, then for every case the float64 side, which no kernel
choice moves: TF's float64 run (the truth), the port's float64 run and every structural
control's (the exactness verdict), the rounding model's float32 errors (``porting.rounding``),
and the ONNX files (onnxruntime with its graph optimisations on and off, and the float64 export
evaluated by ``onnx.reference``). Saved to ``<out>/work_<S>/``.

**Stage B** (one process per kernel setting, each started with its own environment, since
``TF_ENABLE_ONEDNN_OPTS`` and ``ONEDNN_MAX_CPU_ISA`` are read when the libraries load): the
float32 runs. TF's rebuild and its SavedModel in float32 (a TF kernel cell: Eigen, or oneDNN at
the default or at a capped ISA), and the port and every control in float32 (a PyTorch kernel
cell: oneDNN at the default, AVX2 or SSE4.1 ISA, or without oneDNN), each judged against the
stage-A truth and bound. A verdict of the matrix cell (TF kernels t, PyTorch kernels p) is the
TF rows of t with the PyTorch rows of p; TF's and PyTorch's float32 runs do not depend on each
other's switches, so each is measured once.

Cases per seed: the release's four models at ``--resolution`` (generator widths alternate
between ``--channel-max`` and twice that across seeds), the encode-reconstruct round trip, the
release's classifier at an odd input size (``--odd-size``), and a classifier seeded at 256 px
(``--classifier-size``). Every layer's figures are stored (``<out>/seed_<S>.json``, written
atomically; a rerun skips what is done), so the summary can be re-scored for any rule:

    .venv/bin/python bench/verdict_sweep.py --seeds 0-19                  # run (or resume) and summarise
    .venv/bin/python bench/verdict_sweep.py --seeds 0-19 --summary-only --factor 3 --floor-ulps 1
    .venv/bin/python bench/verdict_sweep.py --seeds 0-19 --summary-only --markdown

Threads: stage A uses ``--threads`` (default 2), the stage-B processes run ``--jobs`` at a time
with ``--cell-threads`` each (default 2 and 1: the thread count is one more kernel choice,
since oneDNN splits its sums by thread).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Stage-B processes: name -> (environment, its TF cell or None, its PyTorch cells). A PyTorch
# cell is (name, oneDNN on). TF's oneDNN reads ONEDNN_MAX_CPU_ISA too (Eigen does not), and no
# process repeats another's TF or PyTorch cell. "default" is the best ISA the CPU has (on an
# AVX-512 machine, AVX2 is a cell of its own; on an AVX2 machine it repeats the default).
PROCESSES = {
    "eigen+onednn":      ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "tf-eigen", [("pt-onednn", True), ("pt-no-onednn", False)]),
    "tf-onednn":         ({"TF_ENABLE_ONEDNN_OPTS": "1"}, "tf-onednn", []),
    "avx2":              ({"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "tf-onednn-avx2",
                          [("pt-onednn-avx2", True)]),
    "sse41":             ({"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41"}, "tf-onednn-sse41",
                          [("pt-onednn-sse41", True)]),
}
ORT_CELLS = ("all", "none")          # onnxruntime's graph optimisation level, in stage A


def parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def _set_threads(n: int | None) -> None:
    if not n:
        return
    import tensorflow as tf
    import torch

    torch.set_num_threads(n)
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def _max_abs(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _peak(a) -> float:
    import numpy as np

    a = np.asarray(a)
    return float(np.max(np.abs(a))) if a.size else 0.0


# ----------------------------------------------------------------- stage A: the float64 side

def cases_of(seed: int, work: Path, args) -> list[dict]:
    """The release, converted, plus the 256 px classifier: one dict per case."""
    from crosscheck.reference_release import make_reference, save_savedmodel_zip, seeded_classifier
    from models_tf.classifier import default_config
    from porting.convert import convert_path
    from porting.release import convert_release

    src, weights = work / "release", work / "weights"
    channel_max = args.channel_max * (2 if seed % 2 else 1)
    make_reference(src, seed=seed, resolution=args.resolution, num_dlatents=16, channel_max=channel_max,
                   attfind=False)
    conversion = convert_release(src, weights, progress=False)
    cases = [{"case": f"{e['kind']}@{args.resolution}", "zip": str(src / e["source"]),
              "weights": str(weights / e["weights"]), "size": None} for e in conversion.models.values()]
    cases.append({"case": f"classifier@{args.odd_size}", "zip": str(src / "mobilenet.savedmodel.zip"),
                  "weights": str(weights / "mobilenet.safetensors"), "size": args.odd_size})
    s = args.classifier_size
    clf = seeded_classifier(default_config(s), seed=seed)
    zip_path = save_savedmodel_zip(clf, work / f"mobilenet_{s}.savedmodel.zip", "mobilenet.savedmodel")
    out, _ = convert_path(zip_path, work / f"mobilenet_{s}.safetensors")
    # its graph is the release classifier's at another size: onnx.reference's float64 depthwise
    # convolutions are slow at 64 px and more, so its float64 ONNX check is the @resolution one's
    cases.append({"case": f"classifier@{s}", "zip": str(zip_path), "weights": str(out), "size": None,
                  "onnx64": False})
    return cases


def stage_a(seed: int, work: Path, args) -> dict:
    import copy

    import numpy as np
    import torch

    import models_pt
    from crosscheck.verify import tf_reference
    from porting import controls
    from porting.readers import open_checkpoint
    from porting.verdict import float64_inputs

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    cases = cases_of(seed, work, args)
    from porting import rounding

    meta = {"seed": seed, "cases": [], "seconds": {},
            "rounding": {"samples": rounding.SAMPLES, "small_z": getattr(rounding, "SMALL_Z", None)}}
    for i, case in enumerate(cases):
        t1 = time.perf_counter()
        header = models_pt.read_header(case["weights"])
        module = models_pt.load(case["weights"])
        with open_checkpoint(Path(case["zip"])) as ck:
            ref = tf_reference(ck, header["kind"], header["config"], "float64", args.num_images, case["size"],
                               dlatents=Path(case["zip"]).parent / "dlatents.pkl")
        spec = ref.spec
        m64 = copy.deepcopy(module).to(torch.float64)
        x64 = float64_inputs(ref.inputs)
        got64, errors = rounding.simulate(lambda: spec.trace(m64, x64, "float64"), rounding.SAMPLES)
        labels = list(ref.tf64)
        float64 = {"correct": [[lab, _max_abs(ref.tf64[lab], got64[lab]), _peak(ref.tf64[lab])] for lab in labels]}
        x4 = tuple(a[:args.num_images64] for a in ref.inputs) if isinstance(ref.inputs, tuple) \
            else ref.inputs[:args.num_images64]
        for control in controls.for_kind(module.kind, ref.size):
            if control.float32_only:
                continue          # its float64 run is the correct port's, by construction
            with controls.broken(control, module) as twin:
                t64 = spec.trace(copy.deepcopy(twin).to(torch.float64), float64_inputs(x4), "float64")
            float64[control.name] = [[lab, _max_abs(ref.tf64[lab][:args.num_images64], t64[lab]),
                                      _peak(ref.tf64[lab][:args.num_images64])] for lab in labels]
        np.savez(work / f"case_{i}.npz", **{f"in{k}": a for k, a in enumerate(
            ref.inputs if isinstance(ref.inputs, tuple) else (ref.inputs,))},
            **{f"truth/{lab}": ref.tf64[lab] for lab in labels})
        entry = {**case, "kind": header["kind"], "config": header["config"], "input_size": ref.size,
                 "labels": labels, "model_error": errors, "float64": float64,
                 "tuple_inputs": isinstance(ref.inputs, tuple),
                 "onnx": onnx_stage_a(case, module, ref, ref.tf64, errors, work, i)}
        meta["cases"].append(entry)
        meta["seconds"][case["case"]] = round(time.perf_counter() - t1, 1)
    t1 = time.perf_counter()
    meta["round_trip"] = round_trip_stage_a(work)
    meta["seconds"]["round trip"] = round(time.perf_counter() - t1, 1)
    meta["seconds"]["stage A"] = round(time.perf_counter() - t0, 1)
    (work / "stage_a.json").write_text(json.dumps(meta))
    return meta


def onnx_stage_a(case: dict, module, ref, truth: dict, errors: dict, work: Path, i: int) -> dict | None:
    """The port exported to ONNX, run by onnxruntime with each optimisation level on the case's
    inputs and judged against TF's float64 run (rows as stage B's); the float64 export of the
    same module evaluated by ``onnx.reference`` on the first two (its NumPy convolutions are slow),
    against the port in float64."""
    if case["size"] is not None:       # the odd-size classifier: its ONNX file is the @64 one's
        return None
    import copy
    import tempfile

    import torch

    from porting import kinds
    from porting.onnx_export import (_float32_slope, evaluate_float64, export, float64_twin, onnx_feed,
                                     ort_kernels, run_onnx, same_graph)

    size = ref.size if kinds.get(module.kind).onnx.size_fixed else None
    path = export(module, work / f"case_{i}.onnx", size)
    last = list(truth)[-1]
    feed = onnx_feed(module, ref.inputs)
    out = {}
    for level in ORT_CELLS:
        got = run_onnx(path, feed, level).reshape(truth[last].shape)
        out[f"ort-{level}"] = {"rows": [[last, _max_abs(got, truth[last]), errors[last], _peak(truth[last])]],
                               "kernels": ort_kernels(level)}
    if not case.get("onnx64", True):
        return out
    module64 = copy.deepcopy(module).to(torch.float64)
    x4 = tuple(a[:2] for a in ref.inputs) if isinstance(ref.inputs, tuple) else ref.inputs[:2]
    with tempfile.TemporaryDirectory() as tmp:
        twin = float64_twin(module, size, Path(tmp) / "float64.onnx")
        same = same_graph(path, twin)
        got64 = evaluate_float64(twin, onnx_feed(module64, x4))
    with _float32_slope():
        want = list(ref.spec.trace(module64, x4, "float64").values())[-1]
    out["float64"] = {"rows": [[last, _max_abs(got64.reshape(want.shape), want), _peak(want)]], "same_graph": same}
    return out


def round_trip_stage_a(work: Path) -> dict:
    import copy

    import numpy as np
    import torch

    import models_pt
    from crosscheck import tf_side
    from crosscheck.verify import ROUND_TRIP
    from models_tf.pipeline import encode as tf_encode
    from porting import rounding
    from porting.readers import open_checkpoint
    from porting.samples import sample_images

    weights = work / "weights"
    manifest = models_pt.read_manifest(weights)
    tf64, pt64 = {}, {}
    for name, stem in ROUND_TRIP.items():
        entry = manifest["models"][stem]
        header = models_pt.read_header(weights / entry["weights"])
        with open_checkpoint(work / "release" / entry["source"]) as ck:
            tf64[name] = tf_side.rebuild(header["kind"], header["config"], "float64", ck.read_all())
        pt64[name] = copy.deepcopy(models_pt.load(weights / entry["weights"])).to(torch.float64)
    size = pt64["generator"].config["resolution"]
    images = sample_images(8, size, seed=3000, channels_last=False)
    g = tf64["generator"]
    w = tf_encode(tf64["encoder"], tf64["classifier"], images.astype(np.float64)).numpy()
    truth = {"dlatent": w, "reconstruction": np.clip(np.asarray(g.g_synthesis(
        g.style_vector_calculator(w, training=False), training=False)), -1, 1)}
    got64, errors = rounding.simulate(lambda: pt_pipeline(pt64, np.ascontiguousarray(images, np.float64)))
    np.savez(work / "round_trip.npz", images=images, **{f"truth/{k}": v for k, v in truth.items()})
    return {"model_error": errors, "float64": [[k, _max_abs(truth[k], got64[k]), _peak(truth[k])] for k in truth]}


def pt_pipeline(models: dict, x) -> dict:
    import torch

    from models_pt.pipeline import encode

    with torch.no_grad():
        w = encode(models["encoder"], models["classifier"], torch.from_numpy(x))
        return {"dlatent": w.numpy(), "reconstruction": models["generator"](w).clamp(-1, 1).numpy()}


# ----------------------------------------------------------------- stage B: the float32 side

def stage_b(seed: int, work: Path, process: str) -> dict:
    """TF's float32 runs (this process's TF cell) and the port's and every control's (each
    PyTorch cell of this process), judged per layer: [label, error, model error, max|truth|]."""
    import numpy as np
    import torch

    import models_pt
    from crosscheck import tf_side
    from porting import controls, kernels, kinds
    from porting.readers import open_checkpoint

    meta = json.loads((work / "stage_a.json").read_text())
    _, tf_cell, pt_cells = PROCESSES[process]
    out = {"seed": seed, "process": process, "tf_cell": tf_cell, "tf": {}, "pt": {c: {} for c, _ in pt_cells},
           "kernels": {"tensorflow": tf_side.tf_kernels()}}
    t0 = time.perf_counter()
    for i, case in enumerate(meta["cases"]):
        with np.load(work / f"case_{i}.npz") as z:
            arrays = {k: z[k] for k in z.files}
        inputs = tuple(arrays[f"in{k}"] for k in range(2)) if case["tuple_inputs"] else arrays["in0"]
        truth = {lab: arrays[f"truth/{lab}"] for lab in case["labels"]}
        err = case["model_error"]
        spec = kinds.get(case["kind"]).verify

        def rows(trace):
            return [[lab, _max_abs(trace[lab], truth[lab]), err[lab], _peak(truth[lab])] for lab in case["labels"]]

        if tf_cell is not None:
            with open_checkpoint(Path(case["zip"])) as ck:
                tf32 = tf_side.trace(case["kind"], tf_side.rebuild(case["kind"], case["config"], "float32",
                                                                   ck.read_all()), inputs, "float32")
                saved = tf_side.load_savedmodel(ck)
                native = tf_side.notebook_input_size(case["kind"], saved)
                sm = None
                if native in (None, case["input_size"]):
                    sm = np.asarray(tf_side.notebook_output(case["kind"], saved, inputs))
            last = case["labels"][-1]
            out["tf"][case["case"]] = {"rebuild": rows(tf32), "savedmodel": None if sm is None else
                                       [[last, _max_abs(sm.reshape(truth[last].shape), truth[last]), err[last],
                                         _peak(truth[last])]]}
        module = models_pt.load(case["weights"])
        for cell, onednn in pt_cells:
            with torch.backends.mkldnn.flags(enabled=onednn), kernels.summing_kernels():   # as verify runs it
                by_control = {"correct": rows(spec.trace(module, inputs, "float32"))}
                for control in controls.for_kind(module.kind, case["input_size"]):
                    with controls.broken(control, module) as twin:
                        by_control[control.name] = rows(spec.trace(twin, inputs, "float32"))
                out["pt"][cell][case["case"]] = by_control
                out["kernels"][cell] = kernels.torch_kernels()
    rt = meta["round_trip"]
    with np.load(work / "round_trip.npz") as z:
        images, truth = z["images"], {k: z[f"truth/{k}"] for k in ("dlatent", "reconstruction")}
    manifest = models_pt.read_manifest(work / "weights")
    from crosscheck.verify import ROUND_TRIP
    from models_tf.pipeline import encode as tf_encode

    pt32, saved = {}, {}
    for name, stem in ROUND_TRIP.items():
        entry = manifest["models"][stem]
        pt32[name] = models_pt.load(work / "weights" / entry["weights"])
        if tf_cell is not None:
            with open_checkpoint(work / "release" / entry["source"]) as ck:
                saved[name] = tf_side.load_savedmodel(ck)
    if tf_cell is not None:
        g = saved["generator"]
        w = tf_encode(saved["encoder"], saved["classifier"], images).numpy()
        tf_rt = {"dlatent": w, "reconstruction": np.clip(np.asarray(g.g_synthesis(g.style_vector_calculator(
            w, training=False), training=False)), -1, 1)}
        out["tf"]["round trip"] = {"savedmodel": [[k, _max_abs(tf_rt[k], truth[k]), rt["model_error"][k],
                                                   _peak(truth[k])] for k in truth], "rebuild": None}
    for cell, onednn in pt_cells:
        with torch.backends.mkldnn.flags(enabled=onednn), kernels.summing_kernels():
            got = pt_pipeline(pt32, images)
        out["pt"][cell]["round trip"] = {"correct": [[k, _max_abs(got[k], truth[k]), rt["model_error"][k],
                                                      _peak(truth[k])] for k in truth]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# ----------------------------------------------------------------- the driver

def run_seed(seed: int, out: Path, args) -> None:
    from porting.atomic import write_json

    work = out / f"work_{seed}"
    env_base = {**os.environ, "PYTHONUNBUFFERED": "1"}
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--resolution", str(args.resolution), "--channel-max", str(args.channel_max), "--odd-size",
              str(args.odd_size), "--classifier-size", str(args.classifier_size), "--num-images",
              str(args.num_images), "--num-images64", str(args.num_images64), "--out", str(out)]
    if not (work / "stage_a.json").exists():
        if work.exists():
            shutil.rmtree(work)
        subprocess.run(me + ["--stage", "a", "--seeds", str(seed), "--threads", str(args.threads)] + common,
                       env=env_base, check=True)
    todo = [p for p in args.processes if not (work / f"stage_b_{p}.json").exists()]
    running = []
    for p in todo:
        env = {**env_base, **PROCESSES[p][0]}
        cmd = me + ["--stage", "b", "--seeds", str(seed), "--process", p, "--threads", str(args.cell_threads)] + common
        running.append((p, subprocess.Popen(cmd, env=env)))
        while len(running) >= args.jobs:
            running = _reap(running)
    while running:
        running = _reap(running)
    meta = json.loads((work / "stage_a.json").read_text())
    result = {"seed": seed, "resolution": args.resolution, "channel_max": args.channel_max * (2 if seed % 2 else 1),
              "num_images": args.num_images, "num_images64": args.num_images64, "stage_a": meta,
              "stage_b": {p: json.loads((work / f"stage_b_{p}.json").read_text()) for p in args.processes}}
    result["seconds"] = round(meta["seconds"]["stage A"] + sum(b["seconds"] for b in result["stage_b"].values()), 1)
    write_json(out / f"seed_{seed}.json", result)
    if not args.keep:
        shutil.rmtree(work)


def _reap(running):
    time.sleep(1)
    left = []
    for p, proc in running:
        code = proc.poll()
        if code is None:
            left.append((p, proc))
        elif code != 0:
            raise SystemExit(f"stage B {p} failed with exit code {code}")
    return left


# ----------------------------------------------------------------- summary

def score32(rows, rule) -> float:
    return max((err / rule.bound32(model, peak) if rule.bound32(model, peak) else float("inf"))
               if err else 0.0 for _, err, model, peak in rows)


def score64(rows, rule) -> float:
    return max(d / rule.bound64(peak) for _, d, peak in rows)


def collect(results: list[dict], rule) -> dict:
    """Scores by key: ("pt", cell, case, control) -> [float32 score per seed];
    ("f64", case, control) -> [float64 score per seed]; ("tf", cell, case, what) -> [...];
    ("ort", level, case, what) -> [...]."""
    got: dict[tuple, list[float]] = {}

    def add(key, value):
        got.setdefault(key, []).append(value)

    for res in results:
        a = res["stage_a"]
        for case in a["cases"]:
            name = case["case"]
            for control, rows in case["float64"].items():
                add(("f64", name, control), score64(rows, rule))
            onnx = case["onnx"] or {}
            for level, c in onnx.items():
                if level == "float64":
                    add(("ort", "float64", name, "score64"), score64(c["rows"], rule) if c["same_graph"] else float("inf"))
                else:
                    add(("ort", level, name, "score"), score32(c["rows"], rule))
        add(("f64", "round trip", "correct"), score64(a["round_trip"]["float64"], rule))
        for proc, b in res["stage_b"].items():
            for name, sides in b["tf"].items():
                for what, rows in sides.items():
                    if rows:
                        add(("tf", b["tf_cell"], name, what), score32(rows, rule))
            for cell, by_case in b["pt"].items():
                for name, by_control in by_case.items():
                    for control, rows in by_control.items():
                        add(("pt", cell, name, control), score32(rows, rule))
    return got


def summarise(results: list[dict], rule, markdown: bool = False) -> str:
    from porting.controls import CONTROLS

    got = collect(results, rule)
    seeds = sorted(r["seed"] for r in results)
    pt_cells = sorted({k[1] for k in got if k[0] == "pt"})
    tf_cells = sorted({k[1] for k in got if k[0] == "tf"})
    cases = sorted({k[2] for k in got if k[0] == "pt"})
    bar = "|" if markdown else " "
    lines = [f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}). Rule: float64 |TF-PT| <= {rule.rel64:g} x max(1, max|TF|); "
             f"float32 error <= {rule.factor:g} x max(rounding model's error, {rule.floor_ulps:g} ulp of max|truth|). "
             "score = deciding figure / its bound (pass: <= 1).", ""]

    def table(head, rows):
        if markdown:
            return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + \
                   ["| " + " | ".join(r) + " |" for r in rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        return ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head] + rows]

    # the correct port, per PyTorch cell: worst float32 score over seeds, and the float64 one
    head = ["case", "float64 worst"] + pt_cells + ["false alarms"]
    rows = []
    alarms = 0
    for case in cases:
        s64 = got.get(("f64", case, "correct"), [])
        row = [case, f"{max(s64):.1e}" if s64 else "-"]
        fails = sum(s > 1 for s in s64)
        for cell in pt_cells:
            s = got.get(("pt", cell, case, "correct"), [])
            row.append(f"{max(s):.2f}" if s else "-")
            fails += sum(x > 1 for x in s)
        alarms += fails
        rows.append(row + [str(fails)])
    lines += ["The correct port: float64 worst score, and float32 worst score per PyTorch kernel cell "
              "(over the seeds; margin = 1 / score):"] + table(head, rows) + [""]
    # TF's own float32 runs against the same bound, per TF cell
    head = ["case"] + [f"{c} rebuild" for c in tf_cells] + [f"{c} SavedModel" for c in tf_cells]
    rows = []
    for case in sorted({k[2] for k in got if k[0] == "tf"}):
        row = [case]
        for what in ("rebuild", "savedmodel"):
            for cell in tf_cells:
                s = got.get(("tf", cell, case, what), [])
                row.append(f"{max(s):.2f}" if s else "-")
        rows.append(row)
    lines += ["TF's own float32 runs against the same bound (worst score over the seeds; the SavedModel rows "
              "are part of the verdict, the rebuild's are information):"] + table(head, rows) + [""]
    # onnxruntime
    ort_cases = sorted({k[2] for k in got if k[0] == "ort"})
    if ort_cases:
        rows = [[case, f"{max(got[('ort', 'float64', case, 'score64')]):.1e}"]
                + [f"{max(got[('ort', f'ort-{lv}', case, 'score')]):.2f}" for lv in ORT_CELLS] for case in ort_cases]
        lines += ["ONNX (worst score over the seeds): the float64 export in onnx.reference against the port in "
                  "float64, and onnxruntime's float32 run against TF's float64 run and the bound, per graph "
                  "optimisation level:"] + \
            table(["case", "float64"] + [f"onnxruntime {lv}" for lv in ORT_CELLS], rows) + [""]
    # controls: caught in every seed and cell? smallest float32 margin per cell, float64 margin
    head = ["control", "small", "float64 min", "caught by float64"] + [f"{c} min" for c in pt_cells] + \
        ["caught in every cell"]
    rows = []
    for c in CONTROLS:
        cs = sorted({k[2] for k in got if k[0] == "pt" and k[3] == c.name})
        if not cs:
            continue
        s64 = [x for case in cs for x in got.get(("f64", case, c.name), [])]
        row = [c.name, "yes" if c.small else "", f"{min(s64):.3g}" if s64 else "-",
               ("yes" if s64 and min(s64) > 1 else ("no" if s64 else "n/a (float32 only)"))]
        every = True
        for cell in pt_cells:
            s32 = [x for case in cs for x in got.get(("pt", cell, case, c.name), [])]
            row.append(f"{min(s32):.3g}")
            for case in cs:   # caught on a seed: float64 or float32 over its bound
                f32 = got.get(("pt", cell, case, c.name), [])
                f64 = got.get(("f64", case, c.name), [None] * len(f32))
                every &= all((a is not None and a > 1) or b > 1 for a, b in zip(f64, f32))
        rows.append(row + ["yes" if every else "NO"])
    lines += ["Negative controls (smallest score over every case and seed; caught when > 1 in float64 or "
              "float32):"] + table(head, rows) + ["", f"false alarms on the correct port: {alarms}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0-19", help="e.g. 0-19 or 3,5,8")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--channel-max", type=int, default=16, help="generator widths (doubled on odd seeds)")
    p.add_argument("--odd-size", type=int, default=97, help="the release classifier verified at this size too")
    p.add_argument("--classifier-size", type=int, default=256)
    p.add_argument("--num-images", type=int, default=8, help="inputs per case (verify's default)")
    p.add_argument("--num-images64", type=int, default=4,
                   help="inputs of the controls' float64 runs (a wrong port is off by orders of magnitude there)")
    p.add_argument("--out", default="runs/verdict_sweep", help="per-seed JSON files and summary.txt")
    p.add_argument("--processes", default=",".join(PROCESSES), help=f"stage-B processes ({', '.join(PROCESSES)})")
    p.add_argument("--jobs", type=int, default=2, help="stage-B processes at a time")
    p.add_argument("--threads", type=int, default=2, help="torch and TF threads of stage A")
    p.add_argument("--cell-threads", type=int, default=1, help="torch and TF threads of each stage-B process")
    p.add_argument("--keep", action="store_true", help="keep each seed's work folder (releases, arrays)")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--markdown", action="store_true", help="print the docs' tables")
    p.add_argument("--factor", type=float, default=None, help="re-score with this factor")
    p.add_argument("--floor-ulps", type=float, default=None, help="re-score with this floor")
    p.add_argument("--stage", choices=("a", "b"), help=argparse.SUPPRESS)
    p.add_argument("--process", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.processes = [x for x in args.processes.split(",") if x]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)

    if args.stage:
        from porting.atomic import write_json

        _set_threads(args.threads)
        seed = seeds[0]
        work = out / f"work_{seed}"
        if args.stage == "a":
            stage_a(seed, work, args)
        else:
            write_json(work / f"stage_b_{args.process}.json", stage_b(seed, work, args.process))
        return 0

    from dataclasses import replace

    from tqdm import tqdm

    from porting.verdict import RULE

    if not args.summary_only:
        todo = [s for s in seeds if not (out / f"seed_{s}.json").exists()]
        for seed in tqdm(todo, desc="releases", unit="seed"):
            t0 = time.perf_counter()
            run_seed(seed, out, args)
            tqdm.write(f"seed {seed}: {time.perf_counter() - t0:.0f} s")
    results = [json.loads((out / f"seed_{s}.json").read_text()) for s in seeds if (out / f"seed_{s}.json").exists()]
    if not results:
        print("no results yet", file=sys.stderr)
        return 1
    rule = replace(RULE, **{k: v for k, v in (("factor", args.factor), ("floor_ulps", args.floor_ulps))
                             if v is not None})
    text = summarise(results, rule, markdown=args.markdown)
    times = [r["seconds"] for r in results]
    text += f"\nseconds per seed (stage A + every stage B): median {sorted(times)[len(times) // 2]:.0f}, total {sum(times):.0f}"
    print(text)
    if not args.markdown:
        (out / "summary.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
