"""Encode an image, move one StyleSpace coordinate, save the counterfactual: PyTorch only.

    .venv/bin/python examples/counterfactual.py --weights weights/reference --image face.png \
        --coordinate 39 --delta 3 --out counterfactual.png

Writes a PNG with the reconstruction and the edited image side by side, each with the
classifier's probability of class 1 drawn on it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models_pt  # noqa: E402
from models_pt.pipeline import encode  # noqa: E402


def to_tensor(path: Path, size: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


def to_pil(x: torch.Tensor, label: str) -> Image.Image:
    arr = ((x.clamp(-1, 1)[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    img = Image.fromarray(arr).resize((256, 256), Image.NEAREST)
    ImageDraw.Draw(img).text((4, 4), label, fill=(255, 255, 255))
    return img


def fail(message: str):
    """Bad input ends in one line on stderr and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_models(folder: Path) -> dict:
    if Path(folder).is_file():
        fail(f"{folder}: a single weights file; pass the converted release folder (cli.py convert --tf-ckpt RELEASE)")
    try:
        models = models_pt.load(folder, need=("generator", "encoder", "mobilenet"))
    except models_pt.WeightsError as e:
        fail(str(e))
    if models_pt.read_manifest(folder).get("reference"):
        print(f"note: {folder} holds a seeded reference release: it reconstructs no real face; "
              "convert the released files for meaningful counterfactuals", file=sys.stderr)
    return models


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="a converted release folder")
    ap.add_argument("--image", type=Path, required=True, help="an image file PIL can read (any size)")
    ap.add_argument("--coordinate", type=int, default=0, help="StyleSpace coordinate to move")
    ap.add_argument("--delta", type=float, default=3.0, help="how far to move it")
    ap.add_argument("--out", type=Path, default=Path("counterfactual.png"))
    args = ap.parse_args(argv)

    m = load_models(args.weights)
    G, E, C = m["generator"], m["encoder"], m["mobilenet"]
    if not 0 <= args.coordinate < G.space.size:
        fail(f"--coordinate {args.coordinate}: this generator has StyleSpace coordinates 0..{G.space.size - 1}")
    try:
        image = to_tensor(args.image, G.config["resolution"])
    except (OSError, ValueError) as e:   # missing, unreadable, not an image (PIL's errors are OSErrors)
        fail(f"{args.image}: cannot read the image: {e.strerror if getattr(e, 'strerror', None) else e}")
    with torch.no_grad():
        w = encode(E, C, image)
        conv, rgb = G.style_vectors(w)
        pair = G.synthesis_edit(conv, rgb, coords=[args.coordinate, args.coordinate], deltas=[0.0, args.delta])
        probs = torch.softmax(C(pair.clamp(-1, 1)), dim=1)[:, 1]
    left = to_pil(pair[:1], f"reconstruction p1={probs[0]:.3f}")
    right = to_pil(pair[1:], f"s[{args.coordinate}] {args.delta:+g}: p1={probs[1]:.3f}")
    canvas = Image.new("RGB", (512, 256))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (256, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    canvas.save(tmp, format="PNG")
    tmp.replace(args.out)
    print(f"wrote {args.out}: p(class 1) {probs[0]:.4f} -> {probs[1]:.4f}")
    return float(probs[0]), float(probs[1])


if __name__ == "__main__":
    main()
