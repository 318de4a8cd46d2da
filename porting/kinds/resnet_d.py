"""Encoder and discriminator (StyleGAN2 resnet layout): one rule table, two name prefixes."""
from __future__ import annotations

import re
from typing import Mapping

from porting.kinds import ModelKind, ShapeLookup
from porting.mapping import MappingError, Rule

# Per kind: prefix of FromRGB and the 4x4 bias layers, block name, output dense layer name.
NAMES = {
    "encoder": {"p": "Encoder", "block": "EncoderBlock", "out": "style_gan2_dense"},
    "discriminator": {"p": "", "block": "DiscriminatorBlock", "out": "style_gan2_dense_4"},
}
MBSTD_GROUP = 4  # ASSUMPTION: StyleGAN2's default group size (the checkpoint shows only that mbstd is there)


def rules(kind: str, config: dict) -> list[Rule]:
    n, top = NAMES[kind], config["resolution"]
    p, blk = n["p"], n["block"]
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
        Rule(r"out\.weight", f"{n['out']}/weight:0", ["dense_kernel"]),
        Rule(r"out\.bias", f"{p}OutputBiasAct/OutputBiasAct:0"),
        Rule(r"fir_down", derived=True, note="FIR kernel [1, 3, 3, 1], computed by the module"),
    ]


def infer_config(kind: str, shapes: Mapping[str, tuple]) -> dict:
    n = NAMES[kind]
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
    out_units = shape(f"{n['out']}/weight:0")[1]
    config = {"resolution": resolution, "channels": [int(c) for c in widths]}
    if kind == "encoder":
        return {**config, "latent_size": int(out_units)}
    mbstd = shape("Conv4x4/weight:0")[2] == widths[0] + 1
    return {**config, "label_size": int(out_units), "mbstd_group": MBSTD_GROUP if mbstd else 0}


def _kind(name: str) -> ModelKind:
    return ModelKind(
        name=name,
        release_stem=name,
        signature=rf"(^|/){NAMES[name]['block']}\d+x\d+/Conv0/weight:0$",
        infer_config=lambda shapes: infer_config(name, shapes),
        rules=lambda config: rules(name, config),
        verifier=f"porting.verify_resnet_d:{name.upper()}_HOOKS",
    )


ENCODER, DISCRIMINATOR = _kind("encoder"), _kind("discriminator")
