"""A whole release folder: find its models, convert each, write a manifest.

A release folder holds ``<stem>.savedmodel.zip`` for stem in ``RELEASE_STEMS`` (plus
``dlatents.pkl`` and ``examples_1.tfrecord``, which are data, not models). Each zip's model kind
is detected from its variables, never trusted from its file name: a zip of the wrong model under
a released name is reported, not converted into the wrong slot.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from porting.atomic import write_json
from porting.readers import sha256_path

# File stem in the release -> model kind, in the order they are converted.
RELEASE_STEMS = {"generator": "generator", "encoder": "encoder", "discriminator": "discriminator",
                 "mobilenet": "classifier"}


def is_release_folder(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and not (path / "saved_model.pb").exists() and any(path.glob("*.savedmodel.zip"))


@dataclass
class ReleaseConversion:
    out_dir: Path
    models: dict[str, dict] = field(default_factory=dict)     # stem -> manifest entry
    missing: list[str] = field(default_factory=list)          # released stems not found
    failed: dict[str, str] = field(default_factory=dict)      # stem -> error message


def convert_release(src: Path, out_dir: Path | None = None, allow_nonfinite: bool = False,
                    progress: bool = True) -> ReleaseConversion:
    """Convert every model zip of a release folder into ``out_dir`` (default ``weights/<folder>``)."""
    from tqdm import tqdm

    from porting.convert import convert_path

    src = Path(src)
    out_dir = Path(out_dir) if out_dir else Path("weights") / src.resolve().name
    zips = {p.name[: -len(".savedmodel.zip")]: p for p in sorted(src.glob("*.savedmodel.zip"))}
    result = ReleaseConversion(out_dir)
    result.missing = [s for s in RELEASE_STEMS if s not in zips]
    order = [s for s in RELEASE_STEMS if s in zips] + [s for s in zips if s not in RELEASE_STEMS]
    bar = tqdm(order, desc="converting", unit="model", disable=not progress)
    for stem in bar:
        bar.set_postfix_str(stem)
        expected = RELEASE_STEMS.get(stem)
        try:
            out, conv = convert_path(zips[stem], out_dir / f"{stem}.safetensors", model=None,
                                     allow_nonfinite=allow_nonfinite)
        except Exception as e:  # one bad model must not stop the others
            from porting.errors import USER_ERRORS
            if not isinstance(e, USER_ERRORS):
                raise
            result.failed[stem] = str(e)
            continue
        if expected and conv.kind != expected:
            out.unlink()
            result.failed[stem] = (f"{zips[stem]}: released name says {expected}, but its variables are "
                                   f"those of a {conv.kind}; not converted")
            continue
        result.models[stem] = {
            "kind": conv.kind,
            "source": zips[stem].name,
            "source_sha256": conv.header["source_sha256"],
            "weights": out.name,
            "weights_sha256": sha256_path(out),
            "unused_tf_variables": conv.plan.unused,
        }
    if result.models:
        write_manifest(out_dir, src, result)
    return result


def write_manifest(out_dir: Path, src: Path, result: ReleaseConversion) -> Path:
    import porting

    data = {"release": str(src), "converter_version": porting.__version__, "models": result.models,
            "missing": result.missing, "failed": result.failed}
    path = out_dir / "manifest.json"
    write_json(path, data)
    return path


def verify_release(src: Path, weights_dir: Path, dtype: str = "float32", num_images: int = 8,
                   progress: bool = True) -> list:
    """Verify every model the manifest lists against its release zip; one Report per model."""
    from tqdm import tqdm

    from porting.readers import open_checkpoint
    from porting.verify import verify_checkpoint

    manifest_path = Path(weights_dir) / "manifest.json"
    if not manifest_path.exists():
        from porting.errors import PortError
        raise PortError(f"{weights_dir}: no manifest.json; convert the release folder first")
    manifest = json.loads(manifest_path.read_text())
    reports, tf_models = [], {}
    bar = tqdm(list(manifest["models"].items()), desc="verifying", unit="model", disable=not progress)
    for stem, entry in bar:
        bar.set_postfix_str(stem)
        tf_models[stem] = {}
        with open_checkpoint(Path(src) / entry["source"]) as ck:
            reports.append(verify_checkpoint(ck, Path(weights_dir) / entry["weights"], dtype, num_images,
                                             dlatents=Path(src) / "dlatents.pkl", tf_models=tf_models[stem]))
    if {"encoder", "mobilenet", "generator"} <= set(manifest["models"]) and dtype == "float32":
        # the SavedModels and float64 rebuilds the per-model checks built: nothing is read or built twice
        reports.append(round_trip(Path(src), Path(weights_dir), manifest, num_images, tf_models))
    return reports


def format_summary(reports) -> str:
    """One row per model: the worst layer by its ratio to TF's own float32 error (float32 runs),
    the output's |TF - PT|, TF's own error and the port's there, the verdict, and what the old
    fixed absolute bars would have said."""
    lines = [f"{'model':<14} {'layers':>6}  {'worst layer':<32} {'ratio':>6}  {'output |TF-PT|':>14} "
             f"{'TF err':>9} {'port err':>9}  result  abs bar"]
    for r in reports:
        worst = r.worst()
        out = r.output
        ratio = "-" if worst is None or worst.ratio is None else f"{worst.ratio:.2f}"
        absbar = "-" if r.abs_passed is None else ("pass" if r.abs_passed else "over")
        lines.append(f"{r.model:<14} {len(r.layers):>6}  {worst.name if worst else '-':<32} {ratio:>6}  "
                     f"{out['max_abs_diff']:>14.3e} {_e(out.get('tf_error')):>9} {_e(out.get('port_error')):>9}  "
                     f"{'pass' if r.passed else 'FAIL':<6}  {absbar}")
    return "\n".join(lines)


def _e(x) -> str:
    return "-" if x is None else f"{x:.2e}"


ROUND_TRIP_TOL = 1e-4  # the old fixed bar (float32, dlatents and reconstructions), reported


def round_trip(src: Path, weights_dir: Path, manifest: dict, num_images: int = 8, tf_models: dict | None = None):
    """image -> encoder + classifier -> dlatent -> generator -> reconstruction, in TF (the
    SavedModels, loaded as the notebook loads them) and in PyTorch, judged against the same
    pipeline run in float64 by the TF rebuilds; a Report of two rows. ``tf_models``: stem ->
    ``{"savedmodel": ..., "float64": ...}`` already built (``verify_release``); built here if absent."""
    import time

    import numpy as np
    import tf_keras as keras
    import torch

    import models_pt
    from models_pt.pipeline import encode as pt_encode
    from porting import kinds
    from porting.samples import sample_images
    from models_tf.release import encode as tf_encode
    from porting.readers import open_checkpoint
    from porting.verify import Report, judge
    from porting.verify_classifier import check_inputs

    t0 = time.perf_counter()
    tf32, tf64, pt_models = {}, {}, {}
    for stem in ("encoder", "mobilenet", "generator"):
        entry = manifest["models"][stem]
        path = Path(weights_dir) / entry["weights"]
        built = (tf_models or {}).get(stem) or {}
        if built.get("savedmodel") is not None and built.get("float64") is not None:
            tf32[stem], tf64[stem] = built["savedmodel"], built["float64"]
        else:
            header = models_pt.read_header(path)
            with open_checkpoint(Path(src) / entry["source"]) as ck:
                tf32[stem] = keras.models.load_model(str(ck.root), compile=False)
                tf64[stem] = kinds.get(header["kind"]).hooks().tf_rebuild(header["config"], "float64",
                                                                          ck.read_all())
        pt_models[stem] = models_pt.load(path)
    size = pt_models["generator"].config["resolution"]
    images = sample_images(num_images, size, seed=3000, channels_last=False)
    check_inputs(images.transpose(0, 2, 3, 1))

    def tf_run(m, x):
        g = m["generator"]
        w = tf_encode(m["encoder"], m["mobilenet"], x).numpy()
        return w, np.clip(np.asarray(g.g_synthesis(g.style_vector_calculator(w, training=False),
                                                   training=False)), -1, 1)

    w_tf, recon_tf = tf_run(tf32, images)
    w_64, recon_64 = tf_run(tf64, images.astype(np.float64))
    with torch.no_grad():
        x = torch.from_numpy(images)
        w_pt = pt_encode(pt_models["encoder"], pt_models["mobilenet"], x)
        recon_pt = pt_models["generator"](w_pt).clamp(-1, 1).numpy()
    report = Report("round trip", "float32", str(src), str(weights_dir), f"{num_images} x {size}px",
                    ROUND_TRIP_TOL, ROUND_TRIP_TOL)
    report.layers = [judge("dlatent (encoder + classifier)", w_tf, w_pt.numpy(), w_64, abs_tol=ROUND_TRIP_TOL,
                           scale_free=True),
                     judge("reconstruction (generator)", recon_tf, recon_pt, recon_64, abs_tol=ROUND_TRIP_TOL,
                           scale_free=True)]
    report.seconds = round(time.perf_counter() - t0, 2)
    return report.finish()
