"""Model kinds: how to recognise a checkpoint, infer its config, map it, and check it.

Each kind is one ``ModelKind`` row. Conversion needs only the first four fields (NumPy and the
mapping engine); the verification hooks import TensorFlow and ``models_tf`` lazily.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from porting.mapping import MappingError, NameIndex, Rule


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
class ModelKind:
    name: str                                   # key of models_pt.MODELS
    release_stem: str                           # "mobilenet" for mobilenet.savedmodel.zip
    signature: str                              # regex: a variable name only this kind has
    infer_config: Callable[[Mapping[str, tuple]], dict]
    rules: Callable[[dict], Sequence[Rule]]
    verifier: str                               # "module:attr" of its verification hooks

    def detect(self, names: Sequence[str]) -> bool:
        rx = re.compile(self.signature)
        return any(rx.search(n) for n in names)

    def hooks(self):
        import importlib

        module, attr = self.verifier.split(":")
        return getattr(importlib.import_module(module), attr)


def _registry() -> dict[str, ModelKind]:
    from porting.kinds import classifier, generator, resnet_d

    return {k.name: k for k in (generator.KIND, resnet_d.ENCODER, resnet_d.DISCRIMINATOR, classifier.KIND)}


KINDS = _registry()


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
