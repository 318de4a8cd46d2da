"""AttFind on converted PyTorch weights, as a tool: ``cli.py attfind`` is a thin wrapper around
``run``, which loads the models (``models_pt.load``), takes the effects from the cache or
computes them (``attfind.cache``; on Ray workers: ``attfind.distributed``), ranks
(``attfind.selection``), and writes the report (``attfind.report``) and the pictures
(``attfind.pictures``).

Layer: ``attfind``; imports ``models_pt`` and ``porting`` (readers of the release's files),
never ``models_tf`` or the cross-checks.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from attfind import report
from attfind import selection as sel
from attfind import sufficiency
from attfind import truth
from attfind.cache import cache_key, compute_effects
from attfind.discriminator_filter import (DISCRIMINATOR_IMAGES, DISCRIMINATOR_SHIFT, DISCRIMINATOR_THRESHOLD,
                                          DiscriminatorFilter)
from attfind.errors import AttFindInputError
from attfind.release import CLASSIFIER, DISCRIMINATOR, GENERATOR, effects_cache, open_release
from attfind.setting import Setting
from porting.atomic import write_json
from models_pt.release_facts import EXAMPLES_FILE


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
    discriminator_filter: bool = False  # the notebook's use_discriminator (attfind.discriminator_filter)
    discriminator_threshold: float = DISCRIMINATOR_THRESHOLD
    discriminator_images: int = DISCRIMINATOR_IMAGES
    discriminator_shift: float = DISCRIMINATOR_SHIFT
    precision: str = "float32"     # the sweep's arithmetic; tf32 or bf16: certified (attfind.certify)


@dataclass
class Outcome:
    result: sel.AttFindResult
    document: dict
    files: list[Path] = field(default_factory=list)


def build_discriminator_filter(weights: Path, entries: dict, setting: Setting, options: Options) -> DiscriminatorFilter:
    """``DiscriminatorFilter`` with the converted discriminator of the release folder."""
    import models_pt

    if DISCRIMINATOR not in entries:
        raise AttFindInputError(f"{weights}/manifest.json: --discriminator-filter needs the discriminator, "
                                "and this converted folder has none")
    disc = models_pt.load(Path(weights) / entries[DISCRIMINATOR]["weights"])
    changes = setting.backend.discriminator_changes(disc, setting.dlatents, setting.styles, setting.style_min,
                                                    setting.style_max, options.discriminator_shift)
    return DiscriminatorFilter(changes, options.discriminator_threshold, options.discriminator_images)


def ray_source(weights: Path, entries: dict, dlatents, style_min, style_max, options: Options, log,
               on_dispatch=None):
    """The effects on Ray workers (``attfind.distributed.sweep``) as an ``EffectSource``, and the
    report it fills (retried units, which worker did what)."""
    from attfind import distributed

    opts = distributed.ClusterOptions(workers=options.workers or 1, address=options.ray_address,
                                      device=options.device, threads_per_worker=options.threads_per_worker,
                                      worker_weights=options.worker_weights)
    expected = {stem: (entries[stem]["weights"], entries[stem].get("weights_sha256"))
                for stem in (GENERATOR, CLASSIFIER)}
    cluster = distributed.SweepReport()

    def source(todo, progress):
        yield from distributed.sweep(Path(weights), expected, dlatents, todo, style_min, style_max,
                                     options.shift_size, options.batch_size, opts, cluster, progress, log,
                                     on_dispatch=on_dispatch or options.on_dispatch)
    return source, cluster


def certified(sweep, backend, setting: Setting, options: Options, log):
    """AttFind on ``sweep``'s reduced-precision effects with every decision re-checked in float32
    on ``backend`` (``attfind.certify``): the result, ``attfind.json``'s ``"certificate"`` and
    the effects with the recomputed coordinates in float32."""
    from attfind import certify

    t0 = time.perf_counter()
    args = (setting.dlatents, setting.style_min, setting.style_max, options.shift_size)
    err = certify.probe_bound(sweep, backend, *args, effects=setting.effects)
    result, cert, effects = certify.certified_attfind(
        setting.effects, setting.base, err, certify.recompute_with(backend, *args),
        on_round=lambda r, n: log(f"{options.precision} effects, round {r}: {n} coordinates open, recomputed "
                                  f"in float32 on every image"),
        num_indices=options.num_indices)
    log(f"certified: every AttFind decision re-checked in float32 against a measured error bound "
        f"(a + b |effect|, a up to {err.a.max():.1e}, b up to {err.b.max():.1e}; at most {cert.bound_max:.1e}; "
        f"{cert.worst_ratio:.2f} of it the largest error seen); {len(cert.recomputed)} of {cert.num_styles} "
        f"coordinates ({cert.fraction:.1%}) recomputed in {time.perf_counter() - t0:.1f} s")
    part = cert.to_dict()
    part.update(bound=err.to_dict(), form=sweep.form, seconds=round(time.perf_counter() - t0, 2))
    return result, part, effects


def torch_threads() -> int:
    """This process's torch CPU threads: on a CPU, part of what makes two runs bit-identical."""
    import torch

    return torch.get_num_threads()


