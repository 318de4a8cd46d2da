"""Model kinds: everything the project knows about one kind of released model, in one record.

A ``ModelKind`` (one per file in this package) holds the kind's variable-name signature (how a
checkpoint is recognised), its config inference, its mapping table, the PyTorch class and the
TF reference model that rebuild it (both *by name*: ``models_pt`` stays free of this package,
and only the cross-checks, which may see TF, resolve the TF name), its release stem (from
``release_facts``), its verify spec (inputs, their checks, tolerances), its ONNX spec (input
and output names, the feed) and the TF variables a conversion may leave unused. The release
stems, the CLI's choices and the ONNX branches are all derived from ``KINDS``, which collects
every record of this package: adding a model kind is one file here plus its modules (and, if the
release ships it, its stem in ``release_facts.RELEASE_STEMS``).

Layer: part of ``porting``; imports ``porting.mapping``, ``release_facts`` and (to build the
module) ``models_pt``, nothing else of the project.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from porting.mapping import MappingError, NameIndex, Rule
from models_pt.release_facts import RELEASE_STEMS

# Variables no model reads: a training run's optimizer state, if a checkpoint carries it. Every
# other variable left unused by a kind's rules fails the conversion (``ModelKind.unused_ok``).
OPTIMIZER_STATE = (r"(^|/)optimizer/", r"\.OPTIMIZER_SLOT/", r"(^|/)(iter|learning_rate|decay|beta_[12])(:0)?$")


class ShapeLookup:
    """``lookup(name)`` -> the shape of a checkpoint variable, scope-tolerant, for config
    inference; a missing name raises MappingError with the nearest names."""

    def __init__(self, shapes: Mapping[str, tuple], model: str):
        self.shapes, self.model, self.index = shapes, model, NameIndex(list(shapes))

    def find(self, name: str) -> str | None:
        return self.index.find(name)

    def __call__(self, name: str) -> tuple:
        found = self.index.find(name)
        if found is None:
            near = self.index.nearest(name)
            raise MappingError(f"{self.model} variable {name!r} not found"
                               + (f"; nearest names: {', '.join(near)}" if near else ""))
        return self.shapes[found]


@dataclass(frozen=True)
class VerifySpec:
    """What ``verify`` needs to know about a kind, framework-neutral (NumPy in, NumPy out).

    ``make_inputs(config, n, size, seed[, dlatents=])`` gives inputs in the TF model's layout;
    ``check_inputs`` raises AssertionError when they are degenerate; ``nhwc``: the PyTorch module
    takes NCHW where TF takes NHWC (its 4-d activations are compared in TF's layout). The PyTorch
    side is traced with the module's own ``trace`` (forward hooks; the last entry is the output)."""

    make_inputs: Callable[..., object]
    check_inputs: Callable[[object], None]
    default_size: Callable[[dict], int] = lambda config: 256
    nhwc: bool = False
    # Models that take dlatents: (the release's dlatents.pkl or None) -> where the inputs come
    # from, in words; ``make_inputs`` then takes ``dlatents=`` that file.
    input_source: Callable[[Path | None], str] | None = None

    def inputs(self, config: dict, n: int, size: int, seed: int, dlatents: Path | None = None):
        if self.input_source is not None:
            return self.make_inputs(config, n, size, seed, dlatents=dlatents)
        return self.make_inputs(config, n, size, seed)

    def torch_args(self, inputs, dtype: str) -> list:
        """The module's (and its ``trace``'s) arguments for ``inputs``."""
        import torch

        arrays = inputs if isinstance(inputs, tuple) else (inputs,)
        if self.nhwc:
            arrays = tuple(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a for a in arrays)
        # astype keeps each array's memory order: NCHW views of NHWC data stay channels-last
        # tensors, whose convolution kernels (and so rounding) are what every figure was measured with
        return [torch.from_numpy(a.astype(dtype)) for a in arrays]

    def trace(self, module, inputs, dtype: str) -> dict[str, np.ndarray]:
        """Every traced activation of the PyTorch ``module`` on ``inputs``, in TF's layout."""
        import torch

        with torch.no_grad():
            acts = module.trace(*self.torch_args(inputs, dtype))
        out = {}
        for label, a in acts.items():
            a = a.detach().cpu().numpy()
            out[label] = a.transpose(0, 2, 3, 1) if self.nhwc and a.ndim == 4 else a
        return out


@dataclass(frozen=True)
class OnnxSpec:
    """How a kind is exported: ``net(module)`` is what is traced, ``feed(module, x)`` the file's
    inputs (name -> array) for verify inputs ``x``, ``output`` the output's name."""

    output: str
    feed: Callable[[object, object], dict]
    net: Callable[[object], object] = lambda module: module
    size_fixed: bool = False   # the spatial size is fixed at export (TF 'same' padding depends on it)


@dataclass(frozen=True)
class ModelKind:
    name: str                                   # written into the weights' header as "kind"
    signature: str                              # regex: a variable name only this kind has
    infer_config: Callable[[Mapping[str, tuple]], dict]
    rules: Callable[[dict], Sequence[Rule]]
    pt_class: str                               # "models_pt.module:Class", resolved by models_pt.load
    tf_module: str                              # models_tf module with its reference model (crosscheck only)
    verify: VerifySpec
    onnx: OnnxSpec
    unused_ok: tuple[str, ...] = field(default=OPTIMIZER_STATE)   # regexes of variables allowed unused

    @property
    def release_stem(self) -> str:
        """'mobilenet' for mobilenet.savedmodel.zip (``release_facts.RELEASE_STEMS``); a kind the
        release does not have is named by its kind."""
        return RELEASE_STEMS.get(self.name, self.name)

    def detect(self, names: Sequence[str]) -> bool:
        rx = re.compile(self.signature)
        return any(rx.search(n) for n in names)

    def module_class(self):
        """The PyTorch class, resolved (and checked) as ``models_pt.load`` resolves a header's."""
        import models_pt

        return models_pt.model_class({"module": self.pt_class, "kind": self.name}, f"porting.kinds.{self.name}")

    def unexpected_unused(self, unused: Sequence[str]) -> list[str]:
        return [n for n in unused if not any(re.search(p, n) for p in self.unused_ok)]


def _registry() -> dict[str, ModelKind]:
    """Every ``ModelKind`` defined in this package's modules: a new kind is a new file here. The
    release's kinds come first, in ``release_facts.RELEASE_STEMS``' order (conversion order)."""
    import importlib
    import pkgutil

    found: dict[str, ModelKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.update({v.name: v for v in vars(module).values() if isinstance(v, ModelKind)})
    for kind in found.values():   # names resolved by importlib: keep them inside the layers' rules
        assert kind.pt_class.startswith("models_pt.") and kind.tf_module.startswith("models_tf."), \
            f"kind {kind.name}: pt_class must name a models_pt class, tf_module a models_tf module"
    missing = [name for name in RELEASE_STEMS if name not in found]
    assert not missing, f"release_facts.RELEASE_STEMS names kinds without a record: {missing}"
    order = list(RELEASE_STEMS)
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


KINDS = _registry()
NAMES = tuple(KINDS)                              # the CLI's --model choices
STEM_TO_KIND = {stem: kind for kind, stem in RELEASE_STEMS.items()}   # the release's files


def get(name: str) -> ModelKind:
    if name not in KINDS:
        raise MappingError(f"unknown model kind {name!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[name]


def detect(names: Sequence[str], source: str, forced: str | None = None) -> ModelKind:
    """The kind whose signature variables the checkpoint holds (``forced``: the user's --model)."""
    found = [k for k in KINDS.values() if k.detect(names)]
    if forced is not None:
        kind = get(forced)
        if kind not in found:
            what = f"looks like a {found[0].name}" if found else "matches no known model kind"
            raise MappingError(f"{source}: --model {forced} was asked for, but the checkpoint {what} "
                               f"(no variable matches {kind.signature!r})")
        return kind
    if len(found) == 1:
        return found[0]
    if not found:
        sample = ", ".join(sorted(names)[:4])
        raise MappingError(f"{source}: cannot tell which model this is: no variable matches any known "
                           f"model kind ({', '.join(KINDS)}); first variables: {sample}")
    raise MappingError(f"{source}: variables of several model kinds ({', '.join(k.name for k in found)}); "
                       "pass --model to choose")
