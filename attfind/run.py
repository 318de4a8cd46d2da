"""AttFind on converted PyTorch weights, as a tool: effects (cached per image, so an interrupted
run resumes), the ranking, the optional image-specific ranking and sufficiency measure, and the
pictures. ``cli.py attfind`` is a thin wrapper around ``run``."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from attfind import selection as sel
from attfind import truth
from porting.atomic import atomic_path, write_json
from porting.errors import PortError

CACHE_FORMAT = "attfind-effects/1"

EffectSource = Callable[[list, Callable[[float], None]], Iterator[tuple[int, np.ndarray, np.ndarray]]]
"""``source(todo, progress)`` yields ``(image, base [C], effects [2, S, C])`` for every image of
``todo``; ``progress(total)`` reports the coordinates done so far."""


class AttFindInputError(PortError):
    """Weights or inputs AttFind cannot use."""


@dataclass
class Options:
    num_indices: int = sel.NUM_INDICES
    shift_size: float = 1.0
    batch_size: int = 128
    top: int = 4                   # attributes drawn as grids and GIFs
    examples: int = 4              # images per drawn attribute
    independent: bool = False
    sufficiency: bool = False
    sufficiency_k: int = sel.SUFFICIENCY_K
    max_images: int | None = None
    pictures: bool = True
    device: str = "cpu"
    compare: Path | None = None    # an examples_1.tfrecord; default: the one beside the dlatents
    truth_images: int = truth.DEFAULT_TRUTH_IMAGES            # images whose effects are also computed
    truth_coordinates: int = truth.DEFAULT_TRUTH_COORDINATES  # in float64 for the verdict, at this many
                                                              # coordinates (spread, plus the ranking's)
    workers: int = 0               # > 0: the effects on that many Ray workers (attfind.distributed)
    ray_address: str | None = None # join this Ray cluster instead of starting one
    threads_per_worker: int | None = None
    worker_weights: Path | None = None  # the converted folder as the workers see it
    on_dispatch: Callable | None = None  # distributed only: called with the in-flight units (tests)
    discriminator_filter: bool = False  # the notebook's use_discriminator (selection.DiscriminatorFilter)
    discriminator_threshold: float = sel.DISCRIMINATOR_THRESHOLD
    discriminator_images: int = sel.DISCRIMINATOR_IMAGES
    discriminator_shift: float = sel.DISCRIMINATOR_SHIFT


@dataclass
class Outcome:
    result: sel.AttFindResult
    document: dict
    files: list[Path] = field(default_factory=list)


def load_models(weights: Path):
    """The generator and classifier of a converted release folder (``cli.py convert``)."""
    import models_pt

    weights = Path(weights)
    if not weights.is_dir():
        raise AttFindInputError(f"{weights}: expected a converted release folder (with manifest.json), "
                                "as `cli.py convert --tf-ckpt <release folder>` writes")
    manifest = weights / "manifest.json"
    if not manifest.exists():
        raise AttFindInputError(f"{weights}: no manifest.json; convert the whole release folder")
    entries = json.loads(manifest.read_text())["models"]
    missing = [stem for stem in ("generator", "mobilenet") if stem not in entries]
    if missing:
        raise AttFindInputError(f"{manifest}: AttFind needs the generator and the classifier (mobilenet); "
                                f"missing: {', '.join(missing)}")
    gen = models_pt.load(weights / entries["generator"]["weights"])
    clf = models_pt.load(weights / entries["mobilenet"]["weights"])
    return gen, clf, entries


def cache_key(entries: dict, dlatents: np.ndarray, style_min, style_max, shift_size: float) -> str:
    """What the cached effects depend on: the weights (their hashes in the manifest), the
    dlatents, the style ranges and the shift size."""
    h = hashlib.sha256()
    h.update(json.dumps({k: e.get("weights_sha256", e.get("weights")) for k, e in sorted(entries.items())},
                        sort_keys=True).encode())
    for a in (dlatents, style_min, style_max):
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    h.update(repr(float(shift_size)).encode())
    return h.hexdigest()[:16]


def _cached(path: Path, key: str):
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return None
            return z["base"], z["effects"]
    except Exception:  # a half-written or foreign file: recompute it
        return None


def local_source(backend, dlatents, style_min, style_max, shift_size: float = 1.0) -> EffectSource:
    """The single-process path: ``backend.image`` for each image in turn."""
    def source(todo, progress):
        done = 0.0
        for i in todo:
            def on_batch(k):
                nonlocal done
                done += k
                progress(done)
            base, effects = backend.image(dlatents[i], style_min, style_max, shift_size, on_batch=on_batch)
            yield i, base, effects
    return source


def write_cached(path: Path, key: str, base: np.ndarray, effects: np.ndarray) -> None:
    """One image's cache entry, written to a temporary file and renamed: a reader (this run
    resuming, or another run on the same cache) sees the whole entry or none."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), base=base, effects=effects)