def sufficiency_part(setting: Setting, result, options: Options, log) -> dict:
    """``attfind.json``'s ``"sufficiency"``: the fraction of images whose class flips when their
    top-k attributes (AttFind's; with ``--independent`` also their own) all change."""
    part = {}
    plans = {"attfind": sufficiency.sufficiency_plan(result.labels, result.ranking, options.sufficiency_k)}
    if options.independent:
        plans["independent"] = sufficiency.independent_sufficiency_plan(setting.effects, result.labels,
                                                                        options.sufficiency_k)
    for name, plan in plans.items():
        _, after = setting.edited(plan)
        frac = sufficiency.sufficiency_fraction(setting.base, after)
        part[name] = {"k": options.sufficiency_k, "fraction_flipped": frac,
                      "flipped": sufficiency.flipped(setting.base, after).astype(int).tolist()}
        log(f"sufficiency ({name}, top {options.sufficiency_k}): {frac:.3f} of images change class")
    return part


def independent_part(effects, result, names, k: int) -> list[dict]:
    """``attfind.json``'s ``"independent"``: each image's own top-k towards the other class."""
    return [{"image": names[n], "label": int(result.labels[n]), "target_class": 1 - int(result.labels[n]),
             "attributes": [{"direction": d, "coordinate": j, "effect": e}
                            for d, j, e in sel.independent_ranking(effects[n], 1 - int(result.labels[n]), k)]}
            for n in range(len(names))]


def refuse_reduced_with(options: Options):
    """Reduced precision runs in this process, without the parts it cannot certify."""
    if options.precision != "float32" and (options.workers or options.ray_address or options.discriminator_filter
                                           or options.independent):
        raise AttFindInputError(f"--precision {options.precision} runs in this process, without the "
                                "discriminator filter and the per-image rankings; drop --workers/--ray-address/"
                                "--discriminator-filter/--independent or use --precision float32")


def select(sweep, backend, setting: Setting, options: Options, weights: Path, entries: dict, log):
    """AttFind on the sweep's effects: ``(result, certificate, pick_filter)``. A reduced-precision
    sweep is certified against float32 (``setting.effects`` then holds the recomputed columns)."""
    if options.precision != "float32":
        result, certificate, setting.effects = certified(sweep, backend, setting, options, log)
        return result, certificate, None
    pick_filter = (build_discriminator_filter(weights, entries, setting, options)
                   if options.discriminator_filter else None)
    return sel.attfind(setting.effects, setting.base, num_indices=options.num_indices, pick_filter=pick_filter), \
        None, pick_filter


def effects_record(computed: int, total: int, num_styles: int, seconds: float, options: Options, sweep,
                   cluster) -> dict:
    """``attfind.json``'s ``effects``: what was computed and cached, how fast, in what arithmetic."""
    doc = {"computed_images": computed, "cached_images": total - computed, "torch_threads": torch_threads(),
           "seconds": round(seconds, 2),
           "evaluations_per_second": round(2 * computed * num_styles / seconds, 1) if computed else None,
           "precision": options.precision, "form": getattr(sweep, "form", "plain"), "arithmetic": sweep.arithmetic}
    if cluster is not None:
        doc["cluster"] = cluster.to_json()
    return doc


