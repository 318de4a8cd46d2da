"""Counterfactual pictures for the top AttFind attributes: PNG grids (original and changed image,
each with the classifier's probability drawn on it) and animated GIFs of the shift."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from attfind.selection import softmax
from porting.atomic import atomic_path

TILE = 128          # smallest tile edge in pixels (small models are scaled up)
CAPTION = 14        # caption strip height


def _to_pil(img_chw: np.ndarray, size: int):
    from PIL import Image

    arr = ((np.clip(img_chw.transpose(1, 2, 0), -1, 1) + 1) * 127.5).round().astype(np.uint8)
    im = Image.fromarray(arr)
    return im.resize((size, size), Image.NEAREST) if size != im.width else im


def _captioned(img_chw, text: str, size: int):
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (size, size + CAPTION), "white")
    tile.paste(_to_pil(img_chw, size), (0, CAPTION))
    ImageDraw.Draw(tile).text((3, 1), text, fill="black")
    return tile


def _save(image, path: Path, **kw) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format=path.suffix.lstrip(".").upper().replace("JPG", "JPEG"), **kw)
    return path


def choose_examples(result, effects, d: int, j: int, k: int) -> list[tuple[int, int, int]]:
    """Images on which attribute ``(d, j)`` (class 1 -> class 0 in direction d) moves the
    classifier most: ``(image, direction applied, target class)``; images of class 0 get the
    opposite direction (towards class 1)."""
    cands = []
    for n, label in enumerate(result.labels):
        if label == 1:
            cands.append((effects[n, d, j, 0] - effects[n, d, j, 1], n, d, 0))
        else:
            cands.append((effects[n, 1 - d, j, 1] - effects[n, 1 - d, j, 0], n, 1 - d, 1))
    cands.sort(key=lambda c: -c[0])
    return [(n, dd, c) for _, n, dd, c in cands[:k]]


def _deltas(space, styles, lo, hi, rows, j, shift_size, fraction=1.0):
    """Row r: image ``rows[r][0]``'s coordinate ``j`` moved ``fraction`` of AttFind's shift in
    direction ``rows[r][1]``."""
    out = np.zeros((len(rows), styles.shape[1]), np.float32)
    targets = space.targets(lo, hi)
    for r, (n, d, _) in enumerate(rows):
        out[r, j] = space.delta(styles[n, j], targets[d, j], fraction * shift_size)
    return out


def draw(setting, result, out_dir: Path, top: int = 4, examples: int = 4, frames: int = 8) -> list[Path]:
    """Per top attribute, a grid (original | changed) and a GIF; an overview of the grids.
    ``setting``: an ``attfind.setting.Setting`` with its effects."""
    from PIL import Image, ImageDraw

    backend, dlatents, styles, effects = setting.backend, setting.dlatents, setting.styles, setting.effects
    lo, hi, shift_size = setting.style_min, setting.style_max, setting.shift_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = max(TILE, int(backend.generator.config["resolution"]))
    files, rows_for_overview = [], []
    for rank, attr in enumerate(result.attributes[:top], 1):
        d, j = int(attr.direction), int(attr.coordinate)
        picks = choose_examples(result, effects, d, j, examples)
        w = dlatents[[n for n, _, _ in picks]]
        before, logits_before = backend.edited_outputs(w, np.zeros((len(picks), styles.shape[1]), np.float32))
        after, logits_after = backend.edited_outputs(w, _deltas(backend.space, styles, lo, hi, picks, j, shift_size))
        pb, pa = softmax(logits_before), softmax(logits_after)
        tiles = []
        for r, (n, dd, c) in enumerate(picks):
            tiles.append(_captioned(before[r], f"p{c}={pb[r, c]:.2f}", size))
            tiles.append(_captioned(after[r], f"p{c}={pa[r, c]:.2f} {'up' if dd else 'down'}", size))
        title = (f"#{rank}: coordinate {j} {'up' if d else 'down'} (class 1 -> 0), score {attr.score:.3f}; "
                 "pairs: original | changed, p_c = P(target class c)")
        grid = Image.new("RGB", (len(tiles) * (size + 4), size + CAPTION + 18), "white")
        ImageDraw.Draw(grid).text((3, 3), title, fill="black")
        for i, t in enumerate(tiles):
            grid.paste(t, (i * (size + 4) + (2 if i % 2 else 0), 18))
        files.append(_save(grid, out_dir / f"attribute_{rank:02d}_coord{j}.png"))
        rows_for_overview.append(grid)

        # GIF: the first example, shifted from 0 to the full shift and back
        n, dd, c = picks[0]
        fracs = np.concatenate([np.linspace(0, 1, frames), np.linspace(1, 0, frames)[1:-1]])
        one = [picks[0]] * len(fracs)
        deltas = np.concatenate([_deltas(backend.space, styles, lo, hi, [picks[0]], j, shift_size, f) for f in fracs])
        imgs, logits = backend.edited_outputs(dlatents[[n] * len(fracs)], deltas)
        probs = softmax(logits)
        gif = [_captioned(imgs[i], f"coord {j} x{fracs[i]:.2f} p{c}={probs[i, c]:.2f}", size)
               for i in range(len(one))]
        path = out_dir / f"attribute_{rank:02d}_coord{j}.gif"
        with atomic_path(path) as tmp:
            gif[0].save(tmp, format="GIF", save_all=True, append_images=gif[1:], duration=120, loop=0)
        files.append(path)

    if rows_for_overview:
        width = max(r.width for r in rows_for_overview)
        overview = Image.new("RGB", (width, sum(r.height for r in rows_for_overview)), "white")
        y = 0
        for r in rows_for_overview:
            overview.paste(r, (0, y))
            y += r.height
        files.insert(0, _save(overview, out_dir / "top_attributes.png"))
    return files
