"""The flip-rate experiment of the reproduction studies: change each image's top-k attributes,
each towards the image's other class, and count the images whose predicted class changes.

Methods (each gives every image an ordered list of edits towards its other class; the first k
distinct ones are applied together, with AttFind's shift rule for StyleSpace edits):

- ``attfind``: AttFind's ranking, from the same code and effect cache as ``cli.py attfind``
  (an image of class 1 takes the ranked ``(d, j)`` as they are, one of class 0 flipped);
- ``wu``: Wu et al.'s StyleSpace selection (``stylex_port.analyses.wu.wu_ranking``) for the other class;
- ``random``: k random coordinates in random directions, several seeds: the floor;
- ``ganspace``: the GANSpace components that most move the classifier towards the other class
  (``stylex_port.analyses.ganspace``), each added with strength ``sigma`` on the chosen style layers;
- ``attfind-own``: a control, AttFind's attributes turned towards the image's *own* class; its
  flip rate must be lower than ``attfind``'s (an experiment wired wrong would not show it).

Flip rates per class and overall, for k = 1..K, with bootstrap confidence intervals over
images (for ``random``, each image's flip is first averaged over the seeds).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from stylex_port.analyses.wu import WuSelection, wu_ranking
from attfind import selection as sel
from attfind import sufficiency
from attfind.release import default_out, effects_cache
from attfind.setting import Setting

METHODS = ("attfind", "wu", "random", "ganspace", "attfind-own")
TITLES = {"attfind": "AttFind", "wu": "Wu et al.", "random": "random", "ganspace": "GANSpace",
          "attfind-own": "AttFind, own class (control)"}
DEFAULT_METHODS = ("attfind", "wu", "random")


@dataclass
class FlipOptions:
    k: int = 10
    methods: tuple = DEFAULT_METHODS
    shift_size: float = 1.0
    num_indices: int = sel.NUM_INDICES
    random_seeds: int = 5
    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95
    wu: WuSelection = field(default_factory=WuSelection)
    ganspace_samples: int = 2000
    ganspace_components: int = 10
    ganspace_layers: str | None = None
    ganspace_sigma: float = 2.0
    batch_size: int = 128
    device: str = "cpu"
    max_images: int | None = None
    cache_dir: Path | None = None     # AttFind's effect cache [default: <attfind out>/effects_cache]


def bootstrap_ci(values: np.ndarray, resamples: int, rng, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values [n]`` over ``resamples`` resamplings."""
    v = np.asarray(values, np.float64)
    if not len(v):
        return float("nan"), float("nan")
    idx = rng.integers(0, len(v), size=(resamples, len(v)))
    means = v[idx].mean(axis=1)
    a = (1 - confidence) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def summarise(flips: np.ndarray, labels: np.ndarray, resamples: int, seed: int, confidence: float) -> dict:
    """``flips [N]`` (0/1, or a fraction over seeds) -> rate and interval per class and overall."""
    out = {}
    for name, mask in (("class 0", labels == 0), ("class 1", labels == 1), ("all", np.ones(len(labels), bool))):
        rng = np.random.default_rng(seed)
        v = flips[mask]
        lo, hi = bootstrap_ci(v, resamples, rng, confidence)
        out[name] = {"rate": float(v.mean()) if len(v) else float("nan"), "ci": [lo, hi], "images": int(mask.sum())}
    return out


