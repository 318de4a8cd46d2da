"""MobileNetV1, as the released StylEx age classifier computes it.

Takes NCHW images in [-1, 1] and returns logits ``[N, num_classes]`` (no softmax), like the TF
model does from NHWC images. What makes it TensorFlow's MobileNet and not torchvision-style:

* ``conv1`` (3x3, stride 2) uses TF 'same' padding: 0 before and 1 after on even inputs.
* Strided depthwise convs are preceded by ``ZeroPad2d((0, 1, 0, 1))`` and are 'valid'
  (keras.applications' layout; ``strided_padding='same'`` switches to TF 'same' instead).
* BatchNorm epsilon is TF's 1e-3, not PyTorch's 1e-5, and its momentum Keras' 0.99, which is
  PyTorch's ``momentum=0.01`` (PyTorch weighs the new batch by ``momentum``, Keras the old
  statistics): the running statistics of a fine-tuned model move as TF's do. Both update the
  running variance with the unbiased batch variance (TF's fused kernel, the float32 path).
* The head is global average pooling, dropout (inactive at inference) and a 1x1 conv with bias.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from models_pt import tracing
from models_pt.padding import Conv2dSame

# (pointwise filters, depthwise stride) of the 13 depthwise-separable blocks.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def keras_momentum(momentum: float) -> float:
    """Keras' BatchNormalization momentum (``moving = momentum * moving + (1 - momentum) * batch``)
    as PyTorch's (``running = (1 - m) * running + m * batch``): 0.99 -> 0.01, rounded to float32
    as TF holds the decay (its fused kernel's float attribute, Keras' float32 constant): the
    double 0.01 would differ from TF's by 2e-10 of each update, which float64 parity sees."""
    return float(np.float32(1.0 - float(momentum)))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, depth_multiplier: int, eps: float,
                 strided_padding: str, momentum: float):
        super().__init__()
        cmid = cin * depth_multiplier
        if stride == 2 and strided_padding == "explicit":
            self.pad = nn.ZeroPad2d((0, 1, 0, 1))  # left, right, top, bottom
            self.dw = nn.Conv2d(cin, cmid, 3, stride, padding=0, groups=cin, bias=False)
        else:
            self.pad = nn.Identity()
            self.dw = Conv2dSame(cin, cmid, 3, stride, groups=cin, bias=False)
        self.dw_bn = nn.BatchNorm2d(cmid, eps=eps, momentum=momentum)
        self.dw_act = nn.ReLU6()
        self.pw = nn.Conv2d(cmid, cout, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.pw_act = nn.ReLU6()

    def forward(self, x):
        x = self.dw_act(self.dw_bn(self.dw(self.pad(x))))
        return self.pw_act(self.pw_bn(self.pw(x)))


class Head(nn.Module):
    def __init__(self, cin: int, num_classes: int, dropout: float):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(cin, num_classes, 1, bias=True)
        self.flatten = nn.Flatten(1)

    def forward(self, x):
        return self.flatten(self.conv(self.dropout(self.pool(x))))


class MobileNetV1(nn.Module):
    kind = "classifier"

    def __init__(self, *, alpha: float, depth_multiplier: int, num_classes: int, bn_epsilon: float,
                 strided_padding: str, bn_momentum: float = 0.99, dropout: float = 1e-3):
        """All fields come from the converted weights' header (``models_pt.load``); for the
        release they are alpha 1.0, depth_multiplier 1, num_classes 2, bn_epsilon 1e-3 (TF's),
        strided_padding 'explicit', bn_momentum 0.99 and dropout 1e-3 (Keras' values; headers
        written before converter 0.3.0 lack the last two and get these). ``bn_momentum`` is in
        Keras' convention (the weight of the old statistics). Any input size works (the release
        uses 256)."""
        super().__init__()
        if strided_padding not in ("explicit", "same"):
            raise ValueError(f"strided_padding must be 'explicit' or 'same', got {strided_padding!r}")
        if not 0.0 <= bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum is Keras' (the old statistics' weight, in [0, 1]), got {bn_momentum!r}")
        self.config = dict(alpha=alpha, depth_multiplier=depth_multiplier, num_classes=num_classes,
                           bn_epsilon=bn_epsilon, strided_padding=strided_padding, bn_momentum=bn_momentum,
                           dropout=dropout)
        momentum = keras_momentum(bn_momentum)
        c = int(32 * alpha)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", Conv2dSame(3, c, 3, stride=2, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(c, eps=bn_epsilon, momentum=momentum))
        self.stem.add_module("act", nn.ReLU6())
        blocks = []
        for filters, stride in BLOCKS:
            cout = int(filters * alpha)
            blocks.append(DepthwiseSeparable(c, cout, stride, depth_multiplier, bn_epsilon, strided_padding,
                                             momentum))
            c = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(c, num_classes, dropout)

    def forward(self, x):
        """x: NCHW images in [-1, 1] -> logits [N, num_classes]."""
        return self.head(self.blocks(self.stem(x)))

    def trace_points(self) -> dict[str, str]:
        """Submodule -> Keras layer name of every traced activation, in network order (the
        padding layers exactly where the TF model has them; the last: the logits)."""
        points = {"stem.conv": "conv1", "stem.bn": "conv1_bn", "stem.act": "conv1_relu"}
        for i, (_, stride) in enumerate(BLOCKS):
            k = i + 1
            if stride == 2 and self.config["strided_padding"] == "explicit":
                points[f"blocks.{i}.pad"] = f"conv_pad_{k}"
            points.update({f"blocks.{i}.dw": f"conv_dw_{k}", f"blocks.{i}.dw_bn": f"conv_dw_{k}_bn",
                           f"blocks.{i}.dw_act": f"conv_dw_{k}_relu", f"blocks.{i}.pw": f"conv_pw_{k}",
                           f"blocks.{i}.pw_bn": f"conv_pw_{k}_bn", f"blocks.{i}.pw_act": f"conv_pw_{k}_relu"})
        points.update({"head.pool": "global_average_pooling2d", "head.dropout": "dropout",
                       "head.conv": "conv_preds", "head.flatten": "reshape_2", "": "predictions"})
        return points

    def trace(self, x):
        """Every activation of ``trace_points`` on NCHW images ``x``, by forward hooks."""
        return tracing.trace(self, self.trace_points(), x)
