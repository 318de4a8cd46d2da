"""The mapping engine: TensorFlow variables -> a PyTorch state dict, driven by rules written as data.

A rule says, for every PyTorch state-dict key that fully matches ``target`` (a regular
expression), which TensorFlow variable feeds it (``source``) and which named layout fixes
turn the TF array into the PyTorch tensor (``transform``). The engine then checks coverage
both ways:

* every PyTorch parameter and buffer is matched by exactly one rule and filled (or the rule
  says it is ``derived``: a buffer the module computes itself, such as a FIR filter);
* every TensorFlow variable is used exactly once, or is reported as unused;
* every transformed array has exactly the PyTorch tensor's shape. We never reshape to fit:
  a layout change is a named transform, so a wrong layout of the same size cannot slip by.

TF names are matched tolerantly but never silently: a rule's source ``a/b/kernel:0`` matches a
checkpoint variable of exactly that name or, failing that, the single variable whose name ends
in ``/a/b/kernel:0`` (an extra leading model scope such as ``generator/``). A source found
under two scopes is an error, not a guess.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


class MappingError(ValueError):
    """A conversion that cannot be done as the rules say. The message names what and why."""


# --------------------------------------------------------------------------- transforms
# Each transform is one layout fix, named so that a rule table reads as a description.

def _conv_kernel(a: np.ndarray) -> np.ndarray:
    """TF conv kernel [kh, kw, in, out] -> PyTorch [out, in, kh, kw]."""
    _need_ndim(a, 4, "conv_kernel")
    return a.transpose(3, 2, 0, 1)


def _depthwise_kernel(a: np.ndarray) -> np.ndarray:
    """TF depthwise kernel [kh, kw, in, multiplier] -> PyTorch grouped [in * multiplier, 1, kh, kw]."""
    _need_ndim(a, 4, "depthwise_kernel")
    kh, kw, cin, mult = a.shape
    return a.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)


def _dense_kernel(a: np.ndarray) -> np.ndarray:
    """TF dense kernel [in, out] -> PyTorch Linear weight [out, in]."""
    _need_ndim(a, 2, "dense_kernel")
    return a.T


def _flip_hw(a: np.ndarray) -> np.ndarray:
    """Spatial flip of the last two axes (a transposed-conv kernel used as a plain conv)."""
    return a[..., ::-1, ::-1]


def _squeeze(a: np.ndarray) -> np.ndarray:
    """Drop unit axes (TF biases stored as [1, C] or [1, C, 1, 1])."""
    return np.squeeze(a)


def _plus_one(a: np.ndarray) -> np.ndarray:
    """Fold a run-time ``+ 1`` into the stored value (StyleGAN2 style-bias convention)."""
    return a + 1


def _need_ndim(a: np.ndarray, ndim: int, name: str) -> None:
    if a.ndim != ndim:
        raise MappingError(f"transform {name} expects a {ndim}-d array, got shape {list(a.shape)}")


# Transforms that shift a value: the derivative of ``x + c`` is the identity, so a gradient
# maps through a rule without them (``Rule.apply(gradient=True)``). Every other transform is a
# permutation of entries (transpose, flip, reshape, squeeze), which maps a gradient as it maps a
# value: a port whose gradients match TF's through these has the same parametrisation, and an
# elementwise optimizer (Adam) then takes the same steps on both sides.
SHIFTS = frozenset({"plus_one"})

TRANSFORMS: dict[str, Transform] = {
    "conv_kernel": _conv_kernel,
    "depthwise_kernel": _depthwise_kernel,
    "dense_kernel": _dense_kernel,
    "flip_hw": _flip_hw,
    "squeeze": _squeeze,
    "plus_one": _plus_one,
}


# --------------------------------------------------------------------------- rules

@dataclass(frozen=True)
class Rule:
    """One row of a mapping table.

    target:    regular expression, fully matched against a PyTorch state-dict key.
    source:    TF variable name; either a ``str.format`` template filled from the match's
               named groups (``"conv_dw_{k}/depthwise_kernel:0"``), or a callable taking the
               ``re.Match`` (for index arithmetic) and returning the name. ``None`` with
               ``derived=True``.
    transform: names from ``TRANSFORMS`` (or callables), applied left to right.
    derived:   the target is a buffer the PyTorch module computes itself; nothing is loaded.
    note:      why the rule is what it is (shown by ``cli.py inspect``).
    """

    target: str
    source: str | Callable[[re.Match], str] | None = None
    transform: Sequence[str | Transform] = ()
    derived: bool = False
    note: str = ""

    def source_name(self, m: re.Match) -> str:
        if callable(self.source):
            return self.source(m)
        assert self.source is not None
        return self.source.format(**m.groupdict())

    def apply(self, a: np.ndarray, gradient: bool = False) -> np.ndarray:
        """The TF value ``a`` in the PyTorch layout; ``gradient``: ``a`` is a gradient with respect
        to the TF variable, mapped without the rule's shifts (``SHIFTS``)."""
        for t in self.transform:
            if gradient and t in SHIFTS:
                continue
            fn = TRANSFORMS[t] if isinstance(t, str) else t
            a = fn(a)
        return np.array(a, order="C", copy=True)  # (ascontiguousarray would make a scalar 1-d)

    def describe_transform(self) -> str:
        names = [t if isinstance(t, str) else getattr(t, "__name__", "fn") for t in self.transform]
        return " -> ".join(names) if names else "identity"


