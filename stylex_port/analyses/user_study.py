"""A user study of AttFind's top attributes, as the paper's two designs run it, written as a
static page a participant opens from a file (no server, no network; answers stay in the page
until the participant downloads them as a CSV).

- **Classification** (are the attributes distinct and coherent?): a question shows two panels,
  each with ``examples`` animations of one top attribute being changed, on images of both
  classes, and a new animation of one of the two attributes on an image neither panel shows;
  the participant says which panel's change it is (chance: 0.5).
- **Verbal description**: a panel of one attribute's animations and a free-text box for one to
  three words naming the change.

Each animation moves one StyleSpace coordinate from the image's style to AttFind's shift and
back, in the direction that pushes the image towards its other class, with no caption (the
classifier's probability would give the answer away). An attribute's images are those where the
change moves the classifier most, taken from each class in turn.

Questions are drawn and ordered with a seed. The folder the participants get (``study/``) holds
no answers; ``key.json`` beside it does, for ``cli.py user-study-score``.
"""
from __future__ import annotations

import hashlib
import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from attfind import selection as sel
from attfind.errors import AttFindInputError

STUDY_FORMAT = "stylex-user-study/1"
CSV_HEADER = ("study_id", "participant", "question", "kind", "answer")
SIDES = ("left", "right")
PAGE_TEMPLATE = Path(__file__).with_name("user_study_page.html")


@dataclass
class StudyOptions:
    attributes: int = 4        # top AttFind attributes in the study
    examples: int = 4          # animations per attribute panel
    queries: int = 2           # classification questions per attribute
    frames: int = 8            # animation steps from the image to the full shift
    seed: int = 0
    device: str = "cpu"
    max_images: int | None = None
    batch_size: int = 64


def read_attfind(attfind_out: Path) -> dict:
    """``attfind.json`` of a ``cli.py attfind`` run, checked for what a study needs."""
    from stylex_port.analyses.files import read_json

    path = Path(attfind_out) / "attfind.json"
    doc = read_json(path, f"run `cli.py attfind --out {attfind_out}` first", "a JSON file")
    missing = [k for k in ("attributes", "weights", "dlatents", "style_min", "style_max", "shift_size") if k not in doc]
    if missing:
        raise AttFindInputError(f"{path}: not an attfind.json of cli.py attfind (no {', '.join(missing)})")
    if len(doc["attributes"]) < 2:
        raise AttFindInputError(f"{path}: {len(doc['attributes'])} ranked attribute(s); a study compares at least 2")
    return doc


def study_setting(doc: dict, weights: Path | None, dlatents_path: Path | None, options: StudyOptions):
    """``(Setting, names)``: the AttFind run's release opened as AttFind opens it
    (``attfind.release.open_release``), with the run's own style ranges and its base logits."""
    from attfind.release import open_release
    from attfind.setting import Setting
    from stylex_port.analyses.fliprate import backend_logits

    weights = Path(weights or doc["weights"])
    dlatents_path = Path(dlatents_path or doc["dlatents"])
    rel = open_release(weights, dlatents_path, max_images=options.max_images, batch_size=options.batch_size,
                       device=options.device)
    backend, dlatents, names = rel.backend, rel.dlatents, rel.names
    lo, hi = np.asarray(doc["style_min"], np.float32), np.asarray(doc["style_max"], np.float32)
    if lo.shape != (backend.num_styles,):
        raise AttFindInputError(f"{weights}: the generator has {backend.num_styles} StyleSpace coordinates, the "
                                f"attfind.json's style ranges {lo.shape[0]}; pass the weights that run used")
    setting = Setting(backend, dlatents, backend.styles(dlatents), lo, hi, float(doc["shift_size"]))
    setting.base = backend_logits(backend, dlatents)
    return setting, names


def towards_other_class(labels: np.ndarray, d: int) -> np.ndarray:
    """Per image, the direction of attribute ``(d, j)`` that pushes it to its other class (``d``
    moves class 1 towards class 0; an image of class 0 takes ``1 - d``)."""
    return np.where(labels == 1, d, 1 - d)


