"""The Inception v3 network FID is defined on, as pytorch-fid runs it, written for this project.

FID's features are the 2048 values of Inception v3's last average pool, computed by the 2015
TensorFlow Inception graph. pytorch-fid ships those weights as a PyTorch state dict
(``pt_inception-2015-12-05-6726825d.pth``); this module builds a network with the same
parameter names and shapes, so that file loads here, and computes what pytorch-fid computes:

- the input in [0, 1] is resized to 299 x 299 (bilinear, ``align_corners=False``) and mapped to
  [-1, 1];
- the FID variants of the blocks: the average pools of the A, C and first E blocks leave the
  padding out of the mean (``count_include_pad=False``), and the last E block pools with a max;
- BatchNorm with eps 0.001 in inference mode, the 1008-way ``fc`` kept only so the file's keys
  match (the features are taken before it).

The weights cannot be downloaded on machines without internet; ``load_inception`` says in one
line where to get them. Layer: ``stylex_port.analyses`` (torch, and the project's error type).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from porting.errors import PortError

FEATURES = 2048
INPUT_SIZE = 299
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAME)


class InceptionWeightsError(PortError):
    """A missing or wrong Inception weights file; the message is one line naming the file (the
    command line prints it and exits with code 2, as for any bad input)."""


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001), ReLU: the file's ``<name>.conv`` and ``<name>.bn``."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35 x 35: 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x):
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), dbl,
                          self.branch_pool(_avg3(x))], 1)


class BlockB(nn.Module):
    """35 -> 17: strided 3x3, strided double 3x3, max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), dbl, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17 x 17: factorised 7x7 branches of width ``c7``."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, **row)
        self.branch7x7_3 = ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = ConvBN(c7, 192, **row)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class BlockD(nn.Module):
    """17 -> 8: strided 3x3 after 1x1, strided 3x3 after a 7x7, max pool."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8 x 8: split 1x3 / 3x1 branches; ``max_pool``: the last block pools with a max (FID's variant)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x),
                          self.branch3x3_2a(s), self.branch3x3_2b(s),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
                          self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """Images in [0, 1], ``[N, 3, H, W]`` -> the 2048 pool features ``[N, 2048]``."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURES, 1008)     # in the file; FID does not use it

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images01, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def expected_keys() -> dict[str, tuple[int, ...]]:
    """Every tensor the weights file must hold, with its shape (BatchNorm's step counter excluded)."""
    return {k: tuple(v.shape) for k, v in FIDInception().state_dict().items() if not k.endswith("num_batches_tracked")}


def load_inception(path: Path) -> FIDInception:
    """The network with pytorch-fid's weights from ``path`` (a state dict saved by ``torch.save``),
    in inference mode. Every key and shape is checked; a problem is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InceptionWeightsError(f"{path}: no such file; FID needs pytorch-fid's Inception weights "
                                    f"({WEIGHTS_NAME}, from {WEIGHTS_URL}), passed as --inception-weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                                     # not a torch file, truncated, pickled code
        raise InceptionWeightsError(f"{path}: not a PyTorch state dict ({type(e).__name__}); expected "
                                    f"{WEIGHTS_NAME} from {WEIGHTS_URL}") from None
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{path}: holds a {type(state).__name__}, expected a state dict")
    want = expected_keys()
    missing = [k for k in want if k not in state]
    if missing:
        raise InceptionWeightsError(f"{path}: {len(missing)} of Inception v3's tensors are missing, the first "
                                    f"{missing[0]!r}; expected pytorch-fid's {WEIGHTS_NAME}")
    for k, shape in want.items():
        if not isinstance(state[k], torch.Tensor):
            raise InceptionWeightsError(f"{path}: {k} is a {type(state[k]).__name__}, expected a tensor of "
                                        f"shape {list(shape)}")
        got = tuple(state[k].shape)
        if got != shape:
            raise InceptionWeightsError(f"{path}: {k} has shape {list(got)}, expected {list(shape)}")
    net = FIDInception()
    net.load_state_dict({k: state[k] for k in want}, strict=False)
    return net.eval()
