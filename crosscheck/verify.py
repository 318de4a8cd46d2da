"""The TF half of ``verify``, and a release folder's verification.

``tf_reference`` computes everything on the TF side of one model's verification: the kind's
verify inputs (checked not to be degenerate), the reference model rebuilt from the checkpoint's
variables and traced in the run's dtype, for float32 runs the same rebuild traced in float64
(the truth), and the checkpoint's own SavedModel as the notebook loads it, which must compute
what the rebuild computes. ``porting.verify.judge_module`` then judges the PyTorch module
against it. ``verify_release`` does this for every model of a converted release folder, then the
encode-reconstruct round trip the notebook relies on (``round_trip``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import models_pt
from crosscheck import tf_side
from porting import kinds
from porting.errors import PortError
from porting.readers import open_checkpoint
from porting.verify import NUM_IMAGES, RULE, Reference, Report, Rule, judge, judge_module
from release_facts import RELEASE_STEMS


def tf_reference(ck, kind_name: str, config: dict, dtype: str = "float32", num_images: int = NUM_IMAGES,
                 size: int | None = None, seed: int = 0, dlatents: Path | None = None) -> Reference:
    """TF's side of a verification. ``dlatents``: the release's dlatents.pkl, the inputs of a
    model that takes dlatents (the generator)."""
    t0 = time.perf_counter()
    spec = kinds.get(kind_name).verify
    saved = tf_side.load_savedmodel(ck.root) if ck.root is not None else None
    native = tf_side.notebook_input_size(kind_name, saved) if saved is not None else None
    size = size or native or spec.default_size(config)
    inputs = spec.inputs(config, num_images, size, seed, dlatents)
    described = (f"{num_images} dlatents from {spec.input_source(dlatents)}, {size}px"
                 if spec.input_source is not None else f"{num_images} x {size}px")
    spec.check_inputs(inputs)
    variables = ck.read_all()
    tf = tf_side.trace(kind_name, tf_side.rebuild(kind_name, config, dtype, variables), inputs, dtype)
    truth, models = None, {"savedmodel": saved}
    if dtype == "float32":   # the float64 truth: the same rebuild, the same (float32) inputs
        models["float64"] = tf_side.rebuild(kind_name, config, "float64", variables)
        truth = tf_side.trace(kind_name, models["float64"], inputs, "float64")
    sm_out = None
    if saved is not None and dtype == "float32" and native in (None, size):  # its own dtype and size
        sm_out = np.asarray(tf_side.notebook_output(kind_name, saved, inputs))
    return Reference(kind_name, dtype, config, spec, inputs, size, tf, truth, str(ck.source), sm_out,
                     time.perf_counter() - t0, described, models)


def verify_checkpoint(ck, weights: Path, dtype: str = "float32", num_images: int = NUM_IMAGES,
                      size: int | None = None, seed: int = 0, rule: Rule = RULE,
                      dlatents: Path | None = None, tf_models: dict | None = None) -> Report:
    """Compare every activation of the TF reference and the PyTorch port on the same inputs.
    ``tf_models``: a dict that receives the TF models built on the way (``Reference.models``)."""
    header = models_pt.read_header(weights)
    ref = tf_reference(ck, header["kind"], header["config"], dtype, num_images, size, seed, dlatents)
    report = judge_module(ref, models_pt.load(weights), rule, str(weights))
    report.same_source = header.get("source_sha256") == ck.sha256()
    if tf_models is not None:
        tf_models.update(ref.models)
    return report


def verify_release(src: Path, weights_dir: Path, dtype: str = "float32", num_images: int = 8,
                   progress: bool = True) -> list:
    """Verify every model the manifest lists against its release zip; one Report per model."""
    from tqdm import tqdm

    if not (Path(weights_dir) / "manifest.json").exists():
        raise PortError(f"{weights_dir}: no manifest.json; convert the release folder first")
    manifest = models_pt.read_manifest(weights_dir)
    reports, tf_models = [], {}
    bar = tqdm(list(manifest["models"].items()), desc="verifying", unit="model", disable=not progress)
    for stem, entry in bar:
        bar.set_postfix_str(stem)
        tf_models[stem] = {}
        with open_checkpoint(Path(src) / entry["source"], build_keras=tf_side.build_keras) as ck:
            reports.append(verify_checkpoint(ck, Path(weights_dir) / entry["weights"], dtype, num_images,
                                             dlatents=Path(src) / "dlatents.pkl", tf_models=tf_models[stem]))
    if set(ROUND_TRIP.values()) <= set(manifest["models"]) and dtype == "float32":
        # the SavedModels and float64 rebuilds the per-model checks built: nothing is read or built twice
        reports.append(round_trip(Path(src), Path(weights_dir), manifest, num_images, tf_models))
    return reports


ROUND_TRIP_TOL = 1e-4  # the old fixed bar (float32, dlatents and reconstructions), reported
ROUND_TRIP = {kind: RELEASE_STEMS[kind] for kind in ("encoder", "classifier", "generator")}   # kind -> stem


def round_trip(src: Path, weights_dir: Path, manifest: dict, num_images: int = 8, tf_models: dict | None = None):
    """image -> encoder + classifier -> dlatent -> generator -> reconstruction, in TF (the
    SavedModels, loaded as the notebook loads them) and in PyTorch, judged against the same
    pipeline run in float64 by the TF rebuilds; a Report of two rows. ``tf_models``: stem ->
    ``{"savedmodel": ..., "float64": ...}`` already built (``verify_release``); built here if absent."""
    import torch

    from models_pt.pipeline import encode as pt_encode
    from models_tf.pipeline import encode as tf_encode
    from porting.kinds.classifier import check_inputs
    from porting.samples import sample_images

    t0 = time.perf_counter()
    tf32, tf64, pt_models = {}, {}, {}
    for name, stem in ROUND_TRIP.items():
        entry = manifest["models"][stem]
        path = Path(weights_dir) / entry["weights"]
        built = (tf_models or {}).get(stem) or {}
        if built.get("savedmodel") is not None and built.get("float64") is not None:
            tf32[name], tf64[name] = built["savedmodel"], built["float64"]
        else:
            header = models_pt.read_header(path)
            with open_checkpoint(Path(src) / entry["source"]) as ck:
                tf32[name] = tf_side.load_savedmodel(ck.root)
                tf64[name] = tf_side.rebuild(header["kind"], header["config"], "float64", ck.read_all())
        pt_models[name] = models_pt.load(path)
    size = pt_models["generator"].config["resolution"]
    images = sample_images(num_images, size, seed=3000, channels_last=False)
    check_inputs(images.transpose(0, 2, 3, 1))

    def tf_run(m, x):
        g = m["generator"]
        w = tf_encode(m["encoder"], m["classifier"], x).numpy()
        return w, np.clip(np.asarray(g.g_synthesis(g.style_vector_calculator(w, training=False),
                                                   training=False)), -1, 1)

    w_tf, recon_tf = tf_run(tf32, images)
    w_64, recon_64 = tf_run(tf64, images.astype(np.float64))
    with torch.no_grad():
        x = torch.from_numpy(images)
        w_pt = pt_encode(pt_models["encoder"], pt_models["classifier"], x)
        recon_pt = pt_models["generator"](w_pt).clamp(-1, 1).numpy()
    report = Report("round trip", "float32", str(src), str(weights_dir), f"{num_images} x {size}px",
                    ROUND_TRIP_TOL, ROUND_TRIP_TOL)
    report.layers = [judge("dlatent (encoder + classifier)", w_tf, w_pt.numpy(), w_64, abs_tol=ROUND_TRIP_TOL,
                           scale_free=True),
                     judge("reconstruction (generator)", recon_tf, recon_pt, recon_64, abs_tol=ROUND_TRIP_TOL,
                           scale_free=True)]
    report.seconds = round(time.perf_counter() - t0, 2)
    return report.finish()