def attribute_gains(setting, labels: np.ndarray, d: int, j: int) -> np.ndarray:
    """``[N]``: how much changing coordinate ``j`` raises each image's probability of its other class."""
    from attfind.pictures import shift_deltas

    dirs = towards_other_class(labels, d)
    rows = [(n, int(dirs[n]), 0) for n in range(len(labels))]
    deltas = shift_deltas(setting.backend.space, setting.styles, setting.style_min, setting.style_max, rows, j,
                     setting.shift_size)
    _, logits = setting.backend.edited_outputs(setting.dlatents, deltas)
    target = 1 - labels
    idx = np.arange(len(labels))
    return sel.softmax(logits)[idx, target] - sel.softmax(setting.base)[idx, target]


def pick_images(gains: np.ndarray, labels: np.ndarray, count: int, exclude: set = frozenset()) -> list[int]:
    """``count`` images not in ``exclude``, the largest gains first, taken from each class in turn
    (the other class fills in when one runs out)."""
    by_class = [[int(n) for n in np.argsort(-gains, kind="stable") if labels[n] == c and int(n) not in exclude]
                for c in (1, 0)]
    out = []
    while len(out) < count and any(by_class):
        for queue in by_class:
            if queue and len(out) < count:
                out.append(queue.pop(0))
    return out


def choose_images(gains: list[np.ndarray], labels: np.ndarray, examples: int, queries: int):
    """Per attribute, its panel's example images and its query images. A query image is no
    attribute's example, so a question's new animation is on an image neither panel shows."""
    shown = [pick_images(g, labels, examples) for g in gains]
    used = {n for ex in shown for n in ex}
    asked = [pick_images(g, labels, queries, exclude=used) for g in gains]
    if any(len(q) < queries for q in asked):
        raise AttFindInputError(f"{len(labels)} images: too few for {examples} examples per attribute and "
                                f"{queries} queries on images no panel shows; lower --examples or --queries")
    return shown, asked


def media_names(count: int, seed: int) -> list[str]:
    """Seeded file names that say nothing about the attribute or the image (the page's sources
    must not give the answer away)."""
    rng = np.random.default_rng([seed, 2])
    names = []
    while len(names) < count:
        name = f"{int(rng.integers(0, 2 ** 48)):012x}.gif"
        if name not in names:
            names.append(name)
    return names


def draw_questions(num_attributes: int, queries: int, rng) -> tuple[list[dict], list[dict]]:
    """The classification and verbal questions in their seeded order, without media paths:
    ``attribute`` (the query's, an index into the top attributes), ``other``, ``correct`` side,
    ``query`` (which of the attribute's query images)."""
    classification = []
    for a in range(num_attributes):
        others = [b for b in range(num_attributes) if b != a]
        for q in range(queries):
            classification.append({"attribute": a, "other": others[int(rng.integers(len(others)))],
                                   "correct": SIDES[int(rng.integers(2))], "query": q})
    classification = [classification[i] for i in rng.permutation(len(classification))]
    verbal = [{"attribute": int(a)} for a in rng.permutation(num_attributes)]
    return classification, verbal


