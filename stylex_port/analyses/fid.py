"""Image quality as attributes change: the Frechet Inception Distance between the generator's
reconstructions of the release's dlatents and the same images with their top 1..K AttFind
attributes changed (each towards the image's other class, as the flip-rate and sufficiency
measures change them).

FID = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with the means and covariances of the
2048 Inception pool features (``stylex_port.analyses.inception``). The trace of the matrix square
root is computed as the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2),
a symmetric positive semi-definite matrix with the same eigenvalues as S_a S_b, in float64.
From features, with fewer images than features, the same trace comes from the images instead
(``fid_of_features``): with A [n_a, d] and B [n_b, d] the centred features divided by
sqrt(n - 1), S_a = A^T A and S_b = B^T B, and the non-zero eigenvalues of S_a S_b are those of
(A B^T)(A B^T)^T, so Tr (S_a S_b)^(1/2) is the sum of the singular values of the n_a x n_b
matrix A B^T: no 2048 x 2048 decomposition (two per FID and one for the covariance's rank, seven
for k = 1..3, took 20 s of `cli.py fid` on 16 images, on one core). Where either set has at least as
many images as features, the covariance form is the cheaper one and is used.
With fewer images than 2048 the covariances are singular and FID is biased upwards; the figures
then compare k with k, not with published FIDs (the report says so).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from models_pt import file_sha256
from attfind import selection as sel
from attfind import sufficiency


def parse_k(text: str) -> tuple[int, int]:
    """``"10"`` or ``"1..10"`` -> ``(1, 10)``; ``"3..10"`` -> ``(3, 10)``."""
    from attfind.errors import AttFindInputError

    lo, sep, hi = str(text).partition("..")
    try:
        first, last = (int(lo), int(hi)) if sep else (1, int(lo))
    except ValueError:
        raise AttFindInputError(f"--k {text!r}: expected K or FIRST..K, e.g. 1..10") from None
    if not 1 <= first <= last:
        raise AttFindInputError(f"--k {text!r}: expected 1 <= FIRST <= K")
    return first, last


def _checked(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features: expected [n >= 2, d], got {list(f.shape)}")
    return f


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov``'s, n - 1) of ``features [n, d]``, in float64."""
    f = _checked(features)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """FID between two Gaussians given by mean and covariance (see the module's docstring)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def _centred(features: np.ndarray) -> np.ndarray:
    """``features [n, d]`` centred and divided by sqrt(n - 1): ``c.T @ c`` is ``np.cov``'s."""
    f = _checked(features)
    return (f - f.mean(axis=0)) / np.sqrt(len(f) - 1)