def compute_effects(backend, dlatents, style_min, style_max, cache_dir: Path | None, key: str,
                    shift_size: float = 1.0, bar: Callable | None = None, log=print,
                    source: EffectSource | None = None):
    """Effects for every image, from the cache where it has them; returns (base [N, C],
    effects [N, 2, S, C], number computed now). ``source(todo, progress)`` computes the rest and
    yields ``(image, base, effects)`` in any order (default: ``local_source``; the Ray workers:
    ``attfind.distributed.sweep``); each result is cached as it arrives."""
    n, s = len(dlatents), backend.num_styles
    base = np.zeros((n, 2), np.float32)
    effects = np.zeros((n, 2, s, 2), np.float32)
    todo = []
    for i in range(n):
        hit = _cached(cache_dir / f"image_{i:05d}.npz", key) if cache_dir else None
        if hit is None:
            todo.append(i)
        else:
            base[i], effects[i] = hit
    if len(todo) < n:
        log(f"effects: {n - len(todo)} of {n} images from the cache in {cache_dir}")
    if cache_dir:
        cache_dir.mkdir(parents=True, exist_ok=True)
    if not todo:
        return base, effects, 0
    source = source or local_source(backend, dlatents, style_min, style_max, shift_size)
    ctx = bar(len(todo) * s, "effects (coordinates)") if bar else None

    def progress(total: float):
        if ctx is not None:
            ctx.update(int(min(total, ctx.total)) - ctx.n)

    computed = set()
    try:
        for i, b, e in source(todo, progress):
            if i in computed:        # a source must yield each image once; never write an entry twice
                continue
            computed.add(i)
            base[i], effects[i] = b, e
            if cache_dir:
                write_cached(cache_dir / f"image_{i:05d}.npz", key, base[i], effects[i])
    finally:
        if ctx is not None:
            ctx.close()
    if len(computed) != len(todo):
        raise AttFindInputError(f"the effects of images {sorted(set(todo) - computed)[:10]} were not computed")
    return base, effects, len(todo)


def discriminator_filter(weights: Path, entries: dict, backend, dlatents, styles, style_min, style_max,
                         options: Options) -> sel.DiscriminatorFilter:
    """``selection.DiscriminatorFilter`` with the converted discriminator of the release folder."""
    import models_pt

    if "discriminator" not in entries:
        raise AttFindInputError(f"{weights}/manifest.json: --discriminator-filter needs the discriminator, "
                                "and this converted folder has none")
    disc = models_pt.load(Path(weights) / entries["discriminator"]["weights"])
    changes = backend.discriminator_changes(disc, dlatents, styles, style_min, style_max,
                                            options.discriminator_shift)
    return sel.DiscriminatorFilter(changes, options.discriminator_threshold, options.discriminator_images)


def ray_source(weights: Path, entries: dict, dlatents, style_min, style_max, options: Options, log,
               on_dispatch=None):
    """The effects on Ray workers (``attfind.distributed.sweep``) as an ``EffectSource``, and the
    report it fills (retried units, which worker did what)."""
    from attfind import distributed

    opts = distributed.ClusterOptions(workers=options.workers or 1, address=options.ray_address,
                                      device=options.device, threads_per_worker=options.threads_per_worker,
                                      worker_weights=options.worker_weights)
    expected = {stem: (entries[stem]["weights"], entries[stem].get("weights_sha256"))
                for stem in ("generator", "mobilenet")}
    report = distributed.SweepReport()

    def source(todo, progress):
        yield from distributed.sweep(Path(weights), expected, dlatents, todo, style_min, style_max,
                                     options.shift_size, options.batch_size, opts, report, progress, log,
                                     on_dispatch=on_dispatch or options.on_dispatch)
    return source, report


