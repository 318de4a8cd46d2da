"""The StylEx encoder and discriminator in plain PyTorch (StyleGAN2 "resnet" layout, NCHW).

Same computation as ``models_tf/resnet_d.py``: run-time equalized learning rate, FIR-blurred
stride-2 convs with StyleGAN2's padding, residual sum scaled by 1/sqrt(2), minibatch standard
deviation (discriminator), and a label-weighted output (discriminator: score = sum over classes
of output * label probability, the release-format.md ASSUMPTION).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models_pt import tracing
from models_pt.ops import SQRT2, fir_filter, fir_kernel, lrelu


class Conv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, down: bool = False, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.down, self.kernel = down, kernel
        self.scale = 1 / math.sqrt(cin * kernel * kernel)

    def forward(self, x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        if self.down:
            p = (4 - 2) + (self.kernel - 1)
            y = F.conv2d(fir_filter(x, fir, (p + 1) // 2, p // 2), w, stride=2)
        else:
            y = F.conv2d(x, w, padding=self.kernel // 2)
        if self.bias is None:
            return y
        return lrelu(y + self.bias[None, :, None, None])


class Dense(nn.Module):
    """Equalized-learning-rate dense layer, y = x @ (weight / sqrt(in)).T + bias, optional lrelu."""

    def __init__(self, cin: int, cout: int, act: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.act, self.fan_in = act, cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight / math.sqrt(self.fan_in), self.bias)
        return lrelu(y) if self.act else y


class Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = Conv(cin, cin, 3)
        self.conv1 = Conv(cin, cout, 3, down=True)
        self.skip = Conv(cin, cout, 1, down=True, bias=False)

    def forward(self, x, fir):
        return (self.conv1(self.conv0(x, fir), fir) + self.skip(x, fir)) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    n, c, h, w = x.shape
    g = min(group, n)
    if not torch.jit.is_tracing() and n % g:
        raise ValueError(f"minibatch standard deviation: batch size {n} is not a multiple of its group size "
                         f"{g} (min({group}, batch)); StyleGAN2 and the TF model need one, e.g. {n - n % g} "
                         f"or {n - n % g + g}")
    if torch.jit.is_tracing():
        # Traced for ONNX, Python's min() would freeze the comparison made at the traced batch
        # size (g = N for every batch): keep min(group, N) in the graph so a dynamic batch works.
        g = torch.clamp(torch._shape_as_tensor(x)[0], max=group)
    y = x.reshape(g, -1, c, h, w)
    y = torch.sqrt((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8)   # [N / g, c, h, w]
    y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # [N, 1, h, w]
    return torch.cat([x, y], dim=1)


class ResnetD(nn.Module):
    def __init__(self, *, resolution: int, channels: list[int], out_units: int, mbstd_group: int):
        super().__init__()
        res = [4 * 2 ** i for i in range(len(channels))]
        ch = dict(zip(res, channels))
        self.from_rgb = Conv(3, ch[resolution], 1)
        self.blocks = nn.ModuleDict({f"b{r}": Block(ch[r], ch[r // 2]) for r in reversed(res) if r > 4})
        self.mbstd_group = mbstd_group
        self.conv4 = Conv(ch[4] + (1 if mbstd_group else 0), ch[4], 3)
        self.dense4 = Dense(ch[4] * 16, ch[4], act=True)
        self.out = Dense(ch[4], out_units, act=False)
        self.register_buffer("fir_down", fir_kernel(1.0))   # derived: [1, 3, 3, 1], gain 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.from_rgb(images, self.fir_down)
        for block in self.blocks.values():
            x = block(x, self.fir_down)
        if self.mbstd_group:
            x = minibatch_stddev(x, self.mbstd_group)
        return self.out(self.dense4(self.conv4(x, self.fir_down).flatten(1)))

    def trace_points(self) -> dict[str, str]:
        """Submodule -> label of every traced activation, TF's labels, in network order."""
        points = {"from_rgb": "fromrgb"}
        points.update({f"blocks.{name}": self.block_label(int(name[1:])) for name in self.blocks})
        points["dense4"] = "dense4x4"
        return points

    def trace(self, *inputs) -> dict[str, torch.Tensor]:
        """Every activation of ``trace_points`` on ``inputs``, by forward hooks."""
        return tracing.trace(self, self.trace_points(), *inputs)


class Encoder(ResnetD):
    kind = "encoder"

    def __init__(self, *, resolution: int, channels: list[int], latent_size: int):
        super().__init__(resolution=resolution, channels=channels, out_units=latent_size, mbstd_group=0)
        self.config = dict(resolution=resolution, channels=list(channels), latent_size=latent_size)

    @staticmethod
    def block_label(r: int) -> str:
        return f"EncoderBlock{r}x{r}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """NCHW images in [-1, 1] -> latents [N, latent_size]."""
        return self.features(images)

    def trace_points(self) -> dict[str, str]:
        return {**super().trace_points(), "": "latent"}


class Discriminator(ResnetD):
    kind = "discriminator"

    def __init__(self, *, resolution: int, channels: list[int], label_size: int, mbstd_group: int):
        super().__init__(resolution=resolution, channels=channels, out_units=label_size, mbstd_group=mbstd_group)
        self.config = dict(resolution=resolution, channels=list(channels), label_size=label_size,
                           mbstd_group=mbstd_group)

    @staticmethod
    def block_label(r: int) -> str:
        return f"DiscriminatorBlock{r}x{r}"

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """NCHW images, label probabilities [N, label_size] -> scores [N, 1]."""
        return (self.features(images) * labels.to(images.dtype)).sum(dim=1, keepdim=True)

    def trace_points(self) -> dict[str, str]:
        return {**super().trace_points(), "out": "logits", "": "score"}
