"""The StylEx generator's record: config inference from names and shapes, the mapping table,
its verify inputs (real dlatents) and its ONNX spec (the synthesis, style vectors as inputs)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from porting.kinds import ModelKind, OnnxSpec, ShapeLookup, VerifySpec
from porting.mapping import MappingError, Rule
from models_pt.release_facts import GENERATOR_TRAIN_NOISE, MAPPING_LR_MUL, RELEASED_DLATENTS

STYLE = "generator_style_calculator"
SYN = "generator_synthesis"
MAP = "generator/generator_mapping"


def _style_block_index(m: re.Match) -> int:
    """TF numbers the style layers of block r as StyleVector{i} with r = 2**(i + 3)."""
    return int(math.log2(int(m["r"]))) - 3


def _noise(m: re.Match) -> str:
    """Noise constants are numbered through the network: 0 for block 4, then 2*log2(r) - 5 for
    a block's up-sampling conv and 2*log2(r) - 4 for its second conv."""
    r = int(m["r"])
    k = 0 if r == 4 else 2 * int(math.log2(r)) - 5 + int(m["j"])
    return f"Noise{k}:0"


def _conv_scope(m: re.Match) -> str:
    """Scope of a synthesis conv layer."""
    r = int(m["r"])
    if r == 4:
        return f"{SYN}/ConstBlock4x4/GeneratorLayer4x4"
    return f"{SYN}/GeneratorBlock{r}x{r}/" + ("Conv0Up" if m["j"] == "0" else "Conv1")


STYLE_SCOPE = {  # PyTorch style-layer name -> TF StyleVector name
    "conv": lambda m: "StyleVectorConst" if m["r"] == "4" else f"StyleVector{_style_block_index(m)}_{m['j']}",
    "rgb": lambda m: "StyleVectorConstRGB" if m["r"] == "4" else f"StyleVectorRGB{_style_block_index(m)}",
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
    Rule(CONV.replace("(?P<j>[01]?)", "(?P<j>0)") + r"\.weight", lambda m: f"{_conv_scope(m)}/ModulatedConv2D/weight:0",
         ["conv_kernel", "flip_hw"], note="transposed-conv kernel used as a plain conv"),
    Rule(r"convs\.b(?P<r>\d+)_conv(?P<j>1?)\.weight", lambda m: f"{_conv_scope(m)}/ModulatedConv2D/weight:0",
         ["conv_kernel"]),
    Rule(CONV + r"\.bias", lambda m: f"{_conv_scope(m)}/FusedBiasAct/BiasAct:0", ["squeeze"]),
    Rule(CONV + r"\.noise_strength", lambda m: f"{_conv_scope(m)}/NoiseStrength:0", ["squeeze"]),
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
            "mapping_lr_mul": MAPPING_LR_MUL, "train_noise": GENERATOR_TRAIN_NOISE}


# ----------------------------------------------------------------------------- verify inputs
# Real dlatents of the release: those of the release folder being verified
# (``<release>/dlatents.pkl``), else the 250 of the real release shipped with the project
# (``release_facts.RELEASED_DLATENTS``, what the released encoder produced); cut or padded to the
# model's dlatent size when it is not the release's 514. Without either file (a clone without
# ``shared/``, one zip verified on its own), seeded Gaussian dlatents, and the report says so.
GAUSSIAN = "seeded Gaussian dlatents"   # the input source when no dlatents file is at hand


def released_dlatents(path: Path | None = None) -> np.ndarray:
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    return dlatent_matrix(load_dlatents(Path(path) if path else RELEASED_DLATENTS))


def input_source(dlatents: Path | None = None) -> str:
    """Where ``make_inputs`` takes its dlatents from."""
    if dlatents is not None and Path(dlatents).exists():
        return str(dlatents)
    return str(RELEASED_DLATENTS) if RELEASED_DLATENTS.exists() else GAUSSIAN


def make_inputs(config: dict, n: int, size: int, seed: int, dlatents: Path | None = None) -> np.ndarray:
    """n dlatents [n, w_dim], starting at index ``seed`` of the real ones (wrapping)."""
    source = input_source(dlatents)
    if source == GAUSSIAN:
        real = np.random.default_rng(seed).normal(0, 1, (max(n, 2), 512 + 2)).astype(np.float32)
        real[:, 512:] = np.random.default_rng(seed + 1).dirichlet(np.ones(2), len(real))
    else:
        real = released_dlatents(source)
    rows = real[(np.arange(n) + seed) % len(real)]
    label, latent = config["label_size"], config["w_dim"] - config["label_size"]
    if rows.shape[1] == config["w_dim"] and rows.shape[1] != 512 + 2:   # the model's own (a trained one's)
        return rows.astype(np.float32)
    z = rows[:, :min(latent, 512)]
    if latent > z.shape[1]:
        z = np.concatenate([z, np.random.default_rng(seed).normal(0, z.std(), (n, latent - z.shape[1]))], 1)
    probs = rows[:, 512:] if label == 2 else np.random.default_rng(seed).dirichlet(np.ones(label), n)
    return np.concatenate([z, probs], axis=1).astype(np.float32)


def check_inputs(w: np.ndarray) -> None:
    assert w.ndim == 2 and w.shape[0] > 1, f"need a batch of dlatents, got shape {w.shape}"
    assert float(w.std(axis=0).mean()) > 0.1, "dlatents barely differ"


def check_images(images: np.ndarray) -> None:
    """Generated images must have structure for parity on them to mean anything."""
    clamped = float(np.mean(np.abs(images) >= 1))
    assert clamped < 0.01, f"{clamped:.1%} of pixels clamped at +-1"
    assert float(images.std()) > 0.05, "images nearly constant"
    assert float(images.std(axis=0).mean()) > 0.02, "images do not depend on the dlatent"


# ----------------------------------------------------------------------------- ONNX: the synthesis
def synthesis_input_names(generator) -> list[str]:
    """Names of the exported synthesis' inputs: the conv styles, then the ToRGB styles."""
    return ([f"style_conv{i}" for i in range(len(generator.style_sizes))]
            + [f"style_torgb{i}" for i in range(len(generator.torgbs))])


def synthesis_net(generator):
    """The generator's synthesis as a module of the style vectors (conv styles, then ToRGB)."""
    import torch

    n_conv = len(generator.style_sizes)

    class Synthesis(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = generator

        def forward(self, *styles):
            return self.generator.synthesis(list(styles[:n_conv]), list(styles[n_conv:]))
    return Synthesis().eval()


def synthesis_feed(generator, w: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    dtype = next(generator.parameters()).dtype   # a float64 module: its float64 style vectors
    with torch.no_grad():
        conv, rgb = generator.style_vectors(torch.from_numpy(w.astype(np.float32)).to(dtype))
    return dict(zip(synthesis_input_names(generator), [s.numpy() for s in conv + rgb]))


KIND = ModelKind(
    name="generator",
    signature=r"(^|/)generator_synthesis/ConstBlock4x4/",
    infer_config=infer_config,
    rules=lambda config: RULES,
    pt_class="models_pt.generator:Generator",
    tf_module="models_tf.generator",
    verify=VerifySpec(
        make_inputs=make_inputs, check_inputs=check_inputs, input_source=input_source,
        default_size=lambda config: config["resolution"],
    ),
    onnx=OnnxSpec(output="images", feed=synthesis_feed, net=synthesis_net),
)