def torch_threads() -> int:
    """This process's torch CPU threads: on a CPU, part of what makes two runs bit-identical."""
    import torch

    return torch.get_num_threads()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def edited_outputs(backend, dlatents, deltas: np.ndarray | None = None, batch: int = 32):
    """Images (clamped) and logits of ``dlatents`` (``[N, D]``, or per layer ``[N, layers, D]``)
    after adding ``deltas [N, S]`` to each image's conv styles (none: as they are)."""
    import torch

    g = backend.generator
    images, logits = [], []
    with torch.no_grad():
        for i in range(0, len(dlatents), batch):
            w = torch.as_tensor(np.asarray(dlatents[i:i + batch]), device=backend.device).to(backend.dtype)
            conv, rgb = g.style_vectors(w)
            if deltas is not None:
                d = torch.as_tensor(deltas[i:i + batch], dtype=conv[0].dtype, device=backend.device)
                conv = list(torch.split(torch.cat(conv, dim=1) + d, backend.sizes, dim=1))
            img = g.synthesis(conv, rgb).clamp(-1, 1)
            images.append(img.cpu().numpy())
            logits.append(backend.classifier(img).cpu().numpy())
    return np.concatenate(images), np.concatenate(logits)


def run(weights: Path, dlatents_path: Path, out_dir: Path, options: Options = Options(),
        bar: Callable | None = None, log: Callable[[str], None] = print) -> Outcome:
    from attfind.effects_pt import FastEffects
    from porting.dlatents import dlatent_matrix, load_dlatents

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    gen, clf, entries = load_models(weights)
    items = load_dlatents(dlatents_path)
    names = [n for n, _ in items]
    dlatents = dlatent_matrix(items)
    if options.max_images:
        dlatents, names = dlatents[:options.max_images], names[:options.max_images]
    w_dim = gen.config["w_dim"]
    if dlatents.shape[1] != w_dim:
        raise AttFindInputError(f"{dlatents_path}: dlatents have {dlatents.shape[1]} values, the generator "
                                f"in {weights} takes {w_dim}")
    backend = FastEffects(gen, clf, batch_size=options.batch_size, device=options.device)
    styles = backend.styles(dlatents)
    lo, hi = sel.style_ranges(styles)
    key = cache_key(entries, dlatents, lo, hi, options.shift_size)
    log(f"AttFind: {len(dlatents)} images x {backend.num_styles} StyleSpace coordinates x 2 directions "
        f"({2 * len(dlatents) * backend.num_styles} generator + classifier evaluations)")
    t0 = time.perf_counter()
    source, cluster = None, None
    if options.workers or options.ray_address:
        source, cluster = ray_source(weights, entries, dlatents, lo, hi, options, log)
    base, effects, computed = compute_effects(backend, dlatents, lo, hi, out_dir / "effects_cache", key,
                                              options.shift_size, bar, log, source=source)
    seconds = time.perf_counter() - t0
    disc_filter = None
    if options.discriminator_filter:
        disc_filter = discriminator_filter(weights, entries, backend, dlatents, styles, lo, hi, options)
    result = sel.attfind(effects, base, num_indices=options.num_indices, disc_filter=disc_filter)

    doc = result.to_dict()
    for a in doc["attributes"]:
        layer, channel = gen.split_coordinate(a["coordinate"])
        a["layer"], a["channel"] = int(layer), int(channel)
        a["style_layer"] = list(gen.conv_styles.keys())[layer]
    doc.update({
        "weights": str(weights), "dlatents": str(dlatents_path), "image_names": names,
        "shift_size": options.shift_size, "base_logits": base.tolist(),
        "style_min": lo.tolist(), "style_max": hi.tolist(),
        "effects": {"computed_images": computed, "cached_images": len(dlatents) - computed,
                    "torch_threads": torch_threads(),
                    "seconds": round(seconds, 2),
                    "evaluations_per_second": (round(2 * computed * backend.num_styles / seconds, 1)
                                               if computed else None)},
        "near_ties": [[x.coordinate for x in pair] for pair in result.near_ties(1e-4)],
    })
    if cluster is not None:
        doc["effects"]["cluster"] = cluster.to_json()
    if disc_filter is not None:
        doc["discriminator_filter"] = disc_filter.to_dict()
        rejected = doc["discriminator_filter"]["rejected"]
        log(f"discriminator filter (threshold {options.discriminator_threshold:g}): "
            f"{len(disc_filter.decisions)} candidates asked, {len(rejected)} rejected"
            + (f": {', '.join(f'({d}, {j})' for d, j in rejected[:8])}" if rejected else ""))

    examples = options.compare or Path(dlatents_path).parent / "examples_1.tfrecord"
    if examples.exists():
        doc["tfrecord"] = compare_with_tfrecord(examples, dlatents, base, effects, result,
                                                (sel.DiscriminatorFilter(disc_filter.changes, disc_filter.threshold,
                                                                         disc_filter.max_images)
                                                 if disc_filter is not None else None))
        t = doc["tfrecord"]
        if t["compared_images"]:
            log(f"against {examples}: {t['compared_images']} images, max |effect difference| "
                f"{t['max_abs_effect_diff']:.2e}, base logits {t['max_abs_base_diff']:.2e}"
                + (f"; ranking identical: {t['same_ranking']}" if t["same_ranking"] is not None else ""))
            if options.truth_images and t["same_ranking"] is not None:
                t["verdict"] = effects_verdict(examples, gen, clf, dlatents, base, effects, result, options,
                                               out_dir / "effects_cache", key, bar, log)
                v = t["verdict"]
                log(f"effects verdict against the float64 truth ({v['images']} images x {v['coordinates']} "
                    f"coordinates): score {v['score']:.2f} (<= 1 passes; TF's float32 error "
                    f"{v['rows'][1]['tf_error']:.2e}, ours {v['rows'][1]['port_error']:.2e}): "
                    f"{'PASSED' if v['passed'] else 'FAILED'}")
            elif options.truth_images:
                t["verdict"] = {"judged": False, "note": "the tfrecord holds another image set: its style "
                                "ranges differ from this run's, so its effects are not judged"}
                log(f"effects verdict: {t['verdict']['note']}")
        else:
            log(f"{examples}: {t['note']}")

    if options.independent:
        doc["independent"] = [
            {"image": names[n], "label": int(result.labels[n]), "target_class": 1 - int(result.labels[n]),
             "attributes": [{"direction": d, "coordinate": j, "effect": e}
                            for d, j, e in sel.independent_ranking(effects[n], 1 - int(result.labels[n]),
                                                                   options.sufficiency_k)]}
            for n in range(len(dlatents))]
    if options.sufficiency:
        doc["sufficiency"] = {}
        plans = {"attfind": sel.sufficiency_plan(result.labels, result.ranking, options.sufficiency_k)}
        if options.independent:
            plans["independent"] = sel.independent_sufficiency_plan(effects, result.labels, options.sufficiency_k)
        for name, plan in plans.items():
            _, after = edited_outputs(backend, dlatents, plan.deltas(styles, lo, hi, options.shift_size))
            frac = sel.sufficiency_fraction(base, after)
            doc["sufficiency"][name] = {"k": options.sufficiency_k, "fraction_flipped": frac,
                                        "flipped": sel.flipped(base, after).astype(int).tolist()}
            log(f"sufficiency ({name}, top {options.sufficiency_k}): {frac:.3f} of images change class")

    files = []
    if options.pictures and result.attributes:
        from attfind import pictures
        files = pictures.draw(backend, dlatents, styles, lo, hi, result, effects, base, out_dir,
                              top=options.top, examples=options.examples, shift_size=options.shift_size)
        doc["pictures"] = [str(p.relative_to(out_dir)) for p in files]
    doc["seconds_total"] = round(time.perf_counter() - t_start, 2)
    write_json(out_dir / "attfind.json", doc)
    return Outcome(result, doc, files + [out_dir / "attfind.json"])


