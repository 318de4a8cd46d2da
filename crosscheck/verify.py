"""The TF half of ``verify``, and a release folder's verification.

``tf_reference`` computes everything on the TF side of one model's verification: the kind's
verify inputs (checked not to be degenerate), the reference model rebuilt from the checkpoint's
variables and traced in float64 (the truth the port's float64 run must equal, and its float32
run is judged against) and in float32 (TF's own float32 error, reported), and the checkpoint's
own SavedModel as the notebook loads it, which must compute what the rebuild computes.
``porting.verdict.judge_module`` then judges the PyTorch module against it. ``verify_release``
does this for every model of a converted release folder, then the encode-reconstruct round trip
the notebook relies on (``round_trip``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import models_pt
from crosscheck import tf_side
from porting import graph_scan, kinds
from porting.errors import PortError
from porting.readers import open_checkpoint
from porting.verdict import NUM_IMAGES, RULE, Reference, Report, VerdictRule, judge_module, judged, port_runs
from models_pt.release_facts import DLATENTS_FILE, RELEASE_STEMS


def load_to_verify(path):
    """``models_pt.load``; a file whose sha256 is not its manifest's is verified as it is, with a
    warning (verify's own verdict is the stronger check)."""
    try:
        return models_pt.load(path)
    except models_pt.HashMismatchError as e:
        print(f"warning: {e}; verifying the file as it is", file=sys.stderr)
        return models_pt.load(path, check_hashes=False)


def tf_reference(ck, kind_name: str, config: dict, dtype: str = "float32", num_images: int = NUM_IMAGES,
                 size: int | None = None, seed: int = 0, dlatents: Path | None = None) -> Reference:
    """TF's side of a verification: the rebuild traced in float64 (the truth) and, unless
    ``dtype`` is float64, in float32, plus the SavedModel's float32 output. ``dlatents``: the
    release's dlatents.pkl, the inputs of a model that takes dlatents (the generator)."""
    t0 = time.perf_counter()
    spec = kinds.get(kind_name).verify
    saved = tf_side.load_savedmodel(ck) if ck.root is not None else None
    native = tf_side.notebook_input_size(kind_name, saved) if saved is not None else None
    size = size or native or spec.default_size(config)
    inputs = spec.inputs(config, num_images, size, seed, dlatents)
    described = (f"{num_images} dlatents from {spec.input_source(dlatents)}, {size}px"
                 if spec.input_source is not None else f"{num_images} x {size}px")
    spec.check_inputs(inputs)
    variables = ck.read_all()
    models = {"savedmodel": saved, "float64": tf_side.rebuild(kind_name, config, "float64", variables)}
    tf64 = tf_side.trace(kind_name, models["float64"], inputs, "float64")   # the float32 inputs' exact values
    tf32 = sm_out = None
    if dtype == "float32":
        tf32 = tf_side.trace(kind_name, tf_side.rebuild(kind_name, config, "float32", variables), inputs, "float32")
        if saved is not None and native in (None, size):  # the SavedModel at its own dtype and size
            sm_out = np.asarray(tf_side.notebook_output(kind_name, saved, inputs))
    return Reference(kind_name, dtype, config, spec, inputs, size, tf64, tf32, str(ck.source), sm_out,
                     time.perf_counter() - t0, described, {"tensorflow": tf_side.tf_kernels()}, models)


def verify_checkpoint(ck, weights: Path, dtype: str = "float32", num_images: int = NUM_IMAGES,
                      size: int | None = None, seed: int = 0, rule: VerdictRule = RULE,
                      dlatents: Path | None = None, tf_models: dict | None = None) -> Report:
    """Compare every activation of the TF reference and the PyTorch port on the same inputs.
    ``tf_models``: a dict that receives the TF models built on the way (``Reference.models``)."""
    header = models_pt.read_header(weights)
    ref = tf_reference(ck, header["kind"], header["config"], dtype, num_images, size, seed, dlatents)
    report = judge_module(ref, load_to_verify(weights), rule, str(weights))
    report.same_source = header.get("source_sha256") == ck.sha256()
    if tf_models is not None:
        tf_models.update(ref.models)
    return report


def verify_release(src: Path, weights_dir: Path, dtype: str = "float32", num_images: int = 8,
                   progress: bool = True, trust_graph: bool = False) -> list:
    """Verify every model the manifest lists against its release zip; one Report per model.
    Every zip's graph is scanned (``porting.graph_scan``) before any is loaded, unless
    ``trust_graph`` (``--trust-graph``)."""
    from tqdm import tqdm

    if not (Path(weights_dir) / "manifest.json").exists():
        raise PortError(f"{weights_dir}: no manifest.json; convert the release folder first")
    manifest = models_pt.read_manifest(weights_dir)
    if not trust_graph:
        for entry in manifest["models"].values():
            graph_scan.check(Path(src) / entry["source"])
    reports, tf_models = [], {}
    bar = tqdm(list(manifest["models"].items()), desc="verifying", unit="model", disable=not progress)
    for stem, entry in bar:
        bar.set_postfix_str(stem)
        tf_models[stem] = {}
        with open_checkpoint(Path(src) / entry["source"], build_keras=tf_side.build_keras,
                             trust_graph=trust_graph) as ck:
            reports.append(verify_checkpoint(ck, Path(weights_dir) / entry["weights"], dtype, num_images,
                                             dlatents=Path(src) / "dlatents.pkl", tf_models=tf_models[stem]))
    if set(ROUND_TRIP.values()) <= set(manifest["models"]):
        # the SavedModels and float64 rebuilds the per-model checks built: nothing is read or built twice
        reports.append(round_trip(Path(src), Path(weights_dir), manifest, num_images, tf_models, dtype=dtype))
    if set(EFFECTS.values()) <= set(manifest["models"]) and (Path(src) / DLATENTS_FILE).exists():
        reports.append(attfind_effects(Path(src), Path(weights_dir), manifest, tf_models, dtype=dtype))
    return reports


ROUND_TRIP = {kind: RELEASE_STEMS[kind] for kind in ("encoder", "classifier", "generator")}   # kind -> stem


def release_models(src: Path, weights_dir: Path, manifest: dict, wanted: dict, tf_models: dict | None = None,
                   modules: dict | None = None) -> tuple[dict, dict, dict]:
    """``(TF SavedModels, TF float64 rebuilds, PyTorch modules)`` by kind for ``wanted`` (kind ->
    stem): the ones ``verify_release`` already built (``tf_models``: stem -> ``{"savedmodel":
    ..., "float64": ...}``; ``modules``: kind -> module) reused, the rest built here, each
    checkpoint opened once."""
    tf32, tf64, pt = {}, {}, {}
    for name, stem in wanted.items():
        entry = manifest["models"][stem]
        path = Path(weights_dir) / entry["weights"]
        built = (tf_models or {}).get(stem) or {}
        if built.get("savedmodel") is None or built.get("float64") is None:
            header = models_pt.read_header(path)
            with open_checkpoint(Path(src) / entry["source"]) as ck:
                built = {"savedmodel": tf_side.load_savedmodel(ck),
                         "float64": tf_side.rebuild(header["kind"], header["config"], "float64", ck.read_all())}
        tf32[name], tf64[name] = built["savedmodel"], built["float64"]
        pt[name] = (modules or {}).get(name) or load_to_verify(path)
    return tf32, tf64, pt


def round_trip(src: Path, weights_dir: Path, manifest: dict, num_images: int = 8, tf_models: dict | None = None,
               rule: VerdictRule = RULE, samples: int | None = None, dtype: str = "float32") -> Report:
    """image -> encoder + classifier -> dlatent -> generator -> reconstruction: the TF rebuilds in
    float64 (the truth) against the PyTorch modules in float64 (exact?), and PyTorch in float32
    against the rounding model's bound, with TF's SavedModels (loaded as the notebook loads them)
    in float32 for information; a Report of two rows. ``tf_models``: stem -> ``{"savedmodel":
    ..., "float64": ...}`` already built (``verify_release``); built here if absent.
    ``dtype="float64"``: the float64 verdict alone."""
    import torch

    from models_pt.pipeline import encode as pt_encode
    from models_tf.pipeline import encode as tf_encode
    from porting.kinds.classifier import check_inputs
    from porting.samples import sample_images

    t0 = time.perf_counter()
    tf32, tf64, pt32 = release_models(src, weights_dir, manifest, ROUND_TRIP, tf_models)
    size = pt32["generator"].config["resolution"]
    images = sample_images(num_images, size, seed=3000, channels_last=False)
    check_inputs(images.transpose(0, 2, 3, 1))

    def tf_run(m, x):
        g = m["generator"]
        w = tf_encode(m["encoder"], m["classifier"], x).numpy()
        return {"dlatent": w, "reconstruction": np.clip(np.asarray(
            g.g_synthesis(g.style_vector_calculator(w, training=False), training=False)), -1, 1)}

    def pt_run(m, x):
        with torch.no_grad():
            w = pt_encode(m["encoder"], m["classifier"], torch.from_numpy(x))
            return {"dlatent": w.numpy(), "reconstruction": m["generator"](w).clamp(-1, 1).numpy()}

    x64 = np.ascontiguousarray(images, np.float64)
    labels = {"dlatent": "dlatent (encoder + classifier)", "reconstruction": "reconstruction (generator)"}

    def named(out):
        return {labels[k]: v for k, v in out.items()}

    truth = named(tf_run(tf64, images.astype(np.float64)))
    tf_out = named(tf_run(tf32, images)) if dtype == "float32" else None
    runs = port_runs(pt32, lambda m, d: named(pt_run(m, x64 if d == "float64" else images)), dtype, samples=samples)
    report = judged("round trip", truth, runs, tf32=tf_out, rule=rule, source=str(src), weights=str(weights_dir),
                    described=f"{num_images} x {size}px", tf_kernels={"tensorflow": tf_side.tf_kernels()})
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


EFFECTS = {kind: RELEASE_STEMS[kind] for kind in ("generator", "classifier")}   # kind -> stem
EFFECTS_IMAGES, EFFECTS_COORDINATES = 2, 16


def attfind_effects(src: Path, weights_dir: Path, manifest: dict, tf_models: dict | None = None,
                    images: int = EFFECTS_IMAGES, coordinates: int = EFFECTS_COORDINATES, rule: VerdictRule = RULE,
                    samples: int | None = None, dtype: str = "float32", modules: dict | None = None) -> Report:
    """AttFind's effects (base logits, and the change of the logits when one StyleSpace
    coordinate moves by AttFind's shift) as the two backends compute them: the TF backend as the
    notebook does it (the style bias shifted with ``assign_add``) on the float64 rebuilds, the
    truth, against the PyTorch backend in float64 (exact?); then PyTorch's float32 backend as
    ``attfind`` runs it, against the rounding model's bound, and the TF backend on the SavedModels
    in float32 for information. ``images`` dlatents of the release's ``dlatents.pkl`` (style ranges
    from all of them), ``coordinates`` spread over StyleSpace."""
    import torch

    from attfind import truth as effects_truth
    from attfind.effects_pt import TorchEffects
    from attfind.effects_tf import TFEffects
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    t0 = time.perf_counter()
    dlatents = dlatent_matrix(load_dlatents(Path(src) / DLATENTS_FILE))
    tf32, tf64, pt = release_models(src, weights_dir, manifest, EFFECTS, tf_models, modules)
    g, c = pt["generator"], pt["classifier"]
    which = list(range(min(images, len(dlatents))))
    coords = effects_truth.truth_coordinates(len(g.space), coordinates)
    shift = 1.0

    def effects(backend):
        # every coordinate's slot, the ones left out exact zeros on every side (they change no maximum)
        base, shifted = effects_truth.effects_of(backend, dlatents, which, shift, coords)
        return {"base logits": base, "effects": shifted}

    def forward(m, d):       # float64: the readable classifier, as attfind.truth's float64 backend
        return effects(TorchEffects(m["generator"], m["classifier"], optimize=False, dtype=torch.float64)
                       if d == "float64" else TorchEffects(m["generator"], m["classifier"]))

    # under tf.function: the notebook's eager loop computes the same numbers (a test checks it), 3x slower
    truth = effects(TFEffects(tf64["generator"], tf64["classifier"], compiled=True, dtype=np.float64))
    tf_out = effects(TFEffects(tf32["generator"], tf32["classifier"], compiled=True)) if dtype == "float32" else None
    # the effects are judged as AttFind computes them, on the kernels the machine picks
    runs = port_runs({"generator": g, "classifier": c}, forward, dtype, samples=samples, summing=False)
    report = judged("attfind effects", truth, runs, tf32=tf_out, rule=rule, source=str(src), weights=str(weights_dir),
                    described=f"{len(which)} dlatents x {len(coords)} coordinates x 2 directions",
                    tf_kernels={"tensorflow": tf_side.tf_kernels()})
    report.seconds = round(time.perf_counter() - t0, 2)
    return report
