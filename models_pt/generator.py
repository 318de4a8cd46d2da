"""The StylEx generator in plain PyTorch (StyleGAN2 config-f, skip architecture), CPU or CUDA.

StyleSpace is first-class:

    conv_styles, rgb_styles = G.style_vectors(w)        # exactly TF's style_vector_calculator
    images = G.synthesis(conv_styles, rgb_styles)       # NCHW, roughly [-1, 1]
    edited = G.synthesis_edit(conv_styles, rgb_styles, coords, deltas)   # one image, K edits

StyleSpace coordinate j is position j of ``concat(conv_styles, dim=1)`` (the ToRGB styles are
not part of it), in the order block 4, then each resolution's conv0 and conv1.

Conventions that differ from the TF release, each matched by one mapping rule:

* weights are stored ``[out, in, kh, kw]`` and scaled at run time by 1/sqrt(fan_in)
  (equalized learning rate), as TF does, so they copy over unscaled;
* the up-sampling conv's weight is stored in plain-conv (cross-correlation) orientation, i.e.
  spatially flipped relative to TF's transposed-conv kernel;
* none other: like TF, a style layer adds its ``+1`` at run time after the dense layer (folding
  it into a float32 bias would round away bits TF keeps, and float64 parity would show it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
FIR = [1.0, 3.0, 3.0, 1.0]


def fir_kernel(gain: float) -> torch.Tensor:
    k = torch.tensor(FIR, dtype=torch.float64)
    k = torch.outer(k, k)
    return (k / k.sum() * gain).float()


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad0: int, pad1: int) -> torch.Tensor:
    """Pad (pad0 before, pad1 after, both spatial axes), then a depthwise FIR filter."""
    c = int(x.shape[1])  # a constant when traced for ONNX: the kernel needs a known shape
    x = F.pad(x, (pad0, pad1, pad0, pad1))
    return F.conv2d(x, kernel.to(x.dtype).expand(c, 1, *kernel.shape), groups=c)


def zero_upsample(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W], each sample at (2i, 2j), zeros between."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, 1, 0, 0, 0, 1))
    return x.reshape(n, c, 2 * h, 2 * w)


class StyleDense(nn.Module):
    """style = w @ (weight / sqrt(w_dim)).T + bias + 1, the +1 at run time as in TF."""

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, w_dim))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.scale = 1 / math.sqrt(w_dim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return F.linear(w, self.weight * self.scale, self.bias) + 1.0


class ModulatedConv(nn.Module):
    """Modulate activations, convolve, demodulate; optional 2x up-sampling; noise; bias; lrelu."""

    def __init__(self, cin: int, cout: int, resolution: int, up: bool):
        super().__init__()
        self.up = up
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))   # cross-correlation orientation
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise", torch.zeros(1, 1, resolution, resolution))  # the release's constant
        self.scale = 1 / math.sqrt(cin * 9)

    def forward(self, x: torch.Tensor, style: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        x = x * style[:, :, None, None]
        if self.up:
            # A stride-2 transposed conv wants the kernel in transposed-conv orientation: flip it
            # back, and swap to conv_transpose2d's [in, out, kh, kw]. Then the FIR blur, gain 4.
            y = F.conv_transpose2d(x, w.flip([2, 3]).transpose(0, 1), stride=2)
            y = fir_filter(y, fir, 1, 1)
        else:
            y = F.conv2d(x, w, padding=1)
        # d[n, out] = 1 / sqrt(sum over in, kh, kw of (w * style[n, in])^2 + 1e-8)
        d = torch.rsqrt(style.square() @ w.square().sum(dim=(2, 3)).T + 1e-8)
        y = y * d[:, :, None, None] + self.noise * self.noise_strength
        return F.leaky_relu(y + self.bias[None, :, None, None], 0.2) * SQRT2


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation, plus bias."""

    def __init__(self, cin: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.scale = 1 / math.sqrt(cin)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x * style[:, :, None, None], self.weight * self.scale)
        return y + self.bias[None, :, None, None]


