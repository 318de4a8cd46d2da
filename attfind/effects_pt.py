"""AttFind's heavy step in PyTorch, built for speed, computing what the notebook computes.

For one image, every coordinate shift of StyleSpace is an edit of one conv style layer. The
synthesis up to that layer cannot change, so it runs once per image and layer
(``Generator.synthesis_state``); the edits of a layer then run in batches from that point
(``Generator.synthesis(start=layer, state=...)``), each row of the batch a copy of the image's
styles with one coordinate moved. No weight is touched. The classifier sees the clamped
images, as in the notebook, and the effect is the change of its logits.

``TorchEffects`` implements ``attfind.backend.EffectsBackend``.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import sys
from typing import Callable, Iterable

import numpy as np
import torch

from models_pt.stylespace import StyleSpace

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameters
_malloc_tuned = False


def keep_freed_batch_memory() -> bool:
    """Make glibc keep freed blocks for reuse instead of handing them back to the kernel.

    Every batch of edits allocates the same large activations (tens of MB at 64 px) and frees
    them. With glibc's defaults, blocks that size are mmap'ed and unmapped each time, or trimmed
    off the heap, so the next batch faults in every page again: a 64 px sweep of 32 images took
    6.1 million page faults and spent 40% of its time in the kernel. Raising the mmap threshold
    to its maximum (32 MiB) and the trim threshold to 2 GiB lets freed memory be reused: the same
    sweep ran 1.7-2x faster on 2 cores, effects bit for bit the same. Process-wide and
    idempotent; the process keeps its peak heap. Returns False where there is no glibc."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    except (OSError, AttributeError):   # another C library (musl): nothing to tune
        return False
    _malloc_tuned = ok
    return ok


PRECISIONS = ("float32", "tf32", "bf16")
"""The sweep's arithmetic (``TorchEffects(precision=...)``): float32; TF32, the tensor cores'
format, for the convolutions and matrix products (on a CPU emulated, slower than float32: to
see on any machine what a GPU's TF32 sweep would decide); BF16 autocast. Effects in TF32 or BF16
are for ``attfind.certify``, which re-checks every AttFind decision in float32."""

