"""Write scikit-learn's handwritten digits (UCI, 8x8, shipped in its wheel) as an image folder.

    .venv/bin/python examples/digits_folder.py --out data/digits89 --digits 8 9 --size 32

One subfolder per digit (``eight/``, ``nine/``), grey PNGs upsampled from 8x8 to ``--size``
(bicubic), white digits on black as the data set stores them: the nearest stand-in for the
MNIST 8-against-9 task one reproduction study trained StylEx on, that needs no download.
``pip install scikit-learn`` first (it is in the ``test`` extra).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits(out: Path, digits=(8, 9), size: int = 32) -> dict[str, int]:
    """The folder; returns images per class. Written to a temporary folder and renamed."""
    import shutil
    import tempfile

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    out = Path(out)
    if out.exists() and (not out.is_dir() or set(p.name for p in out.iterdir()) - set(NAMES)):
        raise SystemExit(f"digits_folder: {out} exists and holds more than digit folders; not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    counts = {}
    try:
        for d in digits:
            folder = tmp / NAMES[d]
            folder.mkdir()
            index = np.flatnonzero(data.target == d)
            for i in index:
                grey = np.clip(data.images[i] * (255.0 / 16.0), 0, 255).astype(np.uint8)
                Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BICUBIC).save(
                    folder / f"{i:04d}.png")
            counts[NAMES[d]] = len(index)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/digits89"))
    p.add_argument("--digits", type=int, nargs="+", default=[8, 9], choices=range(10))
    p.add_argument("--size", type=int, default=32, help="image size in pixels")
    args = p.parse_args(argv)
    if len(set(args.digits)) < 2:
        print("digits_folder: need at least two different --digits", file=sys.stderr)
        return 2
    counts = write_digits(args.out, args.digits, args.size)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