def compare_with_tfrecord(path: Path, dlatents, base, effects, result, disc_filter=None) -> dict:
    """Released (or make-reference's) effects against ours, image by image, matched by dlatent;
    for the same image set, the ranking from its effects too (with ``disc_filter``, the same
    discriminator filter as ours)."""
    from attfind.tfrecord import read_examples

    tb, td, te = read_examples(path)
    pairs = pair_images(td, dlatents)
    out = {"file": str(path), "tfrecord_images": int(len(td)), "compared_images": len(pairs),
           "max_abs_effect_diff": None, "max_abs_base_diff": None, "same_ranking": None}
    if not pairs or te.shape[2] != effects.shape[2]:
        out["note"] = ("no image in common with these dlatents" if not pairs else
                       f"{te.shape[2]} coordinates there, {effects.shape[2]} here; not compared")
        out["compared_images"] = 0
        return out
    k, i = map(list, zip(*pairs))
    out["max_abs_effect_diff"] = float(np.abs(te[k] - effects[i]).max())
    out["max_abs_base_diff"] = float(np.abs(tb[k] - base[i]).max())
    if len(pairs) == len(td) == len(dlatents):   # the same image set: the rankings are comparable
        order = np.asarray(k)[np.argsort(i)]      # tfrecord rows in the dlatents' order
        theirs = sel.attfind(te[order], tb[order], **{
            key: result.params[key] for key in ("num_indices", "max_image_effect",
                                                "unstable_threshold", "unstable_max_count")},
                             disc_filter=disc_filter)
        out["same_ranking"] = theirs.ranking == result.ranking
        out["tfrecord_ranking"] = [list(p) for p in theirs.ranking]
    return out