FORMS = ("plain", "delta")
"""How the sweep computes an effect (``TorchEffects(form=...)``): ``plain``, the edited image's
logits minus the base logits, as the notebook does; ``delta``, the change itself carried from the
edited layer on (``attfind.delta``), whose reduced-precision error scales with the effect."""


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32's 10-bit mantissa (to nearest, ties to even), kept as
    float32; other dtypes unchanged."""
    if x.dtype != torch.float32:
        return x
    bits = x.view(torch.int32)
    return ((bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF).view(torch.float32)


@contextlib.contextmanager
def emulated_tf32():
    """Inside, ``torch.nn.functional``'s conv2d, conv_transpose2d and linear round both operands
    to TF32 and accumulate in float32, as tensor cores do (in this process, every caller). The
    ``@`` products stay float32 (the generator's demodulation: a small share of the error). The
    rounding is to nearest; whether a given GPU rounds or truncates its operands is not checked
    here, which is one reason ``attfind.certify`` measures its bound on the device that sweeps."""
    import torch.nn.functional as F

    originals = {name: getattr(F, name) for name in ("conv2d", "conv_transpose2d", "linear")}

    def rounding(fn):
        def call(input, weight, *args, **kwargs):
            return fn(round_to_tf32(input), round_to_tf32(weight), *args, **kwargs)
        return call
    for name, fn in originals.items():
        setattr(F, name, rounding(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)


@contextlib.contextmanager
def _tf32(on: bool):
    """cuDNN's and cuBLAS's TF32 switches set to ``on`` inside, restored after."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


class TorchEffects:
    def __init__(self, generator, classifier, batch_size: int = 128, device: str | torch.device = "cpu",
                 optimize: bool = True, dtype: torch.dtype = torch.float32, precision: str = "float32",
                 fuse: bool | str = False, form: str = "plain"):
        """``generator``, ``classifier``: ported modules (``models_pt.load``); the classifier takes
        NCHW images. ``batch_size``: edited images per forward pass. ``optimize``: run the
        classifier's inference form (``models_pt.inference``: BatchNorm folded, padding
        absorbed, channels-last), faster and within its own 2e-5 logit bar of the readable module, and the
        generator on channels-last tensors (a copy; same arithmetic, images within 3e-7).
        ``dtype``: ``torch.float64`` computes the float64 truth that float32 effects are judged
        against (``attfind.truth``); the modules are then copied, never converted in place.
        ``precision`` (``PRECISIONS``): the arithmetic of the sweep's edited images (``image``'s
        effects); its base logits, the styles and every other output stay in ``dtype``.
        ``fuse``: run the generator's fused form (``models_pt.inference.fuse_generator``: fewer
        passes over the activations, float32 rounding within an ulp or so per step of the
        readable one); ``"composite"``: that form with ``composite_up`` (each up-sampling conv
        and its FIR filter one transposed conv). ``form`` (``FORMS``): ``"delta"`` computes each
        effect as the change carried from the edited layer on (``attfind.delta``: the readable
        generator and classifier, ``fuse`` not with it); the base logits stay the plain ones."""
        import copy

        from models_pt.inference import fuse_generator, optimize_for_inference

        self.device = torch.device(device)
        self.dtype = dtype
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if precision != "float32" and dtype != torch.float32:
            raise ValueError(f"precision {precision!r} reduces float32 arithmetic; dtype is {dtype}")
        self.precision = precision
        if form not in FORMS:
            raise ValueError(f"form {form!r}: expected one of {', '.join(FORMS)}")
        if form == "delta" and fuse:
            raise ValueError("form 'delta' runs the readable generator; fuse must be False")
        self.form = form
        # what the sweep's arithmetic is here (part of the effect cache's key)
        self.arithmetic = "tf32-emulated" if precision == "tf32" and self.device.type != "cuda" else precision
        if self.device.type == "cpu":
            keep_freed_batch_memory()
        if dtype != torch.float32:
            generator, classifier = copy.deepcopy(generator).to(dtype), copy.deepcopy(classifier).to(dtype)
        if self.device.type == "cuda":
            # TF32 convolutions and matmuls would round to 10-bit mantissas: effects off by ~1e-3
            # (precision="tf32" turns them on inside the sweep only)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.generator = generator.eval().to(device)
        if fuse not in (False, True, "composite"):
            raise ValueError(f"fuse {fuse!r}: expected False, True or 'composite'")
        self.fused = {False: False, True: "fused", "composite": "composite"}[fuse]
        if self.fused:      # other float32 rounding: its own effect-cache key
            self.arithmetic += f"-{self.fused}"
        if form == "delta":
            self.arithmetic += "-delta"
        if fuse:
            self.generator = fuse_generator(self.generator, composite_up=fuse == "composite")
        elif optimize:  # channels-last activations: oneDNN's convs, the FIR filters above all, 1.4x here
            self.generator = copy.deepcopy(self.generator).to(memory_format=torch.channels_last)
        classifier = classifier.eval().to(device)
        self.delta = None
        if form == "delta":
            from attfind.delta import DeltaPath

            self.delta = DeltaPath(generator.eval().to(device), classifier)
        self.classifier = optimize_for_inference(classifier) if optimize else classifier
        self.batch_size = int(batch_size)
        self.space: StyleSpace = generator.space
        self.num_styles = len(self.space)

    @torch.no_grad()
    def styles(self, dlatents: np.ndarray, batch: int = 64) -> np.ndarray:
        """dlatents ``[N, D]`` -> StyleSpace ``[N, S]`` (the conv styles, concatenated)."""
        out = []
        for i in range(0, len(dlatents), batch):
            w = torch.as_tensor(np.asarray(dlatents[i:i + batch], np.float32), device=self.device).to(self.dtype)
            out.append(torch.cat(self.generator.style_vectors(w)[0], dim=1).cpu().numpy())
        return np.concatenate(out)

    def _classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images.clamp(-1, 1))

    @torch.no_grad()
    def logits(self, dlatents: np.ndarray) -> np.ndarray:
        w = torch.as_tensor(np.asarray(dlatents, np.float32).reshape(len(dlatents), -1), device=self.device)
        w = w.to(self.dtype)
        return self._classify(self.generator(w)).cpu().numpy()

    @torch.no_grad()
    def edited_outputs(self, dlatents, deltas: np.ndarray | None = None, batch: int = 32):
        """Clamped images and logits of ``dlatents`` (``[N, D]``, or per layer ``[N, layers, D]``)
        after adding ``deltas [N, S]`` to each image's conv styles (none: as they are)."""
        g = self.generator
        images, logits = [], []
        for i in range(0, len(dlatents), batch):
            w = torch.as_tensor(np.asarray(dlatents[i:i + batch]), device=self.device).to(self.dtype)
            conv, rgb = g.style_vectors(w)
            if deltas is not None:
                d = torch.as_tensor(deltas[i:i + batch], dtype=conv[0].dtype, device=self.device)
                conv = list(torch.split(torch.cat(conv, dim=1) + d, self.space.sizes, dim=1))
            img = g.synthesis(conv, rgb).clamp(-1, 1)
            images.append(img.cpu().numpy())
            logits.append(self.classifier(img).cpu().numpy())
        return np.concatenate(images), np.concatenate(logits)

    @torch.no_grad()
    def image(self, dlatent, style_min, style_max, shift_size: float = 1.0,
              coordinates: Iterable[int] | None = None, on_progress: Callable[[float], None] | None = None,
              style=None) -> tuple[np.ndarray, np.ndarray]:
        """One image's ``(base logits [C], effects [2, S, C])`` (``attfind.backend``); the style
        vector is always computed here, from ``dlatent``."""
        g = self.generator
        w = torch.as_tensor(np.asarray(dlatent, np.float32).reshape(1, -1), device=self.device).to(self.dtype)
        conv, rgb = g.style_vectors(w)
        base = self._classify(g.synthesis(conv, rgb))[0]
        style = torch.cat(conv, dim=1)[0]
        targets = torch.as_tensor(self.space.targets(style_min, style_max), dtype=style.dtype).to(self.device)
        deltas = self.space.delta(style, targets, shift_size)      # [2, S]
        effects = torch.zeros(2, self.num_styles, base.shape[0], device=self.device, dtype=self.dtype)
        wanted = None if coordinates is None else {int(j) for j in coordinates}
        if self.delta is not None:
            state = self.delta.base(conv, rgb)
        with self._reduced():
            if self.delta is None:
                reference = base if self.precision == "float32" else self._classify(g.synthesis(conv, rgb))[0]
                reference = reference.to(self.dtype)
            for layer, size in enumerate(self.space.sizes):
                lo = self.space.coordinate(layer, 0)
                channels = [c for c in range(size) if wanted is None or lo + c in wanted]
                if not channels:
                    continue
                state_at = None if self.delta is not None else g.synthesis_state(conv, rgb, layer)
                # rows: (d, channel) for d in 0, 1 and every wanted channel of this layer
                rows = [(d, c) for d in (0, 1) for c in channels]
                for i in range(0, len(rows), self.batch_size):
                    chunk = rows[i:i + self.batch_size]
                    d_idx = torch.tensor([d for d, _ in chunk], device=self.device)
                    c_idx = torch.tensor([c for _, c in chunk], device=self.device)
                    shifts = deltas[d_idx, lo + c_idx]
                    if self.delta is not None:
                        effects[d_idx, lo + c_idx] = self.delta.effects(state, layer, c_idx, shifts).to(self.dtype)
                    else:
                        logits = self._edited_logits(conv, rgb, layer, state_at, c_idx, shifts)
                        effects[d_idx, lo + c_idx] = logits.to(self.dtype) - reference
                    if on_progress is not None:
                        on_progress(len(chunk) / 2)
        return base.cpu().numpy(), effects.cpu().numpy()

    def _edited_logits(self, conv, rgb, layer: int, state, channels, shifts) -> torch.Tensor:
        """The plain path: the logits of the images whose style layer ``layer`` has channel
        ``channels[k]`` moved by ``shifts[k]``, synthesised from ``state`` on."""
        k = len(channels)
        edited = conv[layer].expand(k, -1).clone()
        edited[torch.arange(k), channels] += shifts
        styles = [s.expand(k, -1) for s in conv]
        styles[layer] = edited
        rgbs = [s.expand(k, -1) for s in rgb]
        return self._classify(self.generator.synthesis(styles, rgbs, start=layer, state=state))

    def _reduced(self):
        """The context of the sweep's edited images: ``precision``'s arithmetic."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision == "tf32":
            return _tf32(True) if self.device.type == "cuda" else emulated_tf32()
        return contextlib.nullcontext()

    def discriminator_changes(self, discriminator, dlatents, styles, style_min, style_max, shift_size: float = 2.0):
        """The PyTorch side of ``discriminator_filter.DiscriminatorFilter``: ``changes(images, d, j)`` ->
        ``|D(after) - D(before)|`` per image: before, the clamped image with its dlatent's label
        probabilities; after, coordinate ``j`` shifted by ``shift_size`` times the way to its min
        (d = 0) or max (d = 1), clamped, with the classifier's softmax on it as labels. The
        discriminator judges each image alone, as the TF backend's batch-1 calls do: its minibatch
        standard deviation over a group of one is the same constant for every image, so the images
        of one call run as one batch with a group of one (a copy of the module; the given one is
        left as it is), as many batch-1 runs would in real arithmetic."""
        alone = copy.deepcopy(discriminator).eval().to(self.device).to(self.dtype)
        if alone.mbstd_group:
            alone.mbstd_group = 1
        g = self.generator
        label_size = g.config["label_size"]
        targets = self.space.targets(style_min, style_max)
        before: dict[int, float] = {}
        after: dict[tuple, float] = {}     # both greedy runs ask about the same coordinates

        def images_of(ns: list[int], layer: int | None = None, channel: int = 0, deltas=None):
            w = torch.as_tensor(np.stack([np.asarray(dlatents[n], np.float32).reshape(-1) for n in ns]),
                                device=self.device).to(self.dtype)
            conv, rgb = g.style_vectors(w)
            if layer is not None:
                conv = [s.clone() for s in conv]
                conv[layer][:, channel] += torch.as_tensor(deltas, dtype=conv[layer].dtype, device=self.device)
            return w, g.synthesis(conv, rgb).clamp(-1, 1).contiguous()

        @torch.no_grad()
        def changes(images, d: int, j: int) -> np.ndarray:
            layer, c = self.space.split(int(j))
            fresh = [n for n in dict.fromkeys(int(n) for n in images) if (n, d, j) not in after]
            unseen = [n for n in fresh if n not in before]
            if unseen:
                w, img = images_of(unseen)
                for n, v in zip(unseen, alone(img, w[:, -label_size:])[:, 0].tolist()):
                    before[n] = v
            if fresh:
                deltas = [self.space.delta(float(styles[n][j]), float(targets[d][j]), shift_size) for n in fresh]
                _, img = images_of(fresh, layer, c, deltas)
                labels = torch.softmax(self.classifier(img), dim=1)
                for n, v in zip(fresh, alone(img, labels)[:, 0].tolist()):
                    after[(n, d, j)] = v - before[n]
            return np.abs(np.asarray([after[(int(n), d, j)] for n in images]))
        return changes