@dataclass
class Assignment:
    pt_key: str
    tf_name: str | None  # None for derived buffers
    rule: Rule


@dataclass
class MappingPlan:
    """What a rule table does with one checkpoint: computed without touching any tensor values."""

    assignments: list[Assignment] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def tf_to_pt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in self.assignments:
            if a.tf_name is not None:
                out.setdefault(a.tf_name, []).append(a.pt_key)
        return out


def normalize_name(name: str) -> str:
    """TF variable names as users see them carry an output index (``kernel:0``)."""
    return name if re.search(r":\d+$", name) else name + ":0"


class NameIndex:
    """Finds a rule's source among checkpoint names, allowing an extra or missing leading scope."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.exact = set(self.names)

    def find(self, wanted: str) -> str | None:
        wanted = normalize_name(wanted)
        if wanted in self.exact:
            return wanted
        # Extra leading scope in the checkpoint ("generator/" + wanted).
        hits = [n for n in self.names if n.endswith("/" + wanted)]
        # Missing leading scope in the checkpoint (wanted = "scope/" + name).
        parts = wanted.split("/")
        for i in range(1, len(parts)):
            tail = "/".join(parts[i:])
            if tail in self.exact:
                hits.append(tail)
        hits = sorted(set(hits))
        if len(hits) > 1:
            raise MappingError(
                f"variable {wanted!r} is ambiguous: found under several scopes: {', '.join(hits)}"
            )
        return hits[0] if hits else None

    def nearest(self, wanted: str, n: int = 3) -> list[str]:
        return difflib.get_close_matches(normalize_name(wanted), self.names, n=n, cutoff=0.5)


def plan(rules: Sequence[Rule], pt_shapes: Mapping[str, tuple], tf_names: Sequence[str],
         *, where: str = "checkpoint") -> MappingPlan:
    """Match every PyTorch key to one rule and one TF variable; report what is left over.

    Raises MappingError naming the key, the rule and the nearest TF names on any gap.
    """
    index = NameIndex(tf_names)
    compiled = [(re.compile(r.target), r) for r in rules]
    result = MappingPlan()
    used: dict[str, str] = {}
    problems: list[str] = []
    for key in pt_shapes:
        matches = [(m, r) for rx, r in compiled if (m := rx.fullmatch(key))]
        if not matches:
            problems.append(f"PyTorch key {key!r} is matched by no rule")
            continue
        if len(matches) > 1:
            problems.append(f"PyTorch key {key!r} is matched by several rules: "
                            + ", ".join(repr(r.target) for _, r in matches))
            continue
        m, rule = matches[0]
        if rule.derived:
            result.assignments.append(Assignment(key, None, rule))
            continue
        wanted = rule.source_name(m)
        found = index.find(wanted)
        if found is None:
            near = index.nearest(wanted)
            hint = f"; nearest names: {', '.join(near)}" if near else ""
            problems.append(f"variable {normalize_name(wanted)!r} (for PyTorch {key!r}, rule "
                            f"{rule.target!r}) is not in the {where}{hint}")
            continue
        if found in used:
            problems.append(f"variable {found!r} would feed both {used[found]!r} and {key!r}")
            continue
        used[found] = key
        result.assignments.append(Assignment(key, found, rule))
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise MappingError(f"{where}: " + "; ".join(problems[:8]) + more)
    result.unused = [n for n in tf_names if n not in used]
    return result


# The inverse of each transform, given the TF variable's shape: PyTorch's layout back to TF's.
INVERSES: dict[str, Callable[[np.ndarray, tuple], np.ndarray]] = {
    "conv_kernel": lambda a, shape: a.transpose(2, 3, 1, 0),
    "depthwise_kernel": lambda a, shape: a.reshape(shape[2], shape[3], shape[0], shape[1]).transpose(2, 3, 0, 1),
    "dense_kernel": lambda a, shape: a.T,
    "flip_hw": lambda a, shape: a[..., ::-1, ::-1],
    "squeeze": lambda a, shape: a.reshape(shape),
    "plus_one": lambda a, shape: a - 1,
}


def invert(mplan: MappingPlan, state: Mapping[str, np.ndarray], tf_shapes: Mapping[str, tuple],
           *, where: str = "weights") -> dict[str, np.ndarray]:
    """PyTorch tensors back to the TF variables that fed them: each rule's transforms undone in
    reverse order (the export of a PyTorch checkpoint, e.g. a fine-tuned one, to TF).
    ``tf_shapes``: the TF variables' shapes; a rule with a transform that has no inverse fails."""
    out: dict[str, np.ndarray] = {}
    for a in mplan.assignments:
        if a.tf_name is None:
            continue
        shape = tuple(tf_shapes[a.tf_name])
        arr = np.asarray(state[a.pt_key])
        for t in reversed(list(a.rule.transform)):
            if not isinstance(t, str) or t not in INVERSES:
                raise MappingError(f"{where}: rule {a.rule.target!r} has a transform without an inverse ({t!r}); "
                                   f"cannot export {a.pt_key!r}")
            arr = INVERSES[t](arr, shape)
        if tuple(arr.shape) != shape:
            raise MappingError(f"{where}: {a.pt_key!r} -> TF {a.tf_name!r}: expected shape {list(shape)}, "
                               f"found {list(arr.shape)} after undoing {a.rule.describe_transform()}")
        out[a.tf_name] = np.array(arr, order="C", copy=True)
    return out