def pair_images(tfrecord_dlatents, dlatents) -> list[tuple[int, int]]:
    """(tfrecord row, dlatents row) of every image both hold, matched by dlatent."""
    index = {np.asarray(w, np.float32).tobytes(): i for i, w in enumerate(dlatents)}
    return [(k, index[np.asarray(w, np.float32).tobytes()]) for k, w in enumerate(tfrecord_dlatents)
            if np.asarray(w, np.float32).tobytes() in index]


def effects_verdict(path: Path, gen, clf, dlatents, base, effects, result, options: Options,
                    cache_dir: Path, key: str, bar: Callable | None = None, log=print) -> dict:
    """TF's effects (the tfrecord) and ours judged against the float64 truth (``attfind.truth``)
    on the first ``options.truth_images`` images, at ``options.truth_coordinates`` coordinates
    spread over StyleSpace plus the ranking's. Only for the tfrecord's own image set (the style
    ranges, and so every shift, depend on it). The truth is cached beside the effects."""
    from attfind.tfrecord import read_examples

    tb, td, te = read_examples(path)
    k, i = map(list, zip(*pair_images(td, dlatents)[:options.truth_images]))
    coords = truth.truth_coordinates(effects.shape[2], options.truth_coordinates, [j for _, j in result.ranking])
    tkey = hashlib.sha256(f"{key}/{i}/{coords.tolist()}".encode()).hexdigest()[:16]
    cached = _cached(cache_dir / "truth_float64.npz", tkey)
    if cached is None:
        log(f"effects verdict: {2 * len(i) * len(coords)} float64 evaluations ({len(i)} images x "
            f"{len(coords)} coordinates x 2 directions; --truth-images 0 skips them)")
        ctx = bar(len(i) * len(coords), "float64 truth (coordinates)") if bar else None
        try:
            cached = truth.float64_effects(gen, clf, dlatents, i, options.shift_size, options.batch_size, coords,
                                     options.device, on_batch=(lambda n: ctx.update(n)) if ctx else None)
        finally:
            if ctx is not None:
                ctx.close()
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_cached(cache_dir / "truth_float64.npz", tkey, *cached)
    tbase, teff = cached
    verdict = truth.judge_effects((tb[k], te[k][:, :, coords]), (base[i], effects[i][:, :, coords]),
                            (tbase, teff[:, :, coords]))
    verdict.update(judged=True, coordinates=int(len(coords)))
    return verdict


def format_ranking(doc: dict) -> str:
    lines = [f"{'rank':>4}  {'direction':>10}  {'coordinate':>10}  {'style layer':<12} {'channel':>7}  {'score':>8}"]
    for i, a in enumerate(doc["attributes"], 1):
        arrow = "up (max)" if a["direction"] == 1 else "down (min)"
        lines.append(f"{i:>4}  {arrow:>10}  {a['coordinate']:>10}  {a['style_layer']:<12} {a['channel']:>7}  "
                     f"{a['score']:>8.4f}")
    return "\n".join(lines)
