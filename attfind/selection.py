"""The framework-free AttFind core: everything after the effects are computed. NumPy only.

Layer: the AttFind core; imports nothing of the project (a test walks the imports). What it
needs of StyleSpace (the shift of a coordinate) comes in as an argument, the generator's
``models_pt.stylespace.StyleSpace``.

A TensorFlow backend and a PyTorch backend compute the heavy part (step 2 of
``docs/attfind.md``: the classifier's change for every StyleSpace coordinate moved to its min or
max); both hand their arrays to these functions, so the selection logic exists once and any
difference between the two ports is a difference in the effects, never in the bookkeeping.

Shapes and names used throughout:

- ``N`` images, ``S`` StyleSpace coordinates (5760 at 256 px), ``C`` classes (2 in the release).
- ``effects``: ``[N, 2, S, C]`` float, ``effects[n, d, j, c]`` = change of class ``c``'s logit of
  image ``n`` when coordinate ``j`` moves down to its min (``d = 0``) or up to its max (``d = 1``).
  (The tfrecord stores ``[S, 2, C]`` per image; ``attfind.tfrecord.read_examples`` transposes.)
- ``base_logits``: ``[N, C]``, the classifier's logits on the unmodified reconstructions (the
  notebook calls them ``base_prob`` but does not apply softmax).
- A pick or attribute is ``(d, j)``: direction and coordinate. Flattened, ``k = d * S + j``.

Determinism rules (the same in both backends, because they live here):

- Means are taken in float64 whatever the input dtype.
- Greedy ties (equal mean gain): the smallest flat index ``k`` wins (``np.argmax``), i.e.
  direction 0 before 1, then the lower coordinate.
- Ranking ties (equal score): the order in which step 6 lists the candidates is kept (a stable
  sort): first the flipped class-1 picks in their pick order, then the class-0 picks in theirs.
- Class of an image: ``argmax`` of its logits; an exact tie goes to class 0.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Protocol

import numpy as np

# The notebook's defaults.
UNSTABLE_THRESHOLD = 2.0
UNSTABLE_MAX_COUNT = 750
NUM_INDICES = 8
MAX_IMAGE_EFFECT = 5 * 0.2
SUFFICIENCY_K = 10

RESULT_FORMAT = "attfind-result/2"   # /2: params.pick_filter (was disc_filter)
READ_FORMATS = ("attfind-result/1", RESULT_FORMAT)

OnArgmax = Callable[[np.ndarray, np.ndarray, int], None]
"""``on_argmax(active, mean, k)``: a greedy decision, for a caller that audits them (``greedy_run``)."""

Reject = Callable[[int, int], bool]
"""``reject(d, j) -> True`` rejects the would-be greedy pick ``(d, j)`` (e.g. the discriminator's
output moves too much); ``False`` accepts it."""


class PickFilter(Protocol):
    """What ``attfind`` asks about picks: ``bind`` gives the ``Reject`` of one greedy run (its
    target class and the images it covers). ``discriminator_filter.DiscriminatorFilter`` is one."""

    def bind(self, effects, target_class: int, image_mask) -> Reject: ...


@dataclass
class FixedRejection:
    """A pick filter that asks the same ``reject(d, j)`` in both greedy runs."""
    reject: Reject

    def bind(self, effects, target_class: int, image_mask) -> Reject:
        return self.reject


class Attribute(NamedTuple):
    """One ranked attribute: moving ``coordinate`` in ``direction`` (0 = to its min, 1 = to its
    max) moves class 1 towards class 0; ``score`` as in step 6. Unpacks as ``d, j, score``."""
    direction: int
    coordinate: int
    score: float


# --------------------------------------------------------------------------- checks


def _effects(effects, name: str = "effects") -> np.ndarray:
    a = np.asarray(effects)
    if a.ndim != 4 or a.shape[1] != 2:
        raise ValueError(f"{name}: expected shape [N, 2, S, C], got {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected a float array, got {a.dtype}")
    bad = ~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: non-finite values (NaN or inf) for images {np.flatnonzero(bad)[:10].tolist()}"
                         f"{' ...' if bad.sum() > 10 else ''}; the backend that computed them is broken")
    return a


def _pairs(items) -> list[tuple[int, int]]:
    """(d, j), (d, j, score), Attribute or {'direction', 'coordinate'} -> [(d, j)] as ints."""
    out = []
    for it in items:
        if isinstance(it, Mapping):
            d, j = it["direction"], it["coordinate"]
        else:
            d, j = it[0], it[1]
        d, j = int(d), int(j)
        if d not in (0, 1) or j < 0:
            raise ValueError(f"not a (direction, coordinate) pair: {it!r}")
        out.append((d, j))
    return out


def _score_of(item) -> float:
    if isinstance(item, Mapping):
        return float(item["score"])
    if isinstance(item, Attribute):
        return float(item.score)
    return float(item[2])


# --------------------------------------------------------------------------- steps 1-4


def style_ranges(styles) -> tuple[np.ndarray, np.ndarray]:
    """Step 1. ``styles``: ``[N, S]`` StyleSpace vectors, or an iterable of ``[n_i, S]`` batches
    (so a backend need not hold all of them). Returns ``(style_min [S], style_max [S])``, the
    per-coordinate minimum and maximum over all images, in the input dtype."""
    batches = [styles] if isinstance(styles, np.ndarray) else styles
    lo = hi = None
    for b in batches:
        b = np.asarray(b)
        if b.ndim != 2:
            raise ValueError(f"styles: expected [N, S] batches, got shape {list(b.shape)}")
        if b.shape[0] == 0:
            continue
        if lo is not None and b.shape[1] != lo.shape[0]:
            raise ValueError(f"styles: batches disagree on S: {lo.shape[0]} vs {b.shape[1]}")
        bmin, bmax = b.min(axis=0), b.max(axis=0)
        lo = bmin if lo is None else np.minimum(lo, bmin)
        hi = bmax if hi is None else np.maximum(hi, bmax)
    if lo is None:
        raise ValueError("styles: no images")
    return lo, hi


def softmax(x: np.ndarray) -> np.ndarray:
    """Class probabilities of logits ``[..., C]`` (the classifier returns logits)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def filter_unstable(effects, threshold: float = UNSTABLE_THRESHOLD,
                    max_count: int = UNSTABLE_MAX_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """Step 3. An image with more than ``max_count`` entries of ``|effect| > threshold`` (strictly,
    over all of its ``2 * S * C`` entries) is unstable: all its effects are set to 0.

    Returns ``(filtered copy [N, 2, S, C], unstable [N] bool)``; the input is not modified.
    Non-finite effects are an error, not an unstable image (they mean a broken backend)."""
    e = _effects(effects)
    counts = (np.abs(e) > threshold).reshape(e.shape[0], -1).sum(axis=1)
    unstable = counts > max_count
    out = e.copy()
    out[unstable] = 0
    return out, unstable


def split_by_class(base_logits) -> np.ndarray:
    """Step 4. ``base_logits [N, C]`` -> labels ``[N]`` int (argmax; an exact tie goes to the
    lower class). Softmax does not change the argmax, so probabilities work as well."""
    b = np.asarray(base_logits)
    if b.ndim != 2:
        raise ValueError(f"base_logits: expected [N, C], got shape {list(b.shape)}")
    return np.argmax(b, axis=1)


# --------------------------------------------------------------------------- step 5


@dataclass
class GreedyRun:
    """What one greedy selection did, step by step (for reports and parity checks).

    ``picks[i]`` was chosen with mean gain ``gains[i]``; the best other candidate at that moment
    was ``runner_ups[i]`` (a pick, or None) with mean gain ``runner_up_gains[i]``. ``rejected``:
    candidates the discriminator filter refused, in the order they were tried. ``stop``: why it
    ended: ``"complete"`` (``num_indices`` picks), ``"no_image_left"`` (every image's coverage
    reached ``max_image_effect``), ``"no_gain"`` (no remaining candidate raises the target
    class on any remaining image), ``"no_images"`` (the image mask was empty) or
    ``"exhausted"`` (every candidate was picked or rejected)."""
    target_class: int
    num_images: int
    picks: list[tuple[int, int]] = field(default_factory=list)
    gains: list[float] = field(default_factory=list)
    runner_ups: list[tuple[int, int] | None] = field(default_factory=list)
    runner_up_gains: list[float] = field(default_factory=list)
    rejected: list[tuple[int, int]] = field(default_factory=list)
    stop: str = "complete"

    def near_ties(self, tol: float) -> list[int]:
        """Steps whose pick beat the runner-up by less than ``tol`` in mean gain: the places
        where two backends with slightly different effects could choose differently."""
        return [i for i, (g, r) in enumerate(zip(self.gains, self.runner_up_gains)) if g - r < tol]

    def to_dict(self) -> dict:
        return {"target_class": self.target_class, "num_images": self.num_images,
                "picks": [list(p) for p in self.picks], "gains": self.gains,
                "runner_ups": [None if r is None else list(r) for r in self.runner_ups],
                "runner_up_gains": self.runner_up_gains,
                "rejected": [list(p) for p in self.rejected], "stop": self.stop}

    @classmethod
    def from_dict(cls, d: Mapping) -> "GreedyRun":
        return cls(target_class=int(d["target_class"]), num_images=int(d["num_images"]),
                   picks=[tuple(p) for p in d["picks"]], gains=[float(g) for g in d["gains"]],
                   runner_ups=[None if r is None else tuple(r) for r in d["runner_ups"]],
                   runner_up_gains=[float(g) for g in d["runner_up_gains"]],
                   rejected=[tuple(p) for p in d["rejected"]], stop=str(d["stop"]))


def greedy_run(effects, image_mask, target_class: int, num_indices: int = NUM_INDICES,
               max_image_effect: float = MAX_IMAGE_EFFECT,
               reject: Reject | None = None, on_argmax: OnArgmax | None = None) -> GreedyRun:
    """Step 5 with its trace; ``greedy_select`` returns only the picks. See there.

    ``on_argmax(active, mean, k)``, if given, sees every decision taken from the mean gains, before
    it acts: ``active [M]`` the images still counted (of those ``image_mask`` selects), ``mean
    [2S]`` their mean gains (``-inf``: no longer a candidate; read only) and ``k`` the winner, which
    is then picked, asked about (``reject``) or, with a mean gain of 0, ends the run
    (``attfind.certify`` checks with it that no decision is within rounding of another)."""
    e = _effects(effects)
    n_img, _, n_sty, n_cls = e.shape
    mask = np.asarray(image_mask, dtype=bool)
    if mask.shape != (n_img,):
        raise ValueError(f"image_mask: expected shape [{n_img}], got {list(mask.shape)}")
    if not 0 <= int(target_class) < n_cls:
        raise ValueError(f"target_class {target_class} is not one of the {n_cls} classes")
    run = GreedyRun(target_class=int(target_class), num_images=int(mask.sum()))
    if num_indices <= 0:
        return run
    if not mask.any():
        run.stop = "no_images"
        return run
    # gain[m, k] = max(0, effect[n_m, d, j, c]) with k = d * S + j
    gain = np.maximum(e[mask][:, :, :, target_class].reshape(run.num_images, 2 * n_sty), 0).astype(np.float64)
    covered = np.zeros(run.num_images)
    available = np.ones(2 * n_sty, dtype=bool)  # the notebook zeroes a used column instead
    while len(run.picks) < num_indices:
        active = covered < max_image_effect
        if not active.any():
            # The notebook would average over no images (NaN everywhere) and take argmax of
            # NaNs, i.e. a meaningless pick (0, 0). We stop and return fewer picks.
            run.stop = "no_image_left"
            break
        mean = gain[active].mean(axis=0)
        mean[~available] = -np.inf
        while True:
            k = int(np.argmax(mean))  # first maximum: d = 0 before d = 1, then the lower j
            if on_argmax is not None and mean[k] > -np.inf:
                on_argmax(active, mean, k)
            if mean[k] == -np.inf:
                run.stop = "exhausted"
                break
            if mean[k] <= 0:
                # Nothing left raises the target class on any remaining image; the notebook
                # would pick (0, 0) or repeat a used column. We stop instead.
                run.stop = "no_gain"
                break
            d, j = divmod(k, n_sty)
            if reject is not None and reject(d, j):
                run.rejected.append((d, j))
                available[k] = False
                mean[k] = -np.inf
                continue
            best = float(mean[k])
            mean[k] = -np.inf
            r = int(np.argmax(mean))
            has_runner_up = mean[r] > -np.inf
            run.runner_ups.append(divmod(r, n_sty) if has_runner_up else None)
            run.runner_up_gains.append(float(mean[r]) if has_runner_up else 0.0)
            run.picks.append((d, j))
            run.gains.append(best)
            covered += gain[:, k]
            available[k] = False
            break
        if run.stop != "complete":
            break
    return run


def greedy_select(effects, image_mask, target_class: int, num_indices: int = NUM_INDICES,
                  max_image_effect: float = MAX_IMAGE_EFFECT,
                  reject: Reject | None = None) -> list[tuple[int, int]]:
    """Step 5: greedy selection of ``(d, j)`` picks that raise class ``target_class``.

    ``effects [N, 2, S, C]``; ``image_mask [N]`` bool selects the images to cover. AttFind runs
    it for target class ``c`` over the images of the *other* class (``labels != c``): it looks
    for the coordinates that push those images towards ``c``.

    ``gain[n, k] = max(0, effects[n, d, j, target_class])``, ``covered[n] = 0``. Each round,
    over the images with ``covered < max_image_effect`` (an image whose coverage reached the
    bound stops counting), take the ``k`` of largest mean gain (ties: the lowest ``k``), add
    ``gain[:, k]`` to ``covered``, and never consider ``k`` again.

    Degenerate cases (decided here; the notebook would argmax over NaNs or zeros):

    - no image left below the bound, or an empty ``image_mask``: stop, return fewer picks;
    - best remaining mean gain is 0 (no candidate helps any remaining image): stop, fewer picks.

    ``reject(d, j) -> bool``: if given, it is asked about each would-be pick in order of
    mean gain; ``True`` rejects the candidate for good (it is skipped, the next best is asked,
    coverage is unchanged). It is only called on candidates that would otherwise be picked.

    Returns at most ``num_indices`` distinct ``(d, j)`` pairs in pick order.
    """
    return greedy_run(effects, image_mask, target_class, num_indices, max_image_effect, reject).picks


# --------------------------------------------------------------------------- step 6


def attribute_score(effects, d: int, j: int) -> float:
    """Step 6's score of ``(d, j)``: ``mean_n effects[n, d, j, 0] + mean_n effects[n, 1-d, j, 1]``
    over all images (float64): moving ``j`` in direction ``d`` raises class 0, the other way
    raises class 1."""
    e = np.asarray(effects)
    return float(np.mean(e[:, d, j, 0], dtype=np.float64) + np.mean(e[:, 1 - d, j, 1], dtype=np.float64))


def combine_classes(picks_for_class0, picks_for_class1, effects) -> list[Attribute]:
    """Step 6: one ranking of attributes that move class 1 to class 0.

    ``picks_for_class0``: greedy picks with target class 0 (found over the class-1 images);
    ``picks_for_class1``: target class 1 (over the class-0 images). Candidates: the class-1
    picks whose coordinate ``j`` is not among the class-0 picks' coordinates, with direction
    flipped to ``1 - d``, then all class-0 picks, as they are. Each is scored with
    ``attribute_score`` on ``effects [N, 2, S, 2]`` (pass the unstable-filtered effects, as the
    notebook does), and the list is sorted by score, highest first, stably: equal scores keep
    the candidate order above. Returns ``[Attribute(d, j, score)]`` (tuples ``(d, j, score)``).
    """
    e = _effects(effects)
    if e.shape[3] != 2:
        raise ValueError(f"effects: combining classes needs 2 classes, got {e.shape[3]}")
    p0, p1 = _pairs(picks_for_class0), _pairs(picks_for_class1)
    coords0 = {j for _, j in p0}
    candidates = [(1 - d, j) for d, j in p1 if j not in coords0] + p0
    scored = [Attribute(d, j, attribute_score(e, d, j)) for d, j in candidates]
    return sorted(scored, key=lambda a: a.score, reverse=True)  # sorted() is stable, also reversed


@dataclass
class AttFindResult:
    """What ``attfind`` found, with what is needed to report, compare and serialise it.

    ``attributes``: the ranking (``Attribute(direction, coordinate, score)``, best first),
    moving class 1 towards class 0 in ``direction`` (and class 0 towards class 1 in
    ``1 - direction``). ``origins[i]``: the target class of the greedy run that found
    ``attributes[i]`` (1: a flipped class-1 pick). ``picks``: ``{target class: [(d, j)]}``.
    ``runs``: the greedy traces. ``labels [N]``, ``unstable [N]``: steps 4 and 3."""
    attributes: list[Attribute]
    origins: list[int]
    picks: dict[int, list[tuple[int, int]]]
    runs: dict[int, GreedyRun]
    labels: np.ndarray
    unstable: np.ndarray
    num_styles: int
    params: dict[str, Any]

    @property
    def ranking(self) -> list[tuple[int, int]]:
        """The notebook's printed output: ``[(direction, coordinate)]``, best first."""
        return [(a.direction, a.coordinate) for a in self.attributes]

    def near_ties(self, tol: float) -> list[tuple[Attribute, Attribute]]:
        return near_ties(self.attributes, tol)

    def to_dict(self) -> dict:
        return {
            "format": RESULT_FORMAT,
            "num_images": int(len(self.labels)),
            "num_styles": int(self.num_styles),
            "params": dict(self.params),
            "attributes": [{"direction": int(a.direction), "coordinate": int(a.coordinate),
                            "score": float(a.score), "origin": int(o)}
                           for a, o in zip(self.attributes, self.origins)],
            "picks": {str(c): [list(p) for p in ps] for c, ps in self.picks.items()},
            "runs": {str(c): r.to_dict() for c, r in self.runs.items()},
            "labels": [int(x) for x in self.labels],
            "unstable": [bool(x) for x in self.unstable],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text; floats are written with ``repr``, so ``from_json`` gives the same scores."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping) -> "AttFindResult":
        if d.get("format") not in READ_FORMATS:
            raise ValueError(f"not an AttFind result (format {d.get('format')!r}, expected {RESULT_FORMAT!r})")
        return cls(
            attributes=[Attribute(int(a["direction"]), int(a["coordinate"]), float(a["score"]))
                        for a in d["attributes"]],
            origins=[int(a["origin"]) for a in d["attributes"]],
            picks={int(c): [tuple(p) for p in ps] for c, ps in d["picks"].items()},
            runs={int(c): GreedyRun.from_dict(r) for c, r in d["runs"].items()},
            labels=np.asarray(d["labels"], dtype=np.int64),
            unstable=np.asarray(d["unstable"], dtype=bool),
            num_styles=int(d["num_styles"]),
            params=dict(d["params"]),
        )

    @classmethod
    def from_json(cls, text: str) -> "AttFindResult":
        return cls.from_dict(json.loads(text))


def attfind(effects, base_logits, num_indices: int = NUM_INDICES,
            max_image_effect: float = MAX_IMAGE_EFFECT,
            unstable_threshold: float = UNSTABLE_THRESHOLD,
            unstable_max_count: int = UNSTABLE_MAX_COUNT,
            pick_filter: PickFilter | None = None,
            on_argmax: Callable[[int, np.ndarray, np.ndarray, int], None] | None = None) -> AttFindResult:
    """Steps 3-6 on ``effects [N, 2, S, 2]`` and ``base_logits [N, 2]``.

    3. unstable images get zero effects (they stay in their class, contributing no gain);
    4. labels = argmax of ``base_logits``;
    5. ``picks[0] = greedy_select(target_class=0)`` over the images labelled 1 and
       ``picks[1] = greedy_select(target_class=1)`` over the images labelled 0, each with
       ``num_indices``, ``max_image_effect`` and, with a ``pick_filter`` (the discriminator
       filter, or ``FixedRejection``), its ``Reject`` bound to that run's class and images;
    6. ``combine_classes(picks[0], picks[1], filtered effects)``.

    ``on_argmax(target_class, active, mean, k)``: each greedy decision (``greedy_run``'s hook).
    """
    e = _effects(effects)
    logits = np.asarray(base_logits)
    if e.shape[3] != 2:
        raise ValueError(f"effects: AttFind's class combination needs 2 classes, got {e.shape[3]}")
    if logits.shape != (e.shape[0], e.shape[3]):
        raise ValueError(f"base_logits: expected shape {[e.shape[0], e.shape[3]]}, got {list(logits.shape)}")
    filtered, unstable = filter_unstable(e, unstable_threshold, unstable_max_count)
    labels = split_by_class(logits)

    runs = {c: greedy_run(filtered, labels != c, c, num_indices, max_image_effect,
                          None if pick_filter is None else pick_filter.bind(filtered, c, labels != c),
                          None if on_argmax is None else functools.partial(on_argmax, c))
            for c in (0, 1)}
    picks = {c: list(r.picks) for c, r in runs.items()}
    attributes = combine_classes(picks[0], picks[1], filtered)
    set0 = set(picks[0])
    origins = [0 if (a.direction, a.coordinate) in set0 else 1 for a in attributes]
    params = {"num_indices": int(num_indices), "max_image_effect": float(max_image_effect),
              "unstable_threshold": float(unstable_threshold), "unstable_max_count": int(unstable_max_count),
              "pick_filter": pick_filter is not None}
    return AttFindResult(attributes=attributes, origins=origins, picks=picks, runs=runs, labels=labels,
                         unstable=unstable, num_styles=int(e.shape[2]), params=params)


# --------------------------------------------------------------------------- variants and measures


def independent_ranking(effects_of_one_image, target_class: int, k: int,
                        unique_coordinates: bool = True,
                        positive_only: bool = False) -> list[tuple[int, int, float]]:
    """The image-specific variant: rank ``(d, j)`` by this image's own effect towards
    ``target_class``, ``effects_of_one_image[d, j, target_class]`` (shape ``[2, S, C]``),
    highest first; ties: the lower flat index ``d * S + j`` first.

    ``unique_coordinates``: each coordinate appears at most once, in its better direction (both
    directions of one coordinate cannot be applied together). ``positive_only``: leave out
    candidates whose effect is not above 0. Returns up to ``k`` ``(d, j, effect)``."""
    e = np.asarray(effects_of_one_image)
    if e.ndim != 3 or e.shape[0] != 2:
        raise ValueError(f"effects_of_one_image: expected [2, S, C], got {list(e.shape)}")
    if not 0 <= int(target_class) < e.shape[2]:
        raise ValueError(f"target_class {target_class} is not one of the {e.shape[2]} classes")
    n_sty = e.shape[1]
    vals = e[:, :, target_class].reshape(-1).astype(np.float64)
    if not np.isfinite(vals).all():
        raise ValueError("effects_of_one_image: non-finite values")
    out: list[tuple[int, int, float]] = []
    seen: set[int] = set()
    for kk in np.argsort(-vals, kind="stable"):
        if len(out) >= k:
            break
        v = float(vals[kk])
        if positive_only and v <= 0:
            break
        d, j = divmod(int(kk), n_sty)
        if unique_coordinates:
            if j in seen:
                continue
            seen.add(j)
        out.append((d, j, v))
    return out


def near_ties(attributes, tol: float) -> list[tuple[Any, Any]]:
    """Adjacent pairs ``(attributes[i], attributes[i + 1])`` of a ranked list whose scores differ
    by less than ``tol``: where a ranking's order is decided by noise, so a parity test reports
    them instead of failing. Items: ``Attribute``, ``(d, j, score)`` or dicts with ``score``."""
    items = list(attributes)
    out = []
    for a, b in zip(items, items[1:]):
        sa, sb = _score_of(a), _score_of(b)
        if math.isfinite(sa) and math.isfinite(sb) and abs(sa - sb) < tol:
            out.append((a, b))
    return out
