"""Write a *reference release*: seeded TF models in the released file layout.

The real release is a folder of ``<name>.savedmodel.zip`` files (each a zipped Keras SavedModel
folder ``<name>.savedmodel/``), ``dlatents.pkl`` and ``examples_1.tfrecord``. This writes the
same layout from ``models_tf``'s reference models, so everything downstream runs through the
code path a user with the real files takes. ``reference.json`` records how it was made.

It sits in ``crosscheck`` because it needs both sides: the TF models (``models_tf``), the
release's file formats (``porting``: atomic writes, the dlatents pickle) and the TF AttFind
backend that writes ``examples_1.tfrecord`` (``attfind.effects_tf``).
"""
from __future__ import annotations

import contextlib
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from porting.atomic import atomic_path, write_json
from porting.kinds import get as kind
from models_pt.release_facts import DLATENTS_FILE, EXAMPLES_FILE


def real_dlatents(n: int) -> np.ndarray:
    """The first ``n`` of the real release's dlatents (``release_facts.RELEASED_DLATENTS``); in a
    checkout without that file, seeded Gaussian stand-ins (w ~ N(0, 1), Dirichlet label
    probabilities), with a note: the reference release is then built on them."""
    from porting.kinds.generator import released_dlatents
    from models_pt.release_facts import RELEASED_DLATENTS

    if RELEASED_DLATENTS.exists():
        return released_dlatents()[:n]
    import sys

    print(f"note: {RELEASED_DLATENTS} is absent; the reference release uses seeded Gaussian dlatents",
          file=sys.stderr)
    rng = np.random.default_rng(514)
    w = rng.normal(0, 1, (n, 514)).astype(np.float32)
    w[:, 512:] = rng.dirichlet(np.ones(2), n)
    return w


def seeded_classifier(config: dict, seed: int = 0, progress: bool = False):
    """``models_tf.classifier.seeded_classifier`` with its calibration images: smooth test images
    (``porting.samples``) at the config's size, more of them for small sizes (whose deep layers
    are 1x1 or 2x2: more images keep their statistics honest)."""
    from models_tf.classifier import seeded_classifier as seeded
    from porting.samples import sample_images

    size = config.get("input_size") or 256
    return seeded(config, sample_images(16 if size >= 128 else 96, size, seed=seed + 1), seed=seed,
                  progress=progress)


def save_savedmodel_zip(model, out_zip: Path, folder_name: str) -> Path:
    """Save ``model`` as a Keras SavedModel folder ``folder_name`` zipped into ``out_zip``.

    Written atomically: the zip is built under a temporary name beside ``out_zip`` and renamed.
    """
    with tempfile.TemporaryDirectory(prefix="stylex-sm-") as tmp:
        folder = Path(tmp) / folder_name
        model.save(str(folder), save_format="tf", include_optimizer=False)
        return zip_savedmodel(folder, out_zip, folder_name)


def zip_savedmodel(folder: Path, out_zip: Path, folder_name: str) -> Path:
    """An existing SavedModel ``folder`` zipped into ``out_zip`` as ``folder_name/``, atomically."""
    out_zip = Path(out_zip)
    with atomic_path(out_zip) as tmp_zip:
        # stored, not deflated: float weights barely compress (7% on the seed-11 release's 87 MB
        # encoder, 3.2 s at deflate's fastest level); the readers take either (the download
        # tests use deflated zips)
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_STORED) as zf:
            for p in sorted(Path(folder).rglob("*")):
                zf.write(p, Path(folder_name) / p.relative_to(folder))
    return out_zip


def _save(model, out_dir: Path, kind_name: str) -> str:
    """``<stem>.savedmodel.zip`` holding ``<stem>.savedmodel/``, the release's layout."""
    stem = kind(kind_name).release_stem
    return save_savedmodel_zip(model, out_dir / f"{stem}.savedmodel.zip", f"{stem}.savedmodel").name