def build_study(attfind_out: Path, out_dir: Path, options: StudyOptions = StudyOptions(),
                weights: Path | None = None, dlatents_path: Path | None = None,
                bar: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """Writes ``out_dir/study/index.html`` with its ``media/`` and ``out_dir/key.json``; returns the key."""
    from attfind.pictures import TILE, save_gif, shift_frames, to_pil
    from porting.atomic import atomic_path, write_json

    if options.attributes < 2 or options.examples < 1 or options.queries < 1:
        raise AttFindInputError("--attributes must be at least 2, --examples and --queries at least 1")
    doc = read_attfind(attfind_out)
    setting, names = study_setting(doc, weights, dlatents_path, options)
    labels = sel.split_by_class(setting.base)
    top = [(int(a["direction"]), int(a["coordinate"])) for a in doc["attributes"][:options.attributes]]
    rng = np.random.default_rng(options.seed)
    classification, verbal = draw_questions(len(top), options.queries, rng)
    gains = [attribute_gains(setting, labels, d, j) for d, j in top]
    shown, asked = choose_images(gains, labels, options.examples, options.queries)

    study, media = Path(out_dir) / "study", Path(out_dir) / "study" / "media"
    if media.exists():
        shutil.rmtree(media)                       # no animation of an earlier study stays beside this one
    media.mkdir(parents=True)
    size = max(TILE, int(setting.backend.generator.config["resolution"]))
    file_names = iter(media_names(len(top) * (options.examples + options.queries), options.seed))
    progress = bar(len(top) * (options.examples + options.queries), "study animations") if bar else None
    attributes = []
    for a, (d, j) in enumerate(top):
        images, dirs, files = shown[a] + asked[a], towards_other_class(labels, d), []
        for n in images:
            _, frames, _ = shift_frames(setting, n, int(dirs[n]), j, options.frames)
            files.append(save_gif([to_pil(f, size) for f in frames], media / next(file_names)).name)
            if progress:
                progress.update(1)
        attributes.append({"rank": a + 1, "direction": d, "coordinate": j, "images": images,
                           "image_names": [names[n] for n in images], "classes": [int(labels[n]) for n in images],
                           "gains": [float(gains[a][n]) for n in images],
                           "examples": files[:options.examples], "queries": files[options.examples:]})
    if progress:
        progress.close()

    page, key = page_and_key(attributes, classification, verbal)
    key.update({"format": STUDY_FORMAT, "attfind_out": str(attfind_out), "seed": options.seed,
                "options": {k: getattr(options, k) for k in ("attributes", "examples", "queries", "frames")},
                "attributes": attributes})
    with atomic_path(study / "index.html") as tmp:
        tmp.write_text(render_page(page))
    write_json(Path(out_dir) / "key.json", key)
    log(f"user study: {len(classification)} classification and {len(verbal)} description questions on "
        f"{len(top)} attributes, {sum(len(a['images']) for a in attributes)} animations")
    return key


def page_and_key(attributes: list[dict], classification: list[dict], verbal: list[dict]) -> tuple[dict, dict]:
    """What the page shows (media paths only) and the answer key, with the question ids in page order."""
    def examples(a):
        return [f"media/{f}" for f in attributes[a]["examples"]]

    questions, key_rows = [], []
    for i, q in enumerate(classification, 1):
        qid = f"c{i:02d}"
        left, right = (q["attribute"], q["other"]) if q["correct"] == "left" else (q["other"], q["attribute"])
        questions.append({"id": qid, "kind": "classification", "left": examples(left), "right": examples(right),
                          "query": f"media/{attributes[q['attribute']]['queries'][q['query']]}"})
        key_rows.append({"id": qid, "kind": "classification", "attribute": attributes[q["attribute"]]["rank"],
                         "other": attributes[q["other"]]["rank"], "correct": q["correct"]})
    for i, q in enumerate(verbal, 1):
        qid = f"v{i:02d}"
        questions.append({"id": qid, "kind": "verbal", "examples": examples(q["attribute"])})
        key_rows.append({"id": qid, "kind": "verbal", "attribute": attributes[q["attribute"]]["rank"]})
    page = {"questions": questions, "csv_header": list(CSV_HEADER)}
    page["study_id"] = hashlib.sha256(json.dumps(page, sort_keys=True).encode()).hexdigest()[:12]
    return page, {"study_id": page["study_id"], "questions": key_rows}


def render_page(page: dict) -> str:
    """The page template with the study's data embedded (a page opened from a file may not read
    a JSON file beside it)."""
    data = json.dumps(page).replace("</", "<\\/")
    return (PAGE_TEMPLATE.read_text().replace("__STUDY_DATA__", data)
            .replace("__STUDY_ID__", html.escape(page["study_id"])))
