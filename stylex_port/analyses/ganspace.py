"""GANSpace (Härkönen et al. 2020) on the ported generator: PCA directions in w, edits applied
to a range of style layers, pictures, and how much each direction moves the classifier.

    z ~ N(0, I)  (NumPy's seeded generator, so every framework sees the same z)
    w = mapping(z, labels)            labels held fixed, as the release's dlatents carry them
    PCA on the w part of w (its first w_dim - label_size values): components v_i, std sigma_i
    E(v_i, j-k): w_l = w + s * sigma_i * v_i for style layers l in j..k, w_l = w elsewhere

The basis is computed once, in NumPy (float64), from w, and shared: the TF reference and the
PyTorch port then render the same edit from the same per-layer w (``[N, layers, D]``, the
input the style calculator takes per layer), which the GANSpace reproduction could not do
across frameworks whose random generators differ. A component's sign is fixed so that its
largest entry is positive (SVD leaves it open).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SAMPLES = 2000
DEFAULT_COMPONENTS = 10
DEFAULT_SIGMA = 2.0


@dataclass
class Basis:
    mean: np.ndarray          # [d]
    components: np.ndarray    # [K, d], unit rows
    std: np.ndarray           # [K], the standard deviation of w along each component
    explained: np.ndarray     # [K], fraction of w's variance
    w_size: int               # d: the part of w the PCA covers (the labels are left out)

    def to_json(self) -> dict:
        return {"components": int(len(self.std)), "w_size": self.w_size,
                "std": [float(x) for x in self.std], "explained_variance": [float(x) for x in self.explained]}


def sample_labels(n: int, label_size: int, dlatents: np.ndarray | None) -> np.ndarray:
    """Sample i gets the label probabilities of release dlatent i (cycling), or uniform ones."""
    if dlatents is None or not len(dlatents):
        return np.full((n, label_size), 1.0 / label_size, np.float32)
    lab = np.asarray(dlatents, np.float32)[:, -label_size:]
    return lab[np.arange(n) % len(lab)]


def sample_z(n: int, z_dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)


def map_pt(generator, z: np.ndarray, labels: np.ndarray, batch: int = 256) -> np.ndarray:
    """w = the ported mapping network of (z, labels), ``[N, w_dim]``."""
    import torch

    out = []
    p = next(generator.parameters())
    with torch.no_grad():
        for i in range(0, len(z), batch):
            zz = torch.as_tensor(z[i:i + batch], dtype=p.dtype, device=p.device)
            ll = torch.as_tensor(labels[i:i + batch], dtype=p.dtype, device=p.device)
            out.append(generator.mapping(zz, ll).cpu().numpy())
    return np.concatenate(out)


def pca(w: np.ndarray, components: int, w_size: int) -> Basis:
    x = np.asarray(w, np.float64)[:, :w_size]
    if len(x) < 2:
        raise ValueError("GANSpace needs at least 2 samples")
    mean = x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(components, len(sv))
    comps = vt[:k].copy()
    flip = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps *= flip[:, None]
    var = sv ** 2
    return Basis(mean=mean, components=comps, std=sv[:k] / np.sqrt(len(x) - 1), explained=var[:k] / var.sum(),
                 w_size=int(w_size))


def basis_for(generator, samples: int, components: int, seed: int, dlatents=None) -> Basis:
    """The seeded GANSpace basis of a ported generator (``samples`` z through its mapping)."""
    cfg = generator.config
    z = sample_z(samples, cfg["z_dim"], seed)
    w = map_pt(generator, z, sample_labels(samples, cfg["label_size"], dlatents))
    return pca(w, components, cfg["w_dim"] - cfg["label_size"])


def parse_layers(text: str | None, num_layers: int) -> tuple[int, int]:
    """'J-K' (inclusive, 0-based) or one layer 'J'; None: every layer."""
    if not text:
        return 0, num_layers - 1
    try:
        a, _, b = text.partition("-")
        lo, hi = int(a), int(b) if b else int(a)
    except ValueError:
        raise ValueError(f"--layers {text!r}: expected J-K, e.g. 0-3") from None
    if not 0 <= lo <= hi < num_layers:
        raise ValueError(f"--layers {text!r}: this generator has style layers 0-{num_layers - 1}")
    return lo, hi


def edit(dlatents: np.ndarray, basis: Basis, moves, layers: tuple[int, int], num_layers: int) -> np.ndarray:
    """Per-layer w ``[N, num_layers, D]``: image n gets, for each ``(component, strength)`` of
    ``moves[n]`` (strength in units of that component's std), ``strength * std_i * v_i`` added to
    the w part of layers ``layers[0]..layers[1]``; the other layers and the labels are unchanged.
    ``moves``: one list per image (``same(moves, n)`` repeats one)."""
    w = np.asarray(dlatents, np.float64)
    if w.ndim != 2 or len(moves) != len(w):
        raise ValueError(f"dlatents [N, D] and one list of moves per image expected, got {list(w.shape)} "
                         f"and {len(moves)} lists")
    out = np.repeat(w[:, None, :], num_layers, axis=1)
    for n, mv in enumerate(moves):
        shift = np.zeros(basis.w_size)
        for i, strength in mv:
            shift += float(strength) * basis.std[int(i)] * basis.components[int(i)]
        out[n, layers[0]:layers[1] + 1, :basis.w_size] += shift
    return out


def same(moves, n: int) -> list:
    """The same moves for each of ``n`` images."""
    return [list(moves)] * n


def render_pt(backend, w_layers: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images (clamped) and logits from per-layer w, through the PyTorch backend's models."""
    return backend.edited_outputs(w_layers, batch=batch)


def classifier_moves(backend, dlatents, basis: Basis, layers, num_layers: int, sigma: float) -> dict:
    """How much each component moves the classifier on ``dlatents``: at +sigma and -sigma (in
    units of its std), the change of ``logit1 - logit0`` per image ``[K, 2, N]`` and the mean
    change of P(class 1)."""
    from attfind.selection import softmax

    n = len(dlatents)
    _, base = render_pt(backend, edit(dlatents, basis, same([], n), layers, num_layers).astype(np.float32))
    k = len(basis.std)
    margin = np.zeros((k, 2, len(dlatents)))
    dprob = np.zeros((k, 2))
    for i in range(k):
        for si, s in enumerate((-sigma, sigma)):
            wl = edit(dlatents, basis, same([(i, s)], n), layers, num_layers).astype(np.float32)
            _, lg = render_pt(backend, wl)
            margin[i, si] = (lg[:, 1] - lg[:, 0]) - (base[:, 1] - base[:, 0])
            dprob[i, si] = float((softmax(lg)[:, 1] - softmax(base)[:, 1]).mean())
    return {"base_logits": base, "margin_change": margin, "prob1_change": dprob}


def ranked_moves(margin_change: np.ndarray, images, target_class: int, sigma: float) -> list[tuple[int, float, float]]:
    """Components ranked by how far they push ``images`` towards ``target_class`` on average:
    ``[(component, strength, mean push)]``, each component once, with the sign that pushes
    (strength ``+sigma`` or ``-sigma``), best first."""
    idx = np.asarray(list(images), int)
    sign = 1.0 if target_class == 1 else -1.0          # the change of logit1 - logit0, towards the target
    out = []
    for i in range(margin_change.shape[0]):
        pushes = [sign * margin_change[i, si, idx].mean() if len(idx) else 0.0 for si in (0, 1)]
        best = int(np.argmax(pushes))
        out.append((i, (-sigma, sigma)[best], float(pushes[best])))
    out.sort(key=lambda t: -t[2])
    return out


def run_ganspace(weights, out_dir, samples: int = DEFAULT_SAMPLES, components: int = DEFAULT_COMPONENTS,
                 layers: str | None = None, sigma: float = DEFAULT_SIGMA, dlatents_path=None, rows: int = 4,
                 columns: int = 5, seed: int = 0, device: str = "cpu", log=print) -> dict:
    """``cli.py ganspace``: the basis, a grid per component (rows: images; columns: strength from
    -sigma to sigma; P(class 1) drawn on each), and ``ganspace.json``."""
    import time
    from pathlib import Path

    from PIL import Image, ImageDraw

    from attfind.pictures import CAPTION, TILE, _captioned, _save
    from attfind.release import open_release
    from attfind.selection import softmax
    from porting.atomic import write_json
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    rel = open_release(Path(weights), device=device)
    gen, backend = rel.generator, rel.backend
    cfg = gen.config
    release = dlatent_matrix(load_dlatents(dlatents_path)) if dlatents_path else None
    z = sample_z(samples, cfg["z_dim"], seed)
    w = map_pt(backend.generator, z, sample_labels(samples, cfg["label_size"], release))
    basis = pca(w, components, cfg["w_dim"] - cfg["label_size"])
    span = parse_layers(layers, gen.num_layers)
    shown = (release if release is not None else w)[:rows]
    evaluated = release if release is not None else w[:64]
    log(f"GANSpace: {samples} samples, {len(basis.std)} components (explained variance "
        f"{basis.explained.sum():.3f}), style layers {span[0]}-{span[1]} of {gen.num_layers}")
    moved = classifier_moves(backend, evaluated, basis, span, gen.num_layers, sigma)
    size = max(TILE, int(cfg["resolution"]))
    strengths = np.linspace(-sigma, sigma, columns)
    files = []
    for i in range(len(basis.std)):
        moves = [[(i, st)] for _ in shown for st in strengths]
        wl = edit(np.repeat(shown, columns, axis=0), basis, moves, span, gen.num_layers).astype(np.float32)
        imgs, logits = render_pt(backend, wl)
        p1 = softmax(logits)[:, 1]
        grid = Image.new("RGB", (columns * (size + 2), len(shown) * (size + CAPTION + 2) + 18), "white")
        ImageDraw.Draw(grid).text((3, 3), f"component {i} (explained {basis.explained[i]:.3f}), layers "
                                  f"{span[0]}-{span[1]}; columns {-sigma:g} .. {sigma:g} std; p1 = P(class 1)",
                                  fill="black")
        for r in range(len(shown)):
            for c in range(columns):
                k = r * columns + c
                tile = _captioned(imgs[k], f"{strengths[c]:+.1f}  p1={p1[k]:.2f}", size)
                grid.paste(tile, (c * (size + 2), 18 + r * (size + CAPTION + 2)))
        files.append(_save(grid, out_dir / f"component_{i:02d}.png"))
    doc = {"weights": str(weights), "samples": samples, "seed": seed, "layers": list(span), "sigma": sigma,
           "labels": "the release dlatents' label probabilities, cycled" if release is not None else "uniform",
           "basis": basis.to_json(),
           "classifier": [{"component": i, "explained_variance": float(basis.explained[i]),
                           "prob1_change_at_minus_sigma": float(moved["prob1_change"][i, 0]),
                           "prob1_change_at_plus_sigma": float(moved["prob1_change"][i, 1]),
                           "mean_abs_margin_change": float(np.abs(moved["margin_change"][i]).mean())}
                          for i in range(len(basis.std))],
           "evaluated_images": int(len(evaluated)), "pictures": [f.name for f in files]}
    doc["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "ganspace.json", doc)
    from porting.atomic import atomic_path

    with atomic_path(out_dir / "basis.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mean=basis.mean, components=basis.components, std=basis.std, explained=basis.explained)
    return doc
