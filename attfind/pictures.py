"""Counterfactual pictures for the top AttFind attributes: PNG grids (original and changed image,
each with the classifier's probability drawn on it) and animated GIFs of the shift."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from attfind.selection import softmax
from porting.atomic import atomic_path

TILE = 128          # smallest tile edge in pixels (small models are scaled up)
CAPTION = 14        # caption strip height


def to_pil(img_chw: np.ndarray, size: int):
    """A ``[3, H, W]`` image in [-1, 1] as a PIL image, scaled (nearest) to ``size``."""
    from PIL import Image

    arr = ((np.clip(img_chw.transpose(1, 2, 0), -1, 1) + 1) * 127.5).round().astype(np.uint8)
    im = Image.fromarray(arr)
    return im.resize((size, size), Image.NEAREST) if size != im.width else im


def _captioned(img_chw, text: str, size: int):
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (size, size + CAPTION), "white")
    tile.paste(to_pil(img_chw, size), (0, CAPTION))
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


def shift_deltas(space, styles, lo, hi, rows, j, shift_size, fraction=1.0):
    """Row r: image ``rows[r][0]``'s coordinate ``j`` moved ``fraction`` of AttFind's shift in
    direction ``rows[r][1]``."""
    out = np.zeros((len(rows), styles.shape[1]), np.float32)
    targets = space.targets(lo, hi)
    for r, (n, d, _) in enumerate(rows):
        out[r, j] = space.delta(styles[n, j], targets[d, j], fraction * shift_size)
    return out


def shift_frames(setting, n: int, d: int, j: int, frames: int = 8):
    """Image ``n`` with coordinate ``j`` moved from 0 to the whole of AttFind's shift in direction
    ``d`` and back, in ``2 frames - 2`` steps: ``(fractions [F], images [F, 3, H, W], probabilities [F, C])``."""
    fracs = np.concatenate([np.linspace(0, 1, frames), np.linspace(1, 0, frames)[1:-1]])
    space, styles = setting.backend.space, setting.styles
    deltas = np.concatenate([shift_deltas(space, styles, setting.style_min, setting.style_max, [(n, d, 0)], j,
                                     setting.shift_size, f) for f in fracs])
    imgs, logits = setting.backend.edited_outputs(setting.dlatents[[n] * len(fracs)], deltas)
    return fracs, imgs, softmax(logits)


def save_gif(frames: list, path: Path, ms_per_frame: int = 120) -> Path:
    """PIL ``frames`` as a looping GIF, written to a temporary file and renamed."""
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)
    return path


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
        after, logits_after = backend.edited_outputs(w, shift_deltas(backend.space, styles, lo, hi, picks, j, shift_size))
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
        fracs, imgs, probs = shift_frames(setting, n, dd, j, frames)
        gif = [_captioned(imgs[i], f"coord {j} x{fracs[i]:.2f} p{c}={probs[i, c]:.2f}", size)
               for i in range(len(fracs))]
        files.append(save_gif(gif, out_dir / f"attribute_{rank:02d}_coord{j}.gif"))

    if rows_for_overview:
        width = max(r.width for r in rows_for_overview)
        overview = Image.new("RGB", (width, sum(r.height for r in rows_for_overview)), "white")
        y = 0
        for r in rows_for_overview:
            overview.paste(r, (0, y))
            y += r.height
        files.insert(0, _save(overview, out_dir / "top_attributes.png"))
    return files
