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


def verify_release(src: Path, weights_dir: Path, dtype: str = "float32", num_images: int = 4,
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
    reports = []
    bar = tqdm(list(manifest["models"].items()), desc="verifying", unit="model", disable=not progress)
    for stem, entry in bar:
        bar.set_postfix_str(stem)
        with open_checkpoint(Path(src) / entry["source"]) as ck:
            reports.append(verify_checkpoint(ck, Path(weights_dir) / entry["weights"], dtype, num_images))
    if {"encoder", "mobilenet", "generator"} <= set(manifest["models"]) and dtype == "float32":
        reports.append(round_trip(Path(src), Path(weights_dir), manifest, num_images))
    return reports


def format_summary(reports) -> str:
    lines = [f"{'model':<14} {'layers':>6}  {'worst layer':<36} {'output max abs diff':>19}  result"]
    for r in reports:
        worst = r.worst()
        lines.append(f"{r.model:<14} {len(r.layers):>6}  {worst.name if worst else '-':<36} "
                     f"{r.output['max_abs_diff']:>19.3e}  {'pass' if r.passed else 'FAIL'}")
    return "\n".join(lines)


ROUND_TRIP_TOL = 1e-4  # float32, on dlatents and on reconstructions


def round_trip(src: Path, weights_dir: Path, manifest: dict, num_images: int = 4):
    """image -> encoder + classifier -> dlatent -> generator -> reconstruction, in TF (the
    SavedModels, loaded as the notebook loads them) and in PyTorch; a Report of two rows."""
    import numpy as np
    import tf_keras as keras
    import torch

    import models_pt
    from models_pt.pipeline import encode as pt_encode
    from porting.samples import sample_images
    from models_tf.release import encode as tf_encode
    from porting.readers import open_checkpoint
    from porting.verify import Report, compare
    from porting.verify_classifier import check_inputs

    tf_models, pt_models = {}, {}
    for stem in ("encoder", "mobilenet", "generator"):
        entry = manifest["models"][stem]
        with open_checkpoint(Path(src) / entry["source"]) as ck:
            tf_models[stem] = keras.models.load_model(str(ck.root), compile=False)
        pt_models[stem] = models_pt.load(Path(weights_dir) / entry["weights"])
    size = pt_models["generator"].config["resolution"]
    images = sample_images(num_images, size, seed=3000, channels_last=False)
    check_inputs(images.transpose(0, 2, 3, 1))

    g = tf_models["generator"]
    w_tf = tf_encode(tf_models["encoder"], tf_models["mobilenet"], images).numpy()
    recon_tf = np.clip(np.asarray(g.g_synthesis(g.style_vector_calculator(w_tf, training=False),
                                                training=False)), -1, 1)
    with torch.no_grad():
        x = torch.from_numpy(images)
        w_pt = pt_encode(pt_models["encoder"], pt_models["mobilenet"], x)
        recon_pt = pt_models["generator"](w_pt).clamp(-1, 1).numpy()
    report = Report("round trip", "float32", str(src), str(weights_dir), f"{num_images} x {size}px",
                    ROUND_TRIP_TOL, ROUND_TRIP_TOL)
    report.layers = [compare("dlatent (encoder + classifier)", w_tf, w_pt.numpy(), ROUND_TRIP_TOL, True),
                     compare("reconstruction (generator)", recon_tf, recon_pt, ROUND_TRIP_TOL, True)]
    report.output = report.layers[-1].__dict__
    report.passed = all(r.passed for r in report.layers)
    return report
