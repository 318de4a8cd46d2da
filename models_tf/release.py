"""Write a *reference release*: seeded TF models in the released file layout.

The real release is a folder of ``<name>.savedmodel.zip`` files (each a zipped Keras SavedModel
folder ``<name>.savedmodel/``), ``dlatents.pkl`` and ``examples_1.tfrecord``. This writes the
same layout from ``models_tf``'s reference models, so everything downstream runs through the
code path a user with the real files takes. ``reference.json`` records how it was made.
"""
from __future__ import annotations

import contextlib
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
                   num_dlatents: int = 32, channel_max: int | None = 16, attfind: bool = True,
                   bar=None) -> dict:
    """Write the reference release into ``out_dir``; returns what ``reference.json`` holds.

    ``resolution`` is the image size of every model (the release's is 256). ``channel_max``
    caps the generator's widths (``None``: the release's, 512): AttFind's TF sweep runs one
    image and one coordinate at a time, so its cost grows with the number of StyleSpace
    coordinates. ``attfind``: plant an attribute in the classifier and write
    ``examples_1.tfrecord`` with the TF backend. ``bar(total, label)``: a progress bar factory
    for the sweep (a context manager with ``update(n)``).
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

    gen_config = generator.release_config(resolution)
    if channel_max is not None:
        gen_config["channel_max"] = int(channel_max)
    step(f"generator ({resolution} px, widths up to {gen_config['channel_max']}): seeding and saving")
    gen = generator.seeded_generator(gen_config, seed=seed)
    written["generator"] = save_savedmodel_zip(gen, out_dir / "generator.savedmodel.zip",
                                               "generator.savedmodel").name

    configs = {"classifier": config, "generator": gen_config}
    nets = {}
    for kind in ("encoder", "discriminator"):
        step(f"{kind} ({resolution} px): seeding and saving")
        configs[kind] = resnet_d.release_config(kind, resolution)
        nets[kind] = resnet_d.seeded(kind, configs[kind], seed=seed)
        if kind == "encoder":
            calibrate_encoder(gen, nets[kind], num_dlatents)
        written[kind] = save_savedmodel_zip(nets[kind], out_dir / f"{kind}.savedmodel.zip",
                                            f"{kind}.savedmodel").name

    info = {"seed": seed, "resolution": resolution}
    if attfind:
        from models_tf.plant import plant

        step("planting an attribute: fitting the classifier's last layer to one StyleSpace coordinate")
        provisional = reference_dlatents(gen, nets["encoder"], model, num_dlatents)
        info["planted"] = plant(gen, model, provisional, seed=seed, progress=progress)
    written["mobilenet"] = save_savedmodel_zip(model, out_dir / "mobilenet.savedmodel.zip",
                                               "mobilenet.savedmodel").name

    step(f"dlatents.pkl: {num_dlatents} dlatents, encoder + classifier on generated images")
    dlatents = reference_dlatents(gen, nets["encoder"], model, num_dlatents)
    save_dlatents(out_dir / "dlatents.pkl", dlatents)
    written["dlatents"] = "dlatents.pkl"

    if attfind:
        info["attfind"] = write_examples(out_dir, dlatents, progress=step, bar=bar)
        written["examples"] = "examples_1.tfrecord"
    info.update({"files": written, "configs": configs})
    write_json(out_dir / "reference.json", info)
    return info


def write_examples(out_dir: Path, dlatents: np.ndarray, progress=None, bar=None) -> dict:
    """``examples_1.tfrecord`` from the SavedModels in ``out_dir``, loaded as the notebook loads
    them, by the notebook-style TF backend (compiled; one image, one shift at a time)."""
    import time

    import tf_keras as keras

    from attfind.effects_tf import NotebookEffects, conv_styles
    from attfind.selection import style_ranges
    from attfind.tfrecord import write_effects
    from porting.readers import open_checkpoint

    step = progress or (lambda msg: None)
    models = {}
    for stem in ("generator", "mobilenet"):
        with open_checkpoint(out_dir / f"{stem}.savedmodel.zip") as ck:
            models[stem] = keras.models.load_model(str(ck.root), compile=False)
    backend = NotebookEffects(models["generator"], models["mobilenet"], compiled=True)
    styles = conv_styles(models["generator"], dlatents)
    lo, hi = style_ranges(styles)
    n, s = len(dlatents), backend.num_styles
    step(f"examples_1.tfrecord: AttFind effects in TF, {n} images x {s} coordinates x 2 directions")
    t0 = time.perf_counter()
    base = np.zeros((n, 2), np.float32)
    effects = np.zeros((n, 2, s, 2), np.float32)
    ctx = bar(n * s, "TF effects (coordinates)") if bar else None
    with ctx if ctx is not None else contextlib.nullcontext():
        for i in range(n):
            base[i], effects[i] = backend.image(dlatents[i], styles[i], lo, hi,
                                                on_coordinate=(lambda: ctx.update(1)) if ctx else None)
    seconds = time.perf_counter() - t0
    write_effects(out_dir / "examples_1.tfrecord", base, dlatents, effects)
    step(f"examples_1.tfrecord: {n} images in {seconds:.0f} s ({2 * n * s / seconds:.0f} evaluations/s)")
    return {"images": n, "num_styles": s, "shift_size": 1.0, "style_ranges": "over these images",
            "backend": "tensorflow, notebook-style, compiled", "seconds": round(seconds, 1)}


def _generated_images(generator, n: int) -> np.ndarray:
    """Clamped images the generator draws from the first ``n`` real released dlatents."""
    from porting.verify_generator import released_dlatents

    return np.concatenate([np.clip(generator.g_synthesis(generator.style_vector_calculator(chunk)).numpy(), -1, 1)
                           for chunk in np.array_split(released_dlatents()[:n], max(1, n // 16))])


def calibrate_encoder(generator, encoder, n: int) -> None:
    """Give a seeded encoder the released dlatents' spread: its output layer is rescaled, per
    output, so that on the generator's images of the first ``n`` released dlatents its outputs
    have those dlatents' means and standard deviations. (A random encoder maps every image to
    nearly the same latent, 10x narrower than the release's; AttFind's style ranges, and so
    every shift it makes, would be that much smaller.)"""
    from porting.verify_generator import released_dlatents

    target = released_dlatents()[:max(n, 32)]
    images = _generated_images(generator, len(target))
    latent = np.asarray(encoder(images, training=False), np.float64)
    k = latent.shape[1]
    want_mu, want_sd = target[:, :k].mean(axis=0), target[:, :k].std(axis=0)
    bias = encoder.out_bias.bias.numpy().astype(np.float64)
    a = want_sd / np.maximum(latent.std(axis=0), 1e-12)
    encoder.out.weight.assign((encoder.out.weight.numpy() * a[None, :]).astype(np.float32))
    encoder.out_bias.bias.assign((want_mu - (latent.mean(axis=0) - bias) * a).astype(np.float32))


def encode(encoder, classifier, images_nchw):
    """The release's dlatent of an image: encoder output concatenated with the classifier's
    softmax probabilities on the same image (NHWC for the classifier)."""
    import tensorflow as tf

    probs = tf.nn.softmax(classifier(tf.transpose(images_nchw, [0, 2, 3, 1]), training=False))
    return tf.concat([encoder(images_nchw, training=False), tf.cast(probs, images_nchw.dtype)], axis=1)


def reference_dlatents(generator, encoder, classifier, n: int) -> np.ndarray:
    """dlatents computed as the release's were, on images the generator draws from the first n
    real released dlatents (the reference has no photographs)."""
    images = _generated_images(generator, n)
    return np.concatenate([encode(encoder, classifier, images[i:i + 16]).numpy()
                           for i in range(0, n, 16)]).astype(np.float32)
