"""The StylEx generator: config inference from names and shapes, and the mapping table."""
from __future__ import annotations

import math
import re
from typing import Mapping

from porting.kinds import ModelKind, ShapeLookup
from porting.mapping import MappingError, Rule

STYLE = "generator_style_calculator"
SYN = "generator_synthesis"
MAP = "generator/generator_mapping"


def _i(m: re.Match) -> int:
    """TF numbers the style layers of block r as StyleVector{i} with r = 2**(i + 3)."""
    return int(math.log2(int(m["r"]))) - 3


def _noise(m: re.Match) -> str:
    """Noise constants are numbered through the network: 0 for block 4, then 2*log2(r) - 5 for
    a block's up-sampling conv and 2*log2(r) - 4 for its second conv."""
    r = int(m["r"])
    k = 0 if r == 4 else 2 * int(math.log2(r)) - 5 + int(m["j"])
    return f"Noise{k}:0"


def _layer(m: re.Match) -> str:
    """Scope of a synthesis conv layer."""
    r = int(m["r"])
    if r == 4:
        return f"{SYN}/ConstBlock4x4/GeneratorLayer4x4"
    return f"{SYN}/GeneratorBlock{r}x{r}/" + ("Conv0Up" if m["j"] == "0" else "Conv1")


STYLE_SCOPE = {  # PyTorch style-layer name -> TF StyleVector name
    "conv": lambda m: "StyleVectorConst" if m["r"] == "4" else f"StyleVector{_i(m)}_{m['j']}",
    "rgb": lambda m: "StyleVectorConstRGB" if m["r"] == "4" else f"StyleVectorRGB{_i(m)}",
}

CONV = r"convs\.b(?P<r>\d+)_conv(?P<j>[01]?)"

RULES = [
    # Style layers: TF adds 1 after the dense layer at run time, and so does models_pt (a port
    # whose bias holds the 1 would need transform "plus_one" here).
    Rule(r"conv_styles\.b(?P<r>\d+)_conv(?P<j>[01]?)\.weight",
         lambda m: f"{STYLE}/{STYLE_SCOPE['conv'](m)}/StyleGAN2Dense/weight:0", ["dense_kernel"]),
    Rule(r"conv_styles\.b(?P<r>\d+)_conv(?P<j>[01]?)\.bias",
         lambda m: f"{STYLE}/{STYLE_SCOPE['conv'](m)}/FusedBiasActivation/bias:0", ["squeeze"],
         note="style = dense(w) + bias + 1; the 1 added at run time on both sides"),
    Rule(r"rgb_styles\.b(?P<r>\d+)\.weight",
         lambda m: f"{STYLE}/{STYLE_SCOPE['rgb'](m)}/StyleGAN2Dense/weight:0", ["dense_kernel"]),
    Rule(r"rgb_styles\.b(?P<r>\d+)\.bias",
         lambda m: f"{STYLE}/{STYLE_SCOPE['rgb'](m)}/FusedBiasActivation/bias:0", ["squeeze"]),
    # Synthesis.
    Rule(r"const", f"{SYN}/ConstBlock4x4/Const4x4:0"),
    Rule(CONV.replace("(?P<j>[01]?)", "(?P<j>0)") + r"\.weight", lambda m: f"{_layer(m)}/ModulatedConv2D/weight:0",
         ["conv_kernel", "flip_hw"], note="transposed-conv kernel used as a plain conv"),
    Rule(r"convs\.b(?P<r>\d+)_conv(?P<j>1?)\.weight", lambda m: f"{_layer(m)}/ModulatedConv2D/weight:0",
         ["conv_kernel"]),
    Rule(CONV + r"\.bias", lambda m: f"{_layer(m)}/FusedBiasAct/BiasAct:0", ["squeeze"]),
    Rule(CONV + r"\.noise_strength", lambda m: f"{_layer(m)}/NoiseStrength:0", ["squeeze"]),
    Rule(CONV + r"\.noise", _noise),
    Rule(r"torgbs\.b(?P<r>\d+)\.weight", lambda m: f"{SYN}/ToRGB{m['r']}x{m['r']}/ModulatedConv2D/weight:0",
         ["conv_kernel"]),
    Rule(r"torgbs\.b(?P<r>\d+)\.bias",
         lambda m: f"{SYN}/ToRGB{m['r']}x{m['r']}/FusedBiasActivation/ToRGBBiasAct:0", ["squeeze"]),
    # Mapping network (z -> w; AttFind does not use it).
    Rule(r"mapping\.weight\.(?P<i>\d+)", f"{MAP}/Dense{{i}}/MappingDense_{{i}}:0", ["dense_kernel"]),
    Rule(r"mapping\.bias\.(?P<i>\d+)", f"{MAP}/DenseBiasAct{{i}}/MappingBias_{{i}}:0"),
    Rule(r"dlatent_avg", "dlatent_avg:0"),
    Rule(r"fir_up", derived=True, note="FIR kernel [1, 3, 3, 1], computed by the module"),
]


def infer_config(shapes: Mapping[str, tuple]) -> dict:
    """Resolution, widths, latent sizes and mapping depth from the variables alone."""
    shape = ShapeLookup(shapes, "generator")

    rx = re.compile(rf"{SYN}/GeneratorBlock(\d+)x\1/Conv1/ModulatedConv2D/weight:0$")
    blocks = sorted(int(m[1]) for n in shapes if (m := rx.search(n)))
    if not blocks:
        raise MappingError("generator: no 'generator_synthesis/GeneratorBlock{r}x{r}/Conv1/...' variables; "
                           "the names do not follow the StylEx generator's pattern")
    resolution = blocks[-1]
    expected = [2 ** i for i in range(3, int(math.log2(resolution)) + 1)]
    if blocks != expected or 2 ** int(math.log2(resolution)) != resolution:
        raise MappingError(f"generator: blocks at resolutions {blocks}; expected every power of two "
                           f"from 8 to {resolution}")
    widths = [shape(f"{SYN}/ConstBlock4x4/Const4x4:0")[1]]
    widths += [shape(f"{SYN}/GeneratorBlock{r}x{r}/Conv1/ModulatedConv2D/weight:0")[3] for r in blocks]
    w_dim = shape(f"{STYLE}/StyleVectorConst/StyleGAN2Dense/weight:0")[0]
    layers = 0
    while shape.find(f"{MAP}/Dense{layers}/MappingDense_{layers}:0") is not None:
        layers += 1
    if layers == 0:
        raise MappingError(f"generator variable '{MAP}/Dense0/MappingDense_0:0' not found")
    z_dim = shape(f"{MAP}/Dense0/MappingDense_0:0")[0]
    label_size = w_dim - shape(f"{MAP}/Dense{layers - 1}/MappingDense_{layers - 1}:0")[1]
    if label_size < 0:
        raise MappingError(f"generator: dlatent size {w_dim} is smaller than the mapping output")
    return {"resolution": resolution, "channels": [int(c) for c in widths], "z_dim": int(z_dim),
            "w_dim": int(w_dim), "label_size": int(label_size), "mapping_layers": layers,
            "mapping_lr_mul": 0.01}  # ASSUMPTION: StyleGAN2's mapping learning-rate multiplier


KIND = ModelKind(
    name="generator",
    release_stem="generator",
    signature=r"(^|/)generator_synthesis/ConstBlock4x4/",
    infer_config=infer_config,
    rules=lambda config: RULES,
    verifier="porting.verify_generator:HOOKS",
)