def make_reference(out_dir: Path, seed: int = 0, resolution: int = 64, progress=None,
                   num_dlatents: int = 32, channel_max: int | None = 16, attfind: bool = True,
                   bar=None, resnet_channel_max: int | None = None) -> dict:
    """Write the reference release into ``out_dir``; returns what ``reference.json`` holds.

    ``resolution`` is the image size of every model (the release's is 256). ``channel_max``
    caps the generator's widths (``None``: the release's, 512): AttFind's TF sweep runs one
    image and one coordinate at a time, so its cost grows with the number of StyleSpace
    coordinates. ``attfind``: plant an attribute in the classifier and write
    ``examples_1.tfrecord`` with the TF backend. ``bar(total, label)``: a progress bar factory
    for the sweep (a context manager with ``update(n)``).
    ``resnet_channel_max``: a cap on the encoder's and discriminator's widths
    (``None``: the release's 512 at every resolution; a small cap makes training them cheap).
    """
    from models_tf import classifier, generator, resnet_d
    from models_tf.pipeline import calibrate_encoder, reference_dlatents
    from porting.dlatents import save_dlatents

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    step = progress or (lambda msg: None)

    step("classifier (MobileNetV1): seeding and calibrating BatchNorm statistics")
    config = classifier.default_config(input_size=resolution)
    model = seeded_classifier(config, seed=seed, progress=progress is not None)

    gen_config = generator.release_config(resolution)
    if channel_max is not None:
        gen_config["channel_max"] = int(channel_max)
    step(f"generator ({resolution} px, widths up to {gen_config['channel_max']}): seeding and saving")
    gen = generator.seeded_generator(gen_config, seed=seed)
    written["generator"] = _save(gen, out_dir, "generator")

    configs = {"classifier": config, "generator": gen_config}
    nets = {}
    for name in ("encoder", "discriminator"):
        step(f"{name} ({resolution} px): seeding and saving")
        configs[name] = resnet_d.release_config(name, resolution)
        if resnet_channel_max is not None:
            configs[name]["channel_max"] = int(resnet_channel_max)
        nets[name] = resnet_d.seeded(name, configs[name], seed=seed)
        if name == "encoder":
            calibrate_encoder(gen, nets[name], real_dlatents(max(num_dlatents, 32)))
        written[name] = _save(nets[name], out_dir, name)

    info = {"seed": seed, "resolution": resolution}
    if attfind:
        from models_tf.plant import plant

        step("planting an attribute: fitting the classifier's last layer to one StyleSpace coordinate")
        provisional = reference_dlatents(gen, nets["encoder"], model, real_dlatents(num_dlatents))
        info["planted"] = plant(gen, model, provisional, seed=seed, progress=progress)
    written["mobilenet"] = _save(model, out_dir, "classifier")

    step(f"{DLATENTS_FILE}: {num_dlatents} dlatents, encoder + classifier on generated images")
    dlatents = reference_dlatents(gen, nets["encoder"], model, real_dlatents(num_dlatents))
    save_dlatents(out_dir / DLATENTS_FILE, dlatents)
    written["dlatents"] = DLATENTS_FILE

    if attfind:
        info["attfind"] = write_examples(out_dir, dlatents, progress=step, bar=bar)
        written["examples"] = EXAMPLES_FILE
    info.update({"files": written, "configs": configs})
    write_json(out_dir / "reference.json", info)
    return info


def write_examples(out_dir: Path, dlatents: np.ndarray, progress=None, bar=None) -> dict:
    """``examples_1.tfrecord`` from the SavedModels in ``out_dir``, loaded as the notebook loads
    them, by the notebook-style TF backend (compiled; one image, one shift at a time)."""
    import time

    from attfind.effects_tf import TFEffects
    from attfind.selection import style_ranges
    from attfind.tfrecord import write_effects
    from crosscheck.tf_side import load_savedmodel
    from porting.readers import open_checkpoint

    step = progress or (lambda msg: None)
    models = {}
    for name in ("generator", "classifier"):
        with open_checkpoint(out_dir / f"{kind(name).release_stem}.savedmodel.zip") as ck:
            models[name] = load_savedmodel(ck)
    backend = TFEffects(models["generator"], models["classifier"], compiled=True)
    styles = backend.styles(dlatents)
    lo, hi = style_ranges(styles)
    n, s = len(dlatents), backend.num_styles
    step(f"examples_1.tfrecord: AttFind effects in TF, {n} images x {s} coordinates x 2 directions")
    t0 = time.perf_counter()
    base = np.zeros((n, 2), np.float32)
    effects = np.zeros((n, 2, s, 2), np.float32)
    ctx = bar(n * s, "TF effects (coordinates)") if bar else None
    with ctx if ctx is not None else contextlib.nullcontext():
        for i in range(n):
            base[i], effects[i] = backend.image(dlatents[i], lo, hi, style=styles[i],
                                                on_progress=ctx.update if ctx else None)
    seconds = time.perf_counter() - t0
    write_effects(out_dir / EXAMPLES_FILE, base, dlatents, effects)
    step(f"{EXAMPLES_FILE}: {n} images in {seconds:.0f} s ({2 * n * s / seconds:.0f} evaluations/s)")
    return {"images": n, "num_styles": s, "shift_size": 1.0, "style_ranges": "over these images",
            "backend": "tensorflow, notebook-style, compiled", "seconds": round(seconds, 1)}