def apply(mplan: MappingPlan, variables: Mapping[str, np.ndarray], pt_shapes: Mapping[str, tuple],
          *, where: str = "checkpoint", allow_nonfinite: bool = False,
          gradients: bool = False) -> dict[str, np.ndarray]:
    """Fetch and transform every assigned TF array; check shape and finiteness. ``gradients``:
    ``variables`` holds gradients with respect to the TF variables (those without one, the
    non-trainable ones, are left out), mapped through each rule's linear part."""
    out: dict[str, np.ndarray] = {}
    for a in mplan.assignments:
        if a.tf_name is None or (gradients and a.tf_name not in variables):
            continue
        src = variables[a.tf_name]
        if not allow_nonfinite and src.dtype.kind == "f" and not np.all(np.isfinite(src)):
            bad = int(np.size(src) - np.count_nonzero(np.isfinite(src)))
            raise MappingError(f"{where}: variable {a.tf_name!r} holds {bad} NaN/Inf value(s); "
                               "refusing to convert (pass --allow-nonfinite to convert anyway)")
        try:
            arr = a.rule.apply(np.asarray(src), gradient=gradients)
        except MappingError as e:
            raise MappingError(f"{where}: variable {a.tf_name!r} (rule {a.rule.target!r}): {e}") from None
        want = tuple(pt_shapes[a.pt_key])
        if tuple(arr.shape) != want:
            raise MappingError(
                f"{where}: shape mismatch for variable {a.tf_name!r} -> PyTorch {a.pt_key!r} "
                f"(rule {a.rule.target!r}, transform {a.rule.describe_transform()}): expected "
                f"{list(want)} after the transform, found {list(arr.shape)} "
                f"(TF shape {list(np.shape(src))})")
        out[a.pt_key] = arr
    return out
