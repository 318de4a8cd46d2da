"""Labelled image folders for training: one subfolder per class (the ImageFolder convention).

    data/
      eight/  0001.png 0002.jpg ...
      nine/   ...

PNG and JPEG, any size, grey or colour: each image is converted to RGB, resized so its shorter
side is the resolution (Lanczos, antialiased) and centre-cropped to a square, then scaled to
[-1, 1] (what every model of the release takes). Classes are the subfolders in sorted order.
Every problem is one line naming the file or folder: an unreadable image, a single class, an
empty class, a folder with no classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataError(ValueError):
    """A training folder or image that cannot be used, with the path in its message."""


@dataclass
class ImageFolder:
    """The images of a class-per-subfolder folder, decoded once into memory as uint8 NCHW."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray          # [N] int64, index into ``classes``
    pixels: np.ndarray          # [N, 3, R, R] uint8
    resolution: int

    def __len__(self) -> int:
        return len(self.files)

    def images(self, index) -> "torch.Tensor":   # noqa: F821
        """Float32 NCHW images in [-1, 1] of ``index`` (an int array or tensor)."""
        import torch

        return torch.from_numpy(self.pixels[np.asarray(index)].astype(np.float32)) / 127.5 - 1.0

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}


def scan(root: str | Path) -> tuple[list[str], list[list[Path]]]:
    """The class names and each class's image files, checked: at least two classes, none empty."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected one subfolder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class subfolders; put each class's images in a subfolder of its own "
                        f"(e.g. {root}/cat/*.png, {root}/dog/*.png)")
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]!r}); a classifier and StylEx need at least two "
                        "class subfolders")
    files = []
    for c in classes:
        found = sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(root / c).parts))
        if not found:
            raise DataError(f"{root / c}: class {c!r} has no PNG or JPEG images")
        files.append(found)
    return classes, files


def load_image(path: Path, resolution: int) -> np.ndarray:
    """One image as uint8 [3, R, R]: RGB, shorter side resized to R, centre-cropped."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)              # a camera's orientation tag, applied
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):   # 16-bit grey: scaled, not clipped
                a = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(a / 257.0, 0, 255).round().astype(np.uint8), mode="L")
            im = im.convert("RGB")
            w, h = im.size
            s = resolution / min(w, h)
            nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.Resampling.LANCZOS)
            left, top = (nw - resolution) // 2, (nh - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def load_folder(root: str | Path, resolution: int, progress: bool = False) -> ImageFolder:
    """Scan and decode a whole folder (``progress``: a bar on stderr)."""
    from tqdm import tqdm

    if resolution < 8 or resolution & (resolution - 1):
        raise DataError(f"--resolution {resolution}: must be a power of two >= 8 (StyleGAN2's blocks)")
    classes, per_class = scan(root)
    files = [f for fs in per_class for f in fs]
    labels = np.concatenate([np.full(len(fs), i, dtype=np.int64) for i, fs in enumerate(per_class)])
    pixels = np.empty((len(files), 3, resolution, resolution), dtype=np.uint8)
    for i, f in enumerate(tqdm(files, desc="reading images", unit="img", disable=not progress, leave=False)):
        pixels[i] = load_image(f, resolution)
    return ImageFolder(Path(root), classes, files, labels, pixels, resolution)


def split(labels: np.ndarray, holdout: float, seed: int, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: ``holdout`` of each class (at least one image each), drawn with
    ``seed``; both sorted."""
    if not 0.0 < holdout < 1.0:
        raise DataError(f"--holdout {holdout}: must be between 0 and 1")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(holdout * len(idx))))
        if k >= len(idx):
            name = classes[int(c)] if classes is not None else int(c)
            raise DataError(f"class {name!r} has {len(idx)} image(s): too few to hold {holdout:.0%} out and train "
                            "on the rest")
        held.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))
