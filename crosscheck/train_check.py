"""The TF half of ``verify --train``, and the optimizer check: TF's training step on its rebuild.

For one model kind, ``tf_quantities`` runs the reference model of ``models_tf`` (rebuilt from
the checkpoint's variables, dropout at rate 0) in training mode on the batch of
``porting.train_check.train_inputs`` and returns what ``porting.train_check.pt_quantities`` returns
for the port: the output, the input gradient, every variable's gradient (mapped into the
PyTorch layout through the kind's mapping rules), the classifier's moving statistics after the
step, R1 and its gradients (discriminator), the path length and its gradients (generator),
each computed with ``tf.GradientTape`` as a TF training loop does (nested tapes for the
second-order terms).

``adam_steps`` runs ``tf_keras.optimizers.Adam`` for a few steps on the same loss and batch
(StyleGAN2's settings), against ``models_pt.training.KerasAdam`` and ``torch.optim.Adam``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import models_pt
from crosscheck import tf_side
from crosscheck.verify import load_to_verify
from porting import train_check as pt_train
from porting.readers import open_checkpoint
from porting.verdict import RULE, Report, VerdictRule


def rebuild(kind: str, config: dict, dtype: str, variables: dict):
    """The TF reference model holding ``variables``, dropout at rate 0 (its masks are random)."""
    config = {**config, "dropout": 0.0} if kind == "classifier" else config
    return tf_side.rebuild(kind, config, dtype, variables)


def _shapes(model) -> dict[str, tuple]:
    return {v.name: tuple(v.shape) for v in model.variables}


def _fused_moving_variance(model, before: dict, images: np.ndarray) -> dict[str, np.ndarray]:
    """Keras' float64 BatchNorm has no fused kernel and updates the moving variance with the
    biased batch variance; its float32 fused kernel (what TF trains the classifier with) uses the
    unbiased one. The fused rule on TF's float64 statistics: from the non-fused update
    ``new = old - (old - var_b) * f`` recover ``var_b``, then ``old - (old - var_b n / (n - 1)) * f``,
    with ``n`` the values per channel (batch x height x width, from an inference trace) and ``f``
    the decay as Keras holds it (``1 - momentum`` in float32)."""
    import tf_keras as keras

    acts = None
    out = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        name = layer.moving_variance.name
        if getattr(layer, "fused", False):     # the fused kernel already did it
            out[name] = layer.moving_variance.numpy()
            continue
        acts = acts if acts is not None else tf_side.trace("classifier", model, images, "float64")
        n = int(np.prod(acts[layer.name].shape[:-1]))
        f = float(np.float32(1.0 - layer.momentum))
        old, new = before[name], layer.moving_variance.numpy()
        var_b = old - (old - new) / f
        out[name] = old - (old - var_b * n / (n - 1)) * f
    return out


def tf_quantities(kind: str, model, inputs: dict, dtype: str, pt_module) -> dict[str, np.ndarray]:
    """What ``porting.train_check.pt_quantities`` computes, on TF's side; parameters in PyTorch's
    layout and names (``pt_module`` gives the keys and shapes)."""
    import tensorflow as tf

    def c(a):
        return tf.constant(np.asarray(a).astype(dtype))

    variables = model.trainable_variables
    shapes = _shapes(model)
    out: dict[str, np.ndarray] = {}

    def grads_of(tape, loss, prefix):
        found = tape.gradient(loss, variables)
        tf_grads = {v.name: (np.zeros(v.shape, dtype) if g is None else g.numpy()) for v, g in zip(variables, found)}
        mapped = pt_train.tf_to_pt(kind, tf_grads, shapes, pt_module, gradients=True)
        return {f"{prefix}{k}": v for k, v in mapped.items()}

    upstream = c(inputs["upstream"])
    if kind == "generator":
        z, labels = c(inputs["z"]), c(inputs["labels"])
        noise = [c(a) for a in inputs["noise"]]

        def synth(w):
            return model.g_synthesis.run(model.style_vector_calculator(w), noise=noise)

        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            y = synth(model.generator_mapping((z, labels)))
            loss = tf.reduce_sum(y * upstream)
        out["output"] = y.numpy()
        out["dL/dz"] = tape.gradient(loss, z).numpy()
        out.update(grads_of(tape, loss, "grad "))
        del tape
        pl_y = c(inputs["pl_y"])
        with tf.GradientTape() as outer:
            w = model.generator_mapping((z, labels))
            with tf.GradientTape() as inner:
                inner.watch(w)
                s = tf.reduce_sum(synth(w) * pl_y)
            pl = tf.reduce_sum(tf.square(inner.gradient(s, w)), axis=1)
            total = tf.reduce_sum(pl)
        out["path length"] = pl.numpy()
        out.update(grads_of(outer, total, "path length grad "))
        return out

    images = c(inputs["images"])
    args = (images, c(inputs["labels"])) if kind == "discriminator" else images
    before = {v.name: v.numpy() for v in model.non_trainable_variables}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        y = model(args, training=True)
        loss = tf.reduce_sum(y * upstream)
    out["output"] = y.numpy()
    out["dL/dimages"] = tape.gradient(loss, images).numpy()
    out.update(grads_of(tape, loss, "grad "))
    del tape
    if kind == "classifier":
        stats = {v.name: v.numpy() for v in model.non_trainable_variables}
        stats.update(_fused_moving_variance(model, before, inputs["images"].astype(dtype)))
        state = pt_train.tf_to_pt(kind, {**{v.name: v.numpy() for v in model.variables}, **stats}, shapes, pt_module,
                                  gradients=False)
        out.update({k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))})
        for v in model.non_trainable_variables:   # back to the converted statistics
            v.assign(before[v.name])
    if kind == "discriminator":
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(images)
                score = tf.reduce_sum(model(args, training=True))
            r1 = tf.reduce_sum(tf.square(inner.gradient(score, images)), axis=[1, 2, 3])
            total = tf.reduce_sum(r1)
        out["r1"] = r1.numpy()
        out.update(grads_of(outer, total, "r1 grad "))
    return out


def verify_training(ck, weights: Path, dtype: str = "float32", num_images: int = pt_train.TRAIN_IMAGES,
                    seed: int = 0, rule: VerdictRule = RULE, module=None, variables: dict | None = None) -> Report:
    """``verify --train`` of one converted model against its checkpoint: TF's training step on
    the rebuild in float64 (the truth) and float32 (information), the port's judged against it.
    ``module``: judge this PyTorch module instead of the weights' (the negative controls)."""
    t0 = time.perf_counter()
    header = models_pt.read_header(weights)
    kind, config = header["kind"], header["config"]
    if kind not in pt_train.TRAIN_KINDS:
        raise ValueError(f"{weights}: no training check for a {kind}")
    pt = module if module is not None else load_to_verify(weights)
    inputs = pt_train.train_inputs(kind, config, num_images, seed=seed)
    variables = variables if variables is not None else ck.read_all()
    truth = tf_quantities(kind, rebuild(kind, config, "float64", variables), inputs, "float64", pt)
    tf32 = tf_quantities(kind, rebuild(kind, config, "float32", variables), inputs, "float32", pt) \
        if dtype == "float32" else None
    report = pt_train.judge_training(kind, truth, tf32, pt, inputs, rule, str(ck.source), str(weights), dtype,
                                     tf_seconds=time.perf_counter() - t0,
                                     kernels_info={"tensorflow": tf_side.tf_kernels()})
    report.same_source = header.get("source_sha256") == ck.sha256()
    return report


def verify_training_release(src: Path, weights_dir: Path, dtype: str = "float32", num_images: int = pt_train.TRAIN_IMAGES,
                            progress: bool = True, seed: int = 0) -> list[Report]:
    """``verify --train`` of every model a converted release folder lists."""
    from tqdm import tqdm

    manifest = models_pt.read_manifest(weights_dir)
    reports = []
    bar = tqdm(list(manifest["models"].items()), desc="verifying (train)", unit="model", disable=not progress)
    for stem, entry in bar:
        bar.set_postfix_str(stem)
        with open_checkpoint(Path(src) / entry["source"], build_keras=tf_side.build_keras) as ck:
            reports.append(verify_training(ck, Path(weights_dir) / entry["weights"], dtype, num_images, seed=seed))
    return reports


