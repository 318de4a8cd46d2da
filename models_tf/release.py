"""Write a *reference release*: seeded TF models in the released file layout.

The real release is a folder of ``<name>.savedmodel.zip`` files (each a zipped Keras SavedModel
folder ``<name>.savedmodel/``), ``dlatents.pkl`` and ``examples_1.tfrecord``. This writes the
same layout from ``models_tf``'s reference models, so everything downstream runs through the
code path a user with the real files takes. ``reference.json`` records how it was made.
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np

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


def make_reference(out_dir: Path, seed: int = 0, resolution: int = 64, progress=None,
                   num_dlatents: int = 64) -> dict:
    """Write the reference release into ``out_dir``; returns what ``reference.json`` holds.

    ``resolution`` is the image size of every model (the release's is 256).
    """
    from models_tf import classifier, generator, resnet_d
    from porting.dlatents import save_dlatents

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

    configs = {"classifier": config, "generator": gen_config}
    nets = {}
    for kind in ("encoder", "discriminator"):
        step(f"{kind} ({resolution} px): seeding and saving")
        configs[kind] = resnet_d.release_config(kind, resolution)
        nets[kind] = resnet_d.seeded(kind, configs[kind], seed=seed)
        written[kind] = save_savedmodel_zip(nets[kind], out_dir / f"{kind}.savedmodel.zip",
                                            f"{kind}.savedmodel").name

    step(f"dlatents.pkl: {num_dlatents} dlatents, encoder + classifier on generated images")
    save_dlatents(out_dir / "dlatents.pkl", reference_dlatents(gen, nets["encoder"], model, num_dlatents))
    written["dlatents"] = "dlatents.pkl"

    info = {"seed": seed, "resolution": resolution, "files": written, "configs": configs}
    write_json(out_dir / "reference.json", info)
    return info


def encode(encoder, classifier, images_nchw):
    """The release's dlatent of an image: encoder output concatenated with the classifier's
    softmax probabilities on the same image (NHWC for the classifier)."""
    import tensorflow as tf

    probs = tf.nn.softmax(classifier(tf.transpose(images_nchw, [0, 2, 3, 1]), training=False))
    return tf.concat([encoder(images_nchw, training=False), tf.cast(probs, images_nchw.dtype)], axis=1)


def reference_dlatents(generator, encoder, classifier, n: int) -> np.ndarray:
    """dlatents computed as the release's were, on images the generator draws from the first n
    real released dlatents (the reference has no photographs)."""
    from porting.verify_generator import released_dlatents

    out = []
    for chunk in np.array_split(released_dlatents()[:n], max(1, n // 16)):
        images = np.clip(generator.g_synthesis(generator.style_vector_calculator(chunk)).numpy(), -1, 1)
        out.append(encode(encoder, classifier, images).numpy())
    return np.concatenate(out).astype(np.float32)
