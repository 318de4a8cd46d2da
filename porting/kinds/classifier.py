"""The MobileNetV1 classifier's record: detection, config inference, the mapping table (TF ->
models_pt), its verify inputs and its ONNX spec."""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from porting.kinds import ModelKind, OnnxSpec, ShapeLookup, VerifySpec
from porting.mapping import MappingError, Rule
from models_pt.release_facts import CLASSIFIER_ASSUMED as ASSUMED

NUM_BLOCKS = 13

BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
BN_PARAM = "(?P<param>weight|bias|running_mean|running_var)"


def _block(m: re.Match) -> int:
    """PyTorch blocks are numbered from 0, Keras' conv_dw_k / conv_pw_k from 1."""
    return int(m["i"]) + 1


RULES = [
    Rule(r"stem\.conv\.weight", "conv1/kernel:0", ["conv_kernel"], note="[kh,kw,in,out] -> [out,in,kh,kw]"),
    Rule(rf"stem\.bn\.{BN_PARAM}", lambda m: f"conv1_bn/{BN[m['param']]}:0"),
    Rule(r"blocks\.(?P<i>\d+)\.dw\.weight", lambda m: f"conv_dw_{_block(m)}/depthwise_kernel:0",
         ["depthwise_kernel"], note="[kh,kw,in,mult] -> [in*mult,1,kh,kw]"),
    Rule(r"blocks\.(?P<i>\d+)\.pw\.weight", lambda m: f"conv_pw_{_block(m)}/kernel:0", ["conv_kernel"]),
    Rule(rf"blocks\.(?P<i>\d+)\.(?P<part>dw|pw)_bn\.{BN_PARAM}",
         lambda m: f"conv_{m['part']}_{_block(m)}_bn/{BN[m['param']]}:0"),
    Rule(r"head\.conv\.weight", "conv_preds/kernel:0", ["conv_kernel"]),
    Rule(r"head\.conv\.bias", "conv_preds/bias:0"),
    Rule(r".*\.num_batches_tracked", derived=True, note="PyTorch-only training counter"),
]


def infer_config(shapes: Mapping[str, tuple]) -> dict:
    """Width, depth multiplier and classes from the kernels' shapes; the rest is TF's layout.

    What the checkpoint cannot show comes from ``ASSUMED`` (BatchNorm epsilon 1e-3 as in
    Keras; keras.applications' explicit (0, 1) padding before strided depthwise convs)."""
    shape = ShapeLookup(shapes, "classifier")

    conv1 = shape("conv1/kernel:0")
    if len(conv1) != 4 or conv1[:3] != (3, 3, 3):
        raise MappingError(f"classifier variable 'conv1/kernel:0': expected shape [3, 3, 3, C], found {list(conv1)}")
    dw1 = shape("conv_dw_1/depthwise_kernel:0")
    preds = shape("conv_preds/kernel:0")
    for k in range(1, NUM_BLOCKS + 1):
        shape(f"conv_dw_{k}/depthwise_kernel:0")
        shape(f"conv_pw_{k}/kernel:0")
    if shape.find(f"conv_dw_{NUM_BLOCKS + 1}/depthwise_kernel:0") is not None:
        raise MappingError(f"classifier has more than {NUM_BLOCKS} depthwise blocks; MobileNetV1 has {NUM_BLOCKS}")
    return {"alpha": conv1[3] / 32, "depth_multiplier": int(dw1[3]), "num_classes": int(preds[3]),
            **ASSUMED}


def make_inputs(config: dict, n: int, size: int, seed: int) -> np.ndarray:
    from porting.samples import sample_images

    return sample_images(n, size, seed=seed + 1000)  # NHWC, [-1, 1]


def check_inputs(x: np.ndarray) -> None:
    """NHWC images in [-1, 1] that exercise every layer (also used for NCHW images, transposed)."""
    clamped = float(np.mean(np.abs(x) >= 0.999))
    assert x.ndim == 4 and x.shape[0] > 1, f"need a batch of images, got shape {x.shape}"
    assert clamped < 0.05, f"{clamped:.1%} of input pixels are clamped at +-1"
    assert float(x.std()) > 0.1, "input images are nearly constant"
    assert float(np.abs(x[0] - x[1]).max()) > 0.1, "input images are identical"


VERIFY = VerifySpec(
    make_inputs=make_inputs, check_inputs=check_inputs, nhwc=True,
)

KIND = ModelKind(
    name="classifier",
    signature=r"(^|/)conv_dw_\d+/depthwise_kernel:0$",
    infer_config=infer_config,
    rules=lambda config: RULES,
    pt_class="models_pt.classifier:MobileNetV1",
    tf_module="models_tf.classifier",
    verify=VERIFY,
    onnx=OnnxSpec(output="logits", size_fixed=True,
                  feed=lambda module, x: {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)}),
)