class Mapping(nn.Module):
    """z -> pixel norm -> dense layers (lr_mul, leaky ReLU) -> concat(., labels)."""

    def __init__(self, z_dim: int, layers: int, lr_mul: float):
        super().__init__()
        self.weight = nn.ParameterList([nn.Parameter(torch.randn(z_dim, z_dim)) for _ in range(layers)])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(z_dim)) for _ in range(layers)])
        self.lr_mul, self.scale = lr_mul, lr_mul / math.sqrt(z_dim)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for weight, bias in zip(self.weight, self.bias):
            x = F.leaky_relu(F.linear(x, weight * self.scale, bias * self.lr_mul), 0.2) * SQRT2
        return torch.cat([x, labels.to(x.dtype)], dim=1)


class Generator(nn.Module):
    kind = "generator"

    def __init__(self, *, resolution: int, channels: list[int], z_dim: int, w_dim: int, label_size: int,
                 mapping_layers: int, mapping_lr_mul: float):
        """``channels[i]`` is the width at resolution 4 * 2**i; all fields come from the converted
        weights' header (``models_pt.load``)."""
        super().__init__()
        self.config = dict(resolution=resolution, channels=list(channels), z_dim=z_dim, w_dim=w_dim,
                           label_size=label_size, mapping_layers=mapping_layers, mapping_lr_mul=mapping_lr_mul)
        self.resolutions = [4 * 2 ** i for i in range(len(channels))]
        if self.resolutions[-1] != resolution:
            raise ValueError(f"{len(channels)} channel widths do not reach resolution {resolution}")
        ch = dict(zip(self.resolutions, channels))
        self.num_layers = 2 * len(channels)

        self.mapping = Mapping(z_dim, mapping_layers, mapping_lr_mul)
        self.register_buffer("dlatent_avg", torch.zeros(w_dim))
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        # Style layers and synthesis layers, both keyed by name, in StyleSpace order.
        self.conv_styles, self.rgb_styles = nn.ModuleDict(), nn.ModuleDict()
        self.convs, self.torgbs = nn.ModuleDict(), nn.ModuleDict()
        self.conv_styles["b4_conv"] = StyleDense(w_dim, ch[4])
        self.convs["b4_conv"] = ModulatedConv(ch[4], ch[4], 4, up=False)
        self.rgb_styles["b4"] = StyleDense(w_dim, ch[4])
        self.torgbs["b4"] = ToRGB(ch[4])
        for r in self.resolutions[1:]:
            self.conv_styles[f"b{r}_conv0"] = StyleDense(w_dim, ch[r // 2])
            self.conv_styles[f"b{r}_conv1"] = StyleDense(w_dim, ch[r])
            self.convs[f"b{r}_conv0"] = ModulatedConv(ch[r // 2], ch[r], r, up=True)
            self.convs[f"b{r}_conv1"] = ModulatedConv(ch[r], ch[r], r, up=False)
            self.rgb_styles[f"b{r}"] = StyleDense(w_dim, ch[r])
            self.torgbs[f"b{r}"] = ToRGB(ch[r])
        self.register_buffer("fir_up", fir_kernel(4.0))  # derived: the [1, 3, 3, 1] kernel, gain 4
        self.style_sizes = [m.weight.shape[0] for m in self.conv_styles.values()]

    # -------------------------------------------------------------- StyleSpace
    def _w_at(self, w: torch.Tensor, layer: int) -> torch.Tensor:
        return w[:, layer] if w.dim() == 3 else w

    def style_vectors(self, w: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """w [N, w_dim] (or [N, num_layers, w_dim]) -> (conv styles, ToRGB styles), as TF."""
        conv = [m(self._w_at(w, i)) for i, m in enumerate(self.conv_styles.values())]
        rgb = [m(self._w_at(w, 2 * i + 1)) for i, m in enumerate(self.rgb_styles.values())]
        return conv, rgb

    def synthesis(self, conv_styles, rgb_styles, acts: dict | None = None, *, start: int = 0,
                  state: tuple | None = None) -> torch.Tensor:
        """Render style vectors into NCHW images. ``acts``: filled with each block's outputs.

        ``start``/``state``: resume before conv style layer ``start`` from ``state`` (as
        ``synthesis_state`` returns it), so work an edit of a later layer cannot change is done
        once. Batch-1 state tensors broadcast against a batch of styles."""
        return self._run(conv_styles, rgb_styles, start, len(self.convs), state, acts)[1]

    def synthesis_state(self, conv_styles, rgb_styles, layer: int) -> tuple | None:
        """``(x, img)`` just before conv style layer ``layer``: its input activations and the RGB
        image accumulated so far, for ``synthesis(start=layer, state=...)``."""
        return self._run(conv_styles, rgb_styles, 0, layer, None, None) if layer > 0 else None

    def _run(self, conv_styles, rgb_styles, start: int, stop: int, state, acts) -> tuple:
        """Conv style layers ``start`` to ``stop - 1``, each with the ToRGB that follows it."""
        convs = list(self.convs.values())
        if start == 0:
            x, img = self.const.expand(conv_styles[0].shape[0], -1, -1, -1), None
        else:
            x, img = state
        for layer in range(start, stop):
            x = convs[layer](x, conv_styles[layer], self.fir_up)
            if layer == 0:
                img = self.torgbs["b4"](x, rgb_styles[0])
                if acts is not None:
                    acts["b4/conv"], acts["b4/rgb"] = x, img
                continue
            k = (layer - 1) // 2
            r = self.resolutions[1 + k]
            if layer % 2 == 1:  # conv0, the up-sampling conv of block r
                if acts is not None:
                    acts[f"b{r}/conv0"] = x
                continue
            img = fir_filter(zero_upsample(img), self.fir_up, 2, 1) + self.torgbs[f"b{r}"](x, rgb_styles[1 + k])
            if acts is not None:
                acts[f"b{r}/conv1"], acts[f"b{r}/rgb"] = x, img
        return x, img

    def split_coordinate(self, j: int) -> tuple[int, int]:
        """StyleSpace coordinate -> (conv style layer, channel)."""
        for layer, size in enumerate(self.style_sizes):
            if j < size:
                return layer, j
            j -= size
        raise IndexError(f"StyleSpace coordinate out of range (size {sum(self.style_sizes)})")

    def synthesis_edit(self, conv_styles, rgb_styles, coords, deltas) -> torch.Tensor:
        """One image's styles ([1, C_i] each), K single-coordinate edits -> K images.

        Image k has coordinate ``coords[k]`` shifted by ``deltas[k]``; nothing else changes and no
        weight is touched."""
        k = len(coords)
        conv = [s.expand(k, -1).clone() for s in conv_styles]
        rgb = [s.expand(k, -1) for s in rgb_styles]
        deltas = torch.as_tensor(deltas, dtype=conv[0].dtype, device=conv[0].device)
        for row, j in enumerate(coords):
            layer, c = self.split_coordinate(int(j))
            conv[layer][row, c] += deltas[row]
        return self.synthesis(conv, rgb)

    # -------------------------------------------------------------- whole model
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """dlatents w [N, w_dim] -> images NCHW."""
        return self.synthesis(*self.style_vectors(w))

    def trace(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every style vector, every block's activations, then the image (last); same labels as TF."""
        conv, rgb = self.style_vectors(w)
        acts = {f"style/conv{i}": s for i, s in enumerate(conv)}
        acts.update({f"style/torgb{i}": s for i, s in enumerate(rgb)})
        acts["image"] = self.synthesis(conv, rgb, acts)
        return acts