def fid_of_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two sets of features ``[n, d]``. With fewer than ``d`` images in each set, from
    the images (the module's docstring), else from their covariances (``frechet_distance``):
    the same number in real arithmetic."""
    a, b = _checked(a), _checked(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features: {a.shape[1]} against {b.shape[1]} dimensions")
    if max(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*statistics(a), *statistics(b))
    ca, cb = _centred(a), _centred(b)
    trace_root = float(np.linalg.svd(ca @ cb.T, compute_uv=False).sum())
    diff = a.mean(axis=0) - b.mean(axis=0)
    return float(diff @ diff + np.sum(ca * ca) + np.sum(cb * cb) - 2 * trace_root)


def covariance_rank(features: np.ndarray) -> int:
    """The rank of ``np.cov(features)``: that of the centred features (at most n - 1)."""
    return int(np.linalg.matrix_rank(_centred(features)))


def inception_features(net, images: np.ndarray, batch: int = 16, progress: Callable | None = None,
                       device: str = "cpu") -> np.ndarray:
    """``images [N, 3, H, W]`` in [-1, 1] (the generator's range) -> ``[N, 2048]`` float64."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.as_tensor(np.asarray(images[i:i + batch], np.float32), device=device)
            out.append(net((x.clamp(-1, 1) + 1) / 2).double().cpu().numpy())
            if progress:
                progress(len(x))
    return np.concatenate(out)


def run_fid(weights: Path, dlatents_path: Path, inception_weights: Path, out_dir: Path, k_range: tuple[int, int],
            attfind_out: Path | None = None, max_images: int | None = None, device: str = "cpu",
            bar: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """Writes ``fid.json``, ``fid.md`` and ``fid.png`` into ``out_dir``; returns the JSON document.
    AttFind's ranking comes from ``attfind_out``'s effect cache (computed there when absent), as
    in ``cli.py flip-rate``."""
    from attfind.release import default_out, effects_cache
    from stylex_port.analyses.fliprate import FlipOptions, attfind_ranking, flip_setting
    from stylex_port.analyses.inception import load_inception
    from porting.atomic import atomic_path, write_json

    t0 = time.perf_counter()
    net = load_inception(inception_weights).to(device)   # first: a wrong file fails before any work
    first, last = k_range
    options = FlipOptions(k=last, methods=("attfind",), device=device, max_images=max_images)
    setting, _, entries = flip_setting(weights, dlatents_path, options)
    out_dir = Path(out_dir)
    cache = effects_cache(attfind_out or default_out(weights))
    result, record = attfind_ranking(setting, entries, cache, out_dir, options, bar, log)
    labels = sel.split_by_class(setting.base)
    n = len(setting.dlatents)
    ks = list(range(first, last + 1))
    log(f"FID: {n} reconstructions against the same images with their top k attributes changed, k = {first}..{last}")
    progress = bar(n * (len(ks) + 1), "Inception features") if bar else None
    tick = progress.update if progress else None
    base_images, _ = setting.backend.edited_outputs(setting.dlatents)
    reference = inception_features(net, base_images, progress=tick, device=device)
    rows = []
    for k in ks:
        images, logits = setting.edited(sufficiency.sufficiency_plan(labels, result.ranking, k))
        feats = inception_features(net, images, progress=tick, device=device)
        flipped = float(sufficiency.flipped(setting.base, logits).mean())
        rows.append({"k": k, "fid": fid_of_features(reference, feats), "flip_rate": flipped})
    if progress:
        progress.close()
    doc = {"weights": str(weights), "dlatents": str(dlatents_path), "images": n,
           "inception_weights": str(inception_weights), "inception_sha256": file_sha256(inception_weights),
           "feature_dim": int(reference.shape[1]), "covariance_rank": covariance_rank(reference),
           "reference_feature_std": float(reference.std()), "ranking": record["ranking"], "rows": rows,
           "seconds": round(time.perf_counter() - t0, 2)}
    doc["note"] = (None if n > doc["feature_dim"] else
                   f"{n} images for {doc['feature_dim']} features: the covariances are singular and FID is "
                   "biased upwards; compare k with k, not with published FIDs (those use 10,000+ images)")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "fid.json", doc)
    with atomic_path(out_dir / "fid.md") as tmp:
        tmp.write_text(format_fid_table(doc))
    plot(doc, out_dir / "fid.png")
    return doc


def format_fid_table(doc: dict) -> str:
    lines = ["| k (attributes changed) | FID to the reconstructions | flip rate |", "| --- | --- | --- |"]
    lines += [f"| {r['k']} | {r['fid']:.3f} | {r['flip_rate']:.3f} |" for r in doc["rows"]]
    notes = [doc["note"] or f"{doc['images']} images"]
    if doc["rows"][-1]["k"] > len(doc["ranking"]):
        notes.append(f"AttFind ranked {len(doc['ranking'])} attributes: beyond k = {len(doc['ranking'])} "
                     "no image changes further")
    return "\n".join(lines) + "\n\n" + "; ".join(notes) + "\n"


def plot(doc: dict, path: Path) -> Path:
    """FID against k, with the flip rate on a second axis."""
    from stylex_port.analyses.files import figure, save_figure

    ks = [r["k"] for r in doc["rows"]]
    fig, ax = figure((6, 4))
    ax.plot(ks, [r["fid"] for r in doc["rows"]], marker="o", ms=3, color="C0", label="FID")
    ax.set_xlabel("k (top AttFind attributes changed per image)")
    ax.set_ylabel("FID to the reconstructions", color="C0")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(ks, [r["flip_rate"] for r in doc["rows"]], marker="s", ms=3, color="C1", label="flip rate")
    right.set_ylabel("flip rate", color="C1")
    right.set_ylim(-0.02, 1.02)
    ax.set_title(f"{doc['images']} images" + (" (fewer than 2048: compare k with k)" if doc.get("note") else ""))
    return save_figure(fig, path)
