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

from models_pt import tracing
from models_pt.stylespace import StyleSpace
from models_pt.ops import fir_filter, fir_kernel, lrelu, zero_upsample


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

    def forward(self, x: torch.Tensor, style: torch.Tensor, fir: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``noise``: [N or 1, 1, H, W] in place of the stored constant (training draws it)."""
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
        y = y * d[:, :, None, None] + (self.noise if noise is None else noise) * self.noise_strength
        return lrelu(y + self.bias[None, :, None, None])


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


class SkipUp(nn.Module):
    """The skip architecture's running image: the previous RGB up-sampled 2x (zeros inserted,
    padded (2, 1), FIR with gain 4) plus this block's ToRGB output."""

    def forward(self, img: torch.Tensor, rgb: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
        return fir_filter(zero_upsample(img), fir, 2, 1) + rgb


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
            x = lrelu(F.linear(x, weight * self.scale, bias * self.lr_mul))
        return torch.cat([x, labels.to(x.dtype)], dim=1)


class Generator(nn.Module):
    kind = "generator"

    def __init__(self, *, resolution: int, channels: list[int], z_dim: int, w_dim: int, label_size: int,
                 mapping_layers: int, mapping_lr_mul: float, train_noise: str = "random"):
        """``channels[i]`` is the width at resolution 4 * 2**i; all fields come from the converted
        weights' header (``models_pt.load``). ``train_noise``: what the convs add in training mode,
        ``"random"`` (fresh N(0, 1) noise per image and call, as StyleGAN2 trains) or ``"const"``
        (the stored constants, as at inference); headers before converter 0.3.0 lack it."""
        super().__init__()
        if train_noise not in ("random", "const"):
            raise ValueError(f"train_noise must be 'random' or 'const', got {train_noise!r}")
        self.config = dict(resolution=resolution, channels=list(channels), z_dim=z_dim, w_dim=w_dim,
                           label_size=label_size, mapping_layers=mapping_layers, mapping_lr_mul=mapping_lr_mul,
                           train_noise=train_noise)
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
        self.convs, self.torgbs, self.skips = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
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
            self.skips[f"b{r}"] = SkipUp()
        self.register_buffer("fir_up", fir_kernel(4.0))  # derived: the [1, 3, 3, 1] kernel, gain 4
        self.style_sizes = [m.weight.shape[0] for m in self.conv_styles.values()]
        self.space = StyleSpace(self.style_sizes)   # coordinate <-> (layer, channel), AttFind's shifts

    # -------------------------------------------------------------- StyleSpace
    def _w_at(self, w: torch.Tensor, layer: int) -> torch.Tensor:
        return w[:, layer] if w.dim() == 3 else w

    def style_vectors(self, w: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """w [N, w_dim] (or [N, num_layers, w_dim]) -> (conv styles, ToRGB styles), as TF."""
        conv = [m(self._w_at(w, i)) for i, m in enumerate(self.conv_styles.values())]
        rgb = [m(self._w_at(w, 2 * i + 1)) for i, m in enumerate(self.rgb_styles.values())]
        return conv, rgb

    def synthesis(self, conv_styles, rgb_styles, *, start: int = 0, state: tuple | None = None,
                  noise: list | None = None) -> torch.Tensor:
        """Render style vectors into NCHW images.

        ``start``/``state``: resume before conv style layer ``start`` from ``state`` (as
        ``synthesis_state`` returns it), so work an edit of a later layer cannot change is done
        once. Batch-1 state tensors broadcast against a batch of styles.

        ``noise``: one ``[N, 1, r, r]`` tensor per conv layer (``noise_like``); by default the
        stored constants, or in training mode with ``train_noise="random"`` fresh noise."""
        return self._run(conv_styles, rgb_styles, start, len(self.convs), state, self._noise(conv_styles, noise))[1]

    def _noise(self, conv_styles, noise):
        """Given noise, or in training mode with ``train_noise="random"`` fresh noise, else None
        (the stored constants)."""
        if noise is None and self.training and self.config["train_noise"] == "random":
            s = conv_styles[0]
            noise = self.noise_like(s.shape[0], dtype=s.dtype, device=s.device)
        return noise

    def noise_like(self, batch: int, generator: torch.Generator | None = None, dtype=None, device=None) -> list:
        """Fresh standard-normal noise, one ``[batch, 1, r, r]`` tensor per conv layer, in order."""
        return [torch.randn(batch, 1, *m.noise.shape[2:], generator=generator, dtype=dtype or m.noise.dtype,
                            device=device or m.noise.device) for m in self.convs.values()]

    def synthesis_state(self, conv_styles, rgb_styles, layer: int, noise: list | None = None) -> tuple | None:
        """``(x, img)`` just before conv style layer ``layer``: its input activations and the RGB
        image accumulated so far, for ``synthesis(start=layer, state=...)`` (``noise``: as there)."""
        if layer == 0:
            return None
        return self._run(conv_styles, rgb_styles, 0, layer, None, self._noise(conv_styles, noise))

    def _run(self, conv_styles, rgb_styles, start: int, stop: int, state, noise=None) -> tuple:
        """Conv style layers ``start`` to ``stop - 1``; after each block's last conv, its ToRGB
        joins the running image."""
        convs = list(self.convs.values())
        if start == 0:
            x, img = self.const.expand(conv_styles[0].shape[0], -1, -1, -1), None
        else:
            x, img = state
        for layer in range(start, stop):
            x = convs[layer](x, conv_styles[layer], self.fir_up, None if noise is None else noise[layer])
            if layer == 0:
                img = self.torgbs["b4"](x, rgb_styles[0])
            elif layer % 2 == 0:  # conv1, the last conv of block r
                k = layer // 2 - 1
                name = f"b{self.resolutions[1 + k]}"
                img = self.skips[name](img, self.torgbs[name](x, rgb_styles[1 + k]), self.fir_up)
        return x, img

    def split_coordinate(self, j: int) -> tuple[int, int]:
        """StyleSpace coordinate -> (conv style layer, channel)."""
        return self.space.split(j)

    def synthesis_edit(self, conv_styles, rgb_styles, coords, deltas) -> torch.Tensor:
        """One image's styles ([1, C_i] each), K single-coordinate edits -> K images.

        Image k has coordinate ``coords[k]`` shifted by ``deltas[k]``; nothing else changes and no
        weight is touched."""
        k = len(coords)
        conv = [s.expand(k, -1).clone() for s in conv_styles]
        rgb = [s.expand(k, -1) for s in rgb_styles]
        deltas = torch.as_tensor(deltas, dtype=conv[0].dtype, device=conv[0].device)
        for row, j in enumerate(coords):
            layer, c = self.space.split(int(j))
            conv[layer][row, c] += deltas[row]
        return self.synthesis(conv, rgb)

    # -------------------------------------------------------------- whole model
    def forward(self, w: torch.Tensor, noise: list | None = None) -> torch.Tensor:
        """dlatents w [N, w_dim] -> images NCHW (``noise``: see ``synthesis``)."""
        return self.synthesis(*self.style_vectors(w), noise=noise)

    def sample(self, z: torch.Tensor, labels: torch.Tensor, noise: list | None = None) -> torch.Tensor:
        """z [N, z_dim] and label probabilities [N, label_size] -> images NCHW: the mapping
        network, then ``forward`` (no truncation; ``dlatent_avg`` is the release's average w)."""
        return self(self.mapping(z, labels), noise=noise)

    def trace_points(self) -> dict[str, str]:
        """Submodule -> label of every traced activation, TF's labels: every style vector, each
        conv's output and each running RGB image, then the image (the model's own output)."""
        points = {f"conv_styles.{n}": f"style/conv{i}" for i, n in enumerate(self.conv_styles)}
        points.update({f"rgb_styles.{n}": f"style/torgb{i}" for i, n in enumerate(self.rgb_styles)})
        points.update({"convs.b4_conv": "b4/conv", "torgbs.b4": "b4/rgb"})
        for r in self.resolutions[1:]:
            points.update({f"convs.b{r}_conv0": f"b{r}/conv0", f"convs.b{r}_conv1": f"b{r}/conv1",
                           f"skips.b{r}": f"b{r}/rgb"})
        points[""] = "image"
        return points

    def trace(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every activation of ``trace_points`` on dlatents ``w``, by forward hooks."""
        return tracing.trace(self, self.trace_points(), w)
