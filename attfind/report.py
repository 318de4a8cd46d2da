"""AttFind's report: the tfrecord comparison, the effects verdict, and the output's wording.

``compare_with_tfrecord`` matches the release's (or make-reference's) ``examples_1.tfrecord``
with this run image by image and, for the same image set, compares the ranking;
``effects_verdict`` judges TF's effects and ours against the float64 truth; ``describe``,
``tfrecord_part`` and ``format_ranking`` turn a run into ``attfind.json``'s parts and the
printed table.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from attfind import selection as sel
from attfind import truth
from attfind.cache import read_cached, write_cached
from attfind.discriminator_filter import DiscriminatorFilter
from attfind.tfrecord import read_examples


def describe(attributes: list[dict], generator) -> list[dict]:
    """Each ranked attribute with its style layer (index and name) and channel."""
    names = list(generator.conv_styles.keys())
    for a in attributes:
        layer, channel = generator.space.split(a["coordinate"])
        a["layer"], a["channel"], a["style_layer"] = int(layer), int(channel), names[layer]
    return attributes


def tfrecord_part(examples: Path, gen, clf, setting, result, pick_filter, options, cache_dir: Path, key: str,
                  bar=None, log=print) -> dict:
    """``attfind.json``'s ``"tfrecord"``: the comparison and, for the tfrecord's own image set,
    the effects verdict (``options.truth_images`` images; 0: none). ``gen``, ``clf``: the readable
    modules (the float64 truth is theirs); ``setting``: an ``attfind.setting.Setting`` with its effects."""
    same_filter = (DiscriminatorFilter(pick_filter.changes, pick_filter.threshold, pick_filter.max_images)
                   if pick_filter is not None else None)
    t = compare_with_tfrecord(examples, setting.dlatents, setting.base, setting.effects, result, same_filter)
    if not t["compared_images"]:
        log(f"{examples}: {t['note']}")
        return t
    log(f"against {examples}: {t['compared_images']} images, max |effect difference| "
        f"{t['max_abs_effect_diff']:.2e}, base logits {t['max_abs_base_diff']:.2e}"
        + (f"; ranking identical: {t['same_ranking']}" if t["same_ranking"] is not None else ""))
    if options.truth_images and t["same_ranking"] is not None:
        t["verdict"] = v = effects_verdict(examples, gen, clf, setting, result, options, cache_dir, key, bar, log)
        log(f"effects verdict against the float64 truth ({v['images']} images x {v['coordinates']} "
            f"coordinates): score {v['score']:.2f} (<= 1 passes; float32 errors: TF's "
            f"{v['rows'][1]['tf_error']:.2e}, ours {v['rows'][1]['port_error']:.2e}, the rounding model's "
            f"{v['rows'][1]['model_error']:.2e}): "
            f"{'PASSED' if v['passed'] else 'FAILED'}")
    elif options.truth_images:
        t["verdict"] = {"judged": False, "note": "the tfrecord holds another image set: its style "
                        "ranges differ from this run's, so its effects are not judged"}
        log(f"effects verdict: {t['verdict']['note']}")
    return t


def compare_with_tfrecord(path: Path, dlatents, base, effects, result, pick_filter=None) -> dict:
    """Released (or make-reference's) effects against ours, image by image, matched by dlatent;
    for the same image set, the ranking from its effects too (with ``pick_filter``, the same
    discriminator filter as ours)."""
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
                             pick_filter=pick_filter)
        out["same_ranking"] = theirs.ranking == result.ranking
        out["tfrecord_ranking"] = [list(p) for p in theirs.ranking]
    return out


def pair_images(tfrecord_dlatents, dlatents) -> list[tuple[int, int]]:
    """(tfrecord row, dlatents row) of every image both hold, matched by dlatent."""
    index = {np.asarray(w, np.float32).tobytes(): i for i, w in enumerate(dlatents)}
    return [(k, index[np.asarray(w, np.float32).tobytes()]) for k, w in enumerate(tfrecord_dlatents)
            if np.asarray(w, np.float32).tobytes() in index]


def effects_verdict(path: Path, gen, clf, setting, result, options, cache_dir: Path, key: str,
                    bar: Callable | None = None, log=print) -> dict:
    """TF's effects (the tfrecord) and ours judged against the float64 truth (``attfind.truth``)
    on the first ``options.truth_images`` images, at ``options.truth_coordinates`` coordinates
    spread over StyleSpace plus the ranking's. Only for the tfrecord's own image set (the style
    ranges, and so every shift, depend on it). The truth is cached beside the effects."""
    dlatents, base, effects = setting.dlatents, setting.base, setting.effects
    tb, td, te = read_examples(path)
    k, i = map(list, zip(*pair_images(td, dlatents)[:options.truth_images]))
    coords = truth.truth_coordinates(effects.shape[2], options.truth_coordinates, [j for _, j in result.ranking])
    tkey = hashlib.sha256(f"{key}/{i}/{coords.tolist()}".encode()).hexdigest()[:16]
    cached = read_cached(cache_dir / "truth_float64.npz", tkey)
    if cached is None:
        log(f"effects verdict: {2 * len(i) * len(coords)} float64 evaluations ({len(i)} images x "
            f"{len(coords)} coordinates x 2 directions; --truth-images 0 skips them)")
        ctx = bar(len(i) * len(coords), "float64 truth (coordinates)") if bar else None
        try:
            cached = truth.float64_effects(gen, clf, dlatents, i, options.shift_size, options.batch_size, coords,
                                     options.device, on_progress=ctx.update if ctx else None)
        finally:
            if ctx is not None:
                ctx.close()
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_cached(cache_dir / "truth_float64.npz", tkey, *cached)
    tbase, teff = cached
    from porting.rounding import SAMPLES, SMALL_Z

    mi = i[:truth.MODEL_IMAGES]
    mkey = f"{tkey}/rounding-model/{SAMPLES}/z{SMALL_Z:g}/{len(mi)}"
    errors = read_cached(cache_dir / "truth_model_error.npz", mkey)
    if errors is not None and not all(np.isfinite(e).all() for e in errors):
        errors = None    # a NaN an earlier version wrote (NNPACK under the model's own work): recompute
    if errors is None:
        log(f"effects verdict: the float32 rounding model on the first {len(mi)} of those images ({SAMPLES} "
            "noisy float64 runs; docs/verification.md)")
        model_error = truth.effects_model_error(gen, clf, dlatents, mi, options.shift_size, options.batch_size,
                                                coords, truth=(tbase[:len(mi)], teff[:len(mi)]))
        write_cached(cache_dir / "truth_model_error.npz", mkey, np.array([model_error["base logits"]]),
                     np.array([model_error["effects"]]))
    else:
        model_error = {"base logits": float(errors[0][0]), "effects": float(errors[1][0])}
    verdict = truth.judge_effects((tb[k], te[k][:, :, coords]), (base[i], effects[i][:, :, coords]),
                                  (tbase, teff[:, :, coords]), model_error)
    verdict.update(judged=True, coordinates=int(len(coords)))
    return verdict


def format_ranking(doc: dict) -> str:
    lines = [f"{'rank':>4}  {'direction':>10}  {'coordinate':>10}  {'style layer':<12} {'channel':>7}  {'score':>8}"]
    for i, a in enumerate(doc["attributes"], 1):
        arrow = "up (max)" if a["direction"] == 1 else "down (min)"
        lines.append(f"{i:>4}  {arrow:>10}  {a['coordinate']:>10}  {a['style_layer']:<12} {a['channel']:>7}  "
                     f"{a['score']:>8.4f}")
    return "\n".join(lines)
