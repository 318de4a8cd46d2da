"""Write a *reference release*: seeded TF models in the released file layout.

The real release is a folder of ``<name>.savedmodel.zip`` files (each a zipped Keras SavedModel
folder ``<name>.savedmodel/``), ``dlatents.pkl`` and ``examples_1.tfrecord``. This writes the
same layout from ``models_tf``'s reference models, so everything downstream runs through the
code path a user with the real files takes. ``reference.json`` records how it was made.
"""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from porting.atomic import atomic_path, write_json


def save_savedmodel_zip(model, out_zip: Path, folder_name: str) -> Path:
    """Save ``model`` as a Keras SavedModel folder ``folder_name`` zipped into ``out_zip``.

    Written atomically: the zip is built under a temporary name beside ``out_zip`` and renamed.
    """
    out_zip = Path(out_zip)
    with tempfile.TemporaryDirectory(prefix="stylex-sm-") as tmp, atomic_path(out_zip) as tmp_zip:
        folder = Path(tmp) / folder_name
        model.save(str(folder), save_format="tf", include_optimizer=False)
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                zf.write(p, p.relative_to(tmp))
    return out_zip


def make_reference(out_dir: Path, seed: int = 0, resolution: int = 64, progress=None) -> dict:
    """Write the reference release into ``out_dir``; returns what ``reference.json`` holds.

    ``resolution`` is the image size of every model (the release's is 256).
    """
    from models_tf import classifier, generator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    step = progress or (lambda msg: None)

    step("classifier (MobileNetV1): seeding and calibrating BatchNorm statistics")
    config = classifier.default_config(input_size=resolution)
    model = classifier.seeded_classifier(config, seed=seed, progress=progress is not None)
    written["mobilenet"] = save_savedmodel_zip(model, out_dir / "mobilenet.savedmodel.zip",
                                               "mobilenet.savedmodel").name

    step(f"generator ({resolution} px): seeding and saving")
    gen_config = generator.release_config(resolution)
    gen = generator.seeded_generator(gen_config, seed=seed)
    written["generator"] = save_savedmodel_zip(gen, out_dir / "generator.savedmodel.zip",
                                               "generator.savedmodel").name

    info = {"seed": seed, "resolution": resolution, "files": written,
            "configs": {"classifier": config, "generator": gen_config}}
    write_json(out_dir / "reference.json", info)
    return info


def unzip_savedmodel(zip_path: Path, dest: Path) -> Path:
    """Unpack a release zip safely (see porting.readers.safe_extract); returns the folder."""
    from porting.readers import safe_extract

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    return safe_extract(Path(zip_path), dest)
