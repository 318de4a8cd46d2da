"""The encoder's and the discriminator's records (StyleGAN2 resnet layout): one rule table, two
name prefixes; their verify inputs (images, and label probabilities for the discriminator)."""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from porting.kinds import ModelKind, OnnxSpec, ShapeLookup, VerifySpec
from porting.mapping import MappingError, Rule
from models_pt.release_facts import MBSTD_GROUP

# Per kind: the prefix of FromRGB and of the 4x4 bias layers, the block name, the output dense layer.
TF_NAMES = {
    "encoder": {"prefix": "Encoder", "block": "EncoderBlock", "output": "style_gan2_dense"},
    "discriminator": {"prefix": "", "block": "DiscriminatorBlock", "output": "style_gan2_dense_4"},
}


def rules(kind: str, config: dict) -> list[Rule]:
    n, top = TF_NAMES[kind], config["resolution"]
    p, blk = n["prefix"], n["block"]
    block = r"blocks\.b(?P<r>\d+)\."
    return [
        Rule(r"from_rgb\.weight", f"{p}FromRGB{top}x{top}/StyleGAN2Conv2D/weight:0", ["conv_kernel"]),
        Rule(r"from_rgb\.bias", f"{p}FromRGB{top}x{top}/FusedBiasActivation/FromRGBBias:0", ["squeeze"]),
        Rule(block + r"conv0\.weight", blk + "{r}x{r}/Conv0/weight:0", ["conv_kernel"]),
        Rule(block + r"conv0\.bias", blk + "{r}x{r}/Conv0Bias/BiasAct0:0", ["squeeze"]),
        Rule(block + r"conv1\.weight", blk + "{r}x{r}/Conv1Down/weight:0", ["conv_kernel"],
             note="plain stride-2 conv after the FIR blur: no flip"),
        Rule(block + r"conv1\.bias", blk + "{r}x{r}/Conv1DownBiasAct/BiasAct1:0", ["squeeze"]),
        Rule(block + r"skip\.weight", blk + "{r}x{r}/Skip/weight:0", ["conv_kernel"]),
        Rule(r"conv4\.weight", "Conv4x4/weight:0", ["conv_kernel"]),
        Rule(r"conv4\.bias", f"{p}ConvBiasAct4x4/ConvBiasAct4x4:0", ["squeeze"]),
        Rule(r"dense4\.weight", f"{p}Dense4x4/weight:0", ["dense_kernel"]),
        Rule(r"dense4\.bias", f"{p}DenseBiasAct4x4/DenseBiasAct4x4:0"),
        Rule(r"out\.weight", f"{n['output']}/weight:0", ["dense_kernel"]),
        Rule(r"out\.bias", f"{p}OutputBiasAct/OutputBiasAct:0"),
        Rule(r"fir_down", derived=True, note="FIR kernel [1, 3, 3, 1], computed by the module"),
    ]


def infer_config(kind: str, shapes: Mapping[str, tuple]) -> dict:
    n = TF_NAMES[kind]
    shape = ShapeLookup(shapes, kind)
    rx = re.compile(rf"(^|/){n['block']}(\d+)x\2/Conv0/weight:0$")
    blocks = sorted(int(m[2]) for name in shapes if (m := rx.search(name)))
    if not blocks:
        raise MappingError(f"{kind}: no '{n['block']}{{r}}x{{r}}/Conv0/weight:0' variables; the names do "
                           f"not follow the StylEx {kind}'s pattern")
    resolution = blocks[-1]
    if blocks != [2 ** i for i in range(3, resolution.bit_length())]:
        raise MappingError(f"{kind}: blocks at resolutions {blocks}; expected every power of two from 8 to {resolution}")
    widths = [shape("Conv4x4/weight:0")[3]] + [shape(f"{n['block']}{r}x{r}/Conv0/weight:0")[3] for r in blocks]
    out_units = shape(f"{n['output']}/weight:0")[1]
    config = {"resolution": resolution, "channels": [int(c) for c in widths]}
    if kind == "encoder":
        return {**config, "latent_size": int(out_units)}
    mbstd = shape("Conv4x4/weight:0")[2] == widths[0] + 1
    return {**config, "label_size": int(out_units), "mbstd_group": MBSTD_GROUP if mbstd else 0}


def make_images(config: dict, n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random NCHW images in [-1, 1] (the classifier's test images) at the model's size."""
    from porting.samples import sample_images

    return sample_images(n, config["resolution"], seed=seed + 2000, channels_last=False)


def make_labelled(config: dict, n: int, size: int, seed: int):
    labels = np.random.default_rng(seed).dirichlet(np.ones(config["label_size"]), n).astype(np.float32)
    return make_images(config, n, size, seed), labels


def check_images(x) -> None:
    from porting.kinds.classifier import check_inputs

    check_inputs(np.transpose(x[0] if isinstance(x, tuple) else x, (0, 2, 3, 1)))


def _kind(name: str) -> ModelKind:
    labelled = name == "discriminator"
    return ModelKind(
        name=name,
        signature=rf"(^|/){TF_NAMES[name]['block']}\d+x\d+/Conv0/weight:0$",
        infer_config=lambda shapes: infer_config(name, shapes),
        rules=lambda config: rules(name, config),
        pt_class=f"models_pt.resnet_d:{name.capitalize()}",
        tf_module="models_tf.resnet_d",
        verify=VerifySpec(
            make_inputs=make_labelled if labelled else make_images, check_inputs=check_images,
            default_size=lambda config: config["resolution"],
        ),
        onnx=OnnxSpec(output="score" if labelled else "latent",
                      feed=(lambda module, x: {"images": x[0].astype(np.float32), "labels": x[1].astype(np.float32)})
                      if labelled else (lambda module, x: {"images": x.astype(np.float32)})),
    )


ENCODER, DISCRIMINATOR = _kind("encoder"), _kind("discriminator")