def filter_record(pick_filter: DiscriminatorFilter, options: Options, log) -> dict:
    doc = pick_filter.to_dict()
    rejected = doc["rejected"]
    log(f"discriminator filter (threshold {options.discriminator_threshold:g}): "
        f"{len(pick_filter.decisions)} candidates asked, {len(rejected)} rejected"
        + (f": {', '.join(f'({d}, {j})' for d, j in rejected[:8])}" if rejected else ""))
    return doc


def run(weights: Path, dlatents_path: Path, out_dir: Path, options: Options = Options(),
        bar: Callable | None = None, log: Callable[[str], None] = print) -> Outcome:
    from attfind.effects_pt import TorchEffects

    t_start, out_dir = time.perf_counter(), Path(out_dir)
    rel = open_release(weights, dlatents_path, max_images=options.max_images, batch_size=options.batch_size,
                       device=options.device)
    gen, clf, entries, backend = rel.generator, rel.classifier, rel.entries, rel.backend
    dlatents, names = rel.dlatents, rel.names
    refuse_reduced_with(options)
    reduced = options.precision != "float32"
    setting = rel.setting(options.shift_size)
    lo, hi = setting.style_min, setting.style_max
    # reduced precision: the delta path (attfind.delta), whose error scales with the effect
    sweep = (TorchEffects(gen, clf, batch_size=options.batch_size, device=options.device,
                          precision=options.precision, form="delta") if reduced else backend)
    key = cache_key(entries, dlatents, lo, hi, options.shift_size, sweep.arithmetic)
    cache = effects_cache(out_dir)
    log(f"AttFind: {len(dlatents)} images x {backend.num_styles} StyleSpace coordinates x 2 directions "
        f"({2 * len(dlatents) * backend.num_styles} generator + classifier evaluations)")
    t0 = time.perf_counter()
    source, cluster = (ray_source(weights, entries, dlatents, lo, hi, options, log)
                       if options.workers or options.ray_address else (None, None))
    setting.base, setting.effects, computed = compute_effects(sweep, dlatents, lo, hi, cache, key, options.shift_size,
                                                              bar, log, source=source)
    seconds = time.perf_counter() - t0
    result, certificate, pick_filter = select(sweep, backend, setting, options, weights, entries, log)

    doc = result.to_dict()
    report.describe(doc["attributes"], gen)
    doc.update({
        "weights": str(weights), "dlatents": str(dlatents_path), "image_names": names,
        "shift_size": options.shift_size, "base_logits": setting.base.tolist(),
        "style_min": lo.tolist(), "style_max": hi.tolist(),
        "effects": effects_record(computed, len(dlatents), backend.num_styles, seconds, options, sweep, cluster),
        "near_ties": [[x.coordinate for x in pair] for pair in result.near_ties(1e-4)],
    })
    if certificate is not None:
        doc["certificate"] = certificate
    if pick_filter is not None:
        doc["discriminator_filter"] = filter_record(pick_filter, options, log)
    examples = options.compare or Path(dlatents_path).parent / EXAMPLES_FILE
    if examples.exists() and reduced and options.truth_images:
        log(f"effects verdict: not run (it judges float32 effects; these are {options.precision}, their "
            "ranking certified equal to float32's); --precision float32 runs it")
        options = dataclasses.replace(options, truth_images=0)
    if examples.exists():
        doc["tfrecord"] = report.tfrecord_part(examples, gen, clf, setting, result, pick_filter, options, cache, key,
                                               bar, log)
    if options.independent:
        doc["independent"] = independent_part(setting.effects, result, names, options.sufficiency_k)
    if options.sufficiency:
        doc["sufficiency"] = sufficiency_part(setting, result, options, log)
    files = []
    if options.pictures and result.attributes:
        from attfind import pictures

        files = pictures.draw(setting, result, out_dir, top=options.top, examples=options.examples)
        doc["pictures"] = [str(p.relative_to(out_dir)) for p in files]
    doc["seconds_total"] = round(time.perf_counter() - t_start, 2)
    write_json(out_dir / "attfind.json", doc)
    return Outcome(result, doc, files + [out_dir / "attfind.json"])