def random_lists(labels, num_styles: int, k: int, seed: int) -> list[list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    return [[(int(d), int(j)) for d, j in zip(rng.integers(0, 2, k), rng.choice(num_styles, k, replace=False))]
            for _ in labels]


def flips_of(setting: Setting, labels: np.ndarray, per_image: list, k: int) -> np.ndarray:
    """``[N]`` bool: each image's class flips when the first ``k`` edits of its list are made."""
    _, after = setting.edited(sufficiency.plan_from_lists(labels, per_image, k))
    return sufficiency.flipped(setting.base, after)


def check_options(options: FlipOptions) -> None:
    from attfind.errors import AttFindInputError

    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise AttFindInputError(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if options.k < 1:
        raise AttFindInputError("--k must be at least 1")


def flip_setting(weights: Path, dlatents_path: Path, options: FlipOptions):
    """The flip rates' ``(Setting, generator, manifest entries)``: the release opened as AttFind
    opens it (``attfind.release.open_release``), ``--k`` checked against its StyleSpace."""
    from attfind.errors import AttFindInputError
    from attfind.release import open_release

    rel = open_release(weights, dlatents_path, max_images=options.max_images, batch_size=options.batch_size,
                       device=options.device)
    if options.k > rel.backend.num_styles:
        raise AttFindInputError(f"--k {options.k}: this generator has only {rel.backend.num_styles} StyleSpace "
                                "coordinates")
    return rel.setting(options.shift_size), rel.generator, rel.entries


def attfind_ranking(setting: Setting, entries: dict, cache: Path, out_dir: Path, options: FlipOptions,
                    bar, log) -> tuple[object, dict]:
    """AttFind's result from its effect cache (computed there when absent), and the record."""
    from attfind.cache import cache_key, compute_effects

    key = cache_key(entries, setting.dlatents, setting.style_min, setting.style_max, options.shift_size)
    if options.cache_dir is None and other_run(cache, key):
        log(f"{cache} holds the effects of another run (other images, shift size or weights); "
            f"this one's go to {effects_cache(out_dir)}")
        cache = effects_cache(out_dir)
    base, effects, computed = compute_effects(setting.backend, setting.dlatents, setting.style_min, setting.style_max,
                                              cache, key, options.shift_size, bar, log)
    setting.base = base
    result = sel.attfind(effects, base, num_indices=options.num_indices)
    return result, {"cache": str(cache), "computed_images": computed, "ranking": [list(p) for p in result.ranking]}


def edit_lists(setting: Setting, result, options: FlipOptions, log) -> tuple[dict, dict]:
    """Per method (but GANSpace), each image's ordered edits (random: one list set per seed), and
    the selection records."""
    K, labels, lists, records = options.k, sel.split_by_class(setting.base), {}, {}
    if "attfind" in options.methods or "attfind-own" in options.methods:
        ranked = result.ranking
        towards_other = [ranked if c == 1 else [(1 - d, j) for d, j in ranked] for c in labels]
        lists["attfind"] = towards_other
        lists["attfind-own"] = [[(1 - d, j) for d, j in lst] for lst in towards_other]
        if len(ranked) < K:
            log(f"AttFind ranked {len(ranked)} attributes (--num-indices {options.num_indices} per class): "
                f"k above {len(ranked)} applies them all")
    if "wu" in options.methods:
        per_class, classes = {}, []
        probs = sel.softmax(setting.base)
        for c in (0, 1):
            ranking, record = wu_ranking(setting.styles, probs, c, options.wu)
            per_class[c] = [(d, j) for d, j, _ in ranking[:K]]
            record["top"] = [[d, j, round(z, 4)] for d, j, z in ranking[:K]]
            classes.append(record)
        lists["wu"] = [per_class[1 - c] for c in labels]
        records["wu"] = {"mode": options.wu.mode, "fraction": options.wu.fraction, "threshold": options.wu.threshold,
                         "min_images": options.wu.min_images, "classes": classes}
    if "random" in options.methods:
        seeds = [options.seed + r for r in range(options.random_seeds)]
        lists["random"] = [random_lists(labels, setting.backend.num_styles, K, seed) for seed in seeds]
        records["random"] = {"seeds": seeds}
    return lists, records


def list_flip_rates(setting: Setting, labels: np.ndarray, lists: dict, options: FlipOptions, log) -> dict:
    """Method -> ``[K, N]`` flips (random: averaged over its seeds)."""
    rates = {}
    for method in options.methods:
        if method == "ganspace":
            continue
        runs = lists[method] if method == "random" else [lists[method]]
        flips = np.zeros((options.k, len(setting.dlatents)))
        for per_image in runs:
            for k in range(1, options.k + 1):
                flips[k - 1] += flips_of(setting, labels, per_image, k)
        rates[method] = flips / len(runs)
        log(f"{TITLES[method]}: flip rate at k = {options.k}: {rates[method][-1].mean():.3f}")
    return rates


def ganspace_flip_rates(setting: Setting, labels: np.ndarray, gen, options: FlipOptions, log) -> tuple[np.ndarray, dict]:
    """``[K, N]`` flips of the GANSpace components that most move each image towards its other
    class, and the record (basis, layers, the ranked components)."""
    from stylex_port.analyses import ganspace as gs

    layers = gs.parse_layers(options.ganspace_layers, gen.num_layers)
    basis = gs.basis_for(setting.backend.generator, options.ganspace_samples, options.ganspace_components,
                         options.seed, setting.dlatents)
    moved = gs.classifier_moves(setting.backend, setting.dlatents, basis, layers, gen.num_layers, options.ganspace_sigma)
    ranked = {c: gs.ranked_moves(moved["margin_change"], np.flatnonzero(labels != c), c, options.ganspace_sigma)
              for c in (0, 1)}
    flips = np.zeros((options.k, len(setting.dlatents)))
    kk = min(options.k, len(basis.std))
    for k in range(1, options.k + 1):
        moves = [[(i, st) for i, st, _ in ranked[1 - c][:min(k, kk)]] for c in labels]
        wl = gs.edit(setting.dlatents, basis, moves, layers, gen.num_layers).astype(np.float32)
        _, after = gs.render_pt(setting.backend, wl)
        flips[k - 1] = sufficiency.flipped(setting.base, after)
    log(f"GANSpace: flip rate at k = {options.k}: {flips[-1].mean():.3f}")
    record = {"samples": options.ganspace_samples, "layers": list(layers), "sigma": options.ganspace_sigma,
              "basis": basis.to_json(),
              "ranked": {str(c): [[i, st, round(p, 4)] for i, st, p in ranked[c]] for c in (0, 1)}}
    return flips, record


def run_flip_rate(weights: Path, dlatents_path: Path, out_dir: Path, options: FlipOptions = FlipOptions(),
                  attfind_out: Path | None = None, bar: Callable | None = None,
                  log: Callable[[str], None] = print) -> dict:
    """The experiment; writes ``flip_rate.json``, ``flip_rate.md`` and ``flip_rate.png`` into
    ``out_dir`` and returns the JSON document."""
    from porting.atomic import write_json

    t0 = time.perf_counter()
    check_options(options)
    out_dir = Path(out_dir)
    setting, gen, entries = flip_setting(weights, dlatents_path, options)
    doc = {"weights": str(weights), "dlatents": str(dlatents_path), "images": len(setting.dlatents), "k": options.k,
           "shift_size": options.shift_size, "methods": list(options.methods), "bootstrap": options.bootstrap,
           "confidence": options.confidence, "per_k": {}, "selection": {}}
    result = None
    if any(m.startswith("attfind") for m in options.methods):
        cache = options.cache_dir or effects_cache(attfind_out or default_out(weights))
        result, doc["selection"]["attfind"] = attfind_ranking(setting, entries, cache, out_dir, options, bar, log)
    else:
        setting.base = backend_logits(setting.backend, setting.dlatents)
    labels = sel.split_by_class(setting.base)
    doc["labels"] = labels.tolist()

    lists, records = edit_lists(setting, result, options, log)
    doc["selection"].update(records)
    rates = list_flip_rates(setting, labels, lists, options, log)
    if "ganspace" in options.methods:
        rates["ganspace"], doc["selection"]["ganspace"] = ganspace_flip_rates(setting, labels, gen, options, log)

    for method, flips in rates.items():
        doc["per_k"][method] = [summarise(flips[k], labels, options.bootstrap, options.seed, options.confidence)
                                for k in range(options.k)]
    doc["result"] = {m: doc["per_k"][m][-1] for m in rates}
    doc["seconds"] = round(time.perf_counter() - t0, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "flip_rate.json", doc)
    _write_text(out_dir / "flip_rate.md", format_flip_table(doc))
    plot(doc, out_dir / "flip_rate.png")
    return doc


def other_run(cache: Path, key: str) -> bool:
    """True when ``cache`` holds entries of another key (another attfind run's): flip-rate then
    keeps its own, instead of overwriting that run's."""
    from attfind.cache import read_cached

    first = next(iter(sorted(Path(cache).glob("image_*.npz"))), None) if Path(cache).exists() else None
    return first is not None and read_cached(first, key) is None   # another key, or foreign: not ours


def backend_logits(backend, dlatents, batch: int = 64) -> np.ndarray:
    return np.concatenate([backend.logits(dlatents[i:i + batch]) for i in range(0, len(dlatents), batch)])


def _write_text(path: Path, text: str):
    from porting.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def format_flip_table(doc: dict) -> str:
    """The studies' table: methods as columns, classes as rows, at k = K."""
    methods = [m for m in doc["methods"] if m in doc["result"]]
    pct = int(round(100 * doc["confidence"]))
    head = f"| flip rate, top {doc['k']} ({pct}% CI) | " + " | ".join(TITLES[m] for m in methods) + " |"
    lines = [head, "| --- |" + " --- |" * len(methods)]
    for row, label in (("class 0", "class 0 -> 1"), ("class 1", "class 1 -> 0"), ("all", "all images")):
        cells = []
        for m in methods:
            r = doc["result"][m][row]
            cells.append(f"{r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]")
        lines.append(f"| {label} ({doc['result'][methods[0]][row]['images']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> Path:
    """Flip rate against k for every method, with its confidence band."""
    from stylex_port.analyses.files import figure, save_figure

    ks = np.arange(1, doc["k"] + 1)
    fig, ax = figure((6, 4))
    for m, per_k in doc["per_k"].items():
        rate = [r["all"]["rate"] for r in per_k]
        lo = [r["all"]["ci"][0] for r in per_k]
        hi = [r["all"]["ci"][1] for r in per_k]
        line, = ax.plot(ks, rate, marker="o", ms=3, label=TITLES[m])
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("k (attributes changed together)")
    ax.set_ylabel("flip rate (all images)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{doc['images']} images; bands: {int(round(100 * doc['confidence']))}% bootstrap CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
