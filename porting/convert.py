"""Checkpoint -> safetensors: detect the kind, infer the config, map, check, write atomically.

``prepare`` (detect, infer, build, plan) is the one path from a checkpoint's names and shapes to
a mapping plan: ``convert``, ``cli.py inspect`` and the tests all take it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

import porting
from porting import kinds, mapping
from porting.atomic import atomic_path
from porting.errors import PortError
from porting.readers import Checkpoint, open_checkpoint


@dataclass
class Prepared:
    """What a checkpoint's names and shapes say: its kind, config, a fresh module, the plan."""

    kind: kinds.ModelKind
    config: dict
    module: object                              # a fresh models_pt module of that config
    plan: mapping.MappingPlan


def prepare(names: Sequence[str], shapes: Mapping[str, tuple], where: str, model: str | None = None,
            rules=None, allow_unused: bool = False) -> Prepared:
    """Detect the kind (``model``: forced), infer its config, build the module, plan the mapping
    (``rules``: another table, for the tests' deliberately wrong ports). A TF variable the
    plan leaves unused fails unless the kind expects it (``ModelKind.unused_ok``) or
    ``allow_unused``."""
    kind = kinds.detect(names, where, forced=model)
    config = kind.infer_config(shapes)
    module = kind.module_class()(**config)
    pt_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    mplan = mapping.plan(rules if rules is not None else kind.rules(config), pt_shapes, names, where=where)
    unexpected = kind.unexpected_unused(mplan.unused)
    if unexpected and not allow_unused:
        more = f" (and {len(unexpected) - 5} more)" if len(unexpected) > 5 else ""
        raise mapping.MappingError(
            f"{where}: {len(unexpected)} TF variable(s) of the {kind.name} map to no PyTorch tensor: "
            f"{', '.join(unexpected[:5])}{more}; a release {kind.name} has none. Is this another model's "
            "variant? --allow-unused converts anyway and lists them")
    return Prepared(kind, config, module, mplan)


@dataclass
class Conversion:
    kind: str
    config: dict
    state: dict[str, np.ndarray]
    plan: mapping.MappingPlan
    header: dict = field(default_factory=dict)

    def module(self):
        """A fresh module with the converted state loaded strictly, eval mode."""
        import torch

        module = kinds.get(self.kind).module_class()(**self.config)
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()},
                               strict=True)
        return module.eval()


def file_stem(path: Path) -> str:
    """'mobilenet' for mobilenet.savedmodel.zip, 'ckpt' for ckpt.index, etc."""
    name = Path(path).name
    for suffix in (".zip", ".index", ".h5", ".hdf5", ".keras", ".savedmodel"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "model"


def convert_checkpoint(ck: Checkpoint, model: str | None = None, allow_nonfinite: bool = False,
                       rules=None, allow_unused: bool = False) -> Conversion:
    where = str(ck.source)
    prep = prepare(ck.names, ck.shapes, where, model, rules, allow_unused)
    kind, config, mplan = prep.kind, prep.config, prep.plan
    own = {k: v.detach().cpu().numpy() for k, v in prep.module.state_dict().items()}
    pt_shapes = {k: tuple(v.shape) for k, v in own.items()}
    variables = {a.tf_name: ck.read(a.tf_name) for a in mplan.assignments if a.tf_name}
    state = mapping.apply(mplan, variables, pt_shapes, where=where, allow_nonfinite=allow_nonfinite)
    for a in mplan.assignments:  # derived buffers keep the value the module computes itself
        if a.tf_name is None:
            state[a.pt_key] = own[a.pt_key]
    for key, arr in state.items():  # keep PyTorch's dtype for integer buffers, TF's for floats
        if own[key].dtype != arr.dtype and own[key].dtype.kind != "f":
            state[key] = arr.astype(own[key].dtype)
    header = {
        "kind": kind.name,
        "module": kind.pt_class,
        "config": config,
        "source": Path(ck.source).name,
        "source_format": ck.fmt,
        "source_sha256": ck.sha256(),
        "converter_version": porting.__version__,
        "tf_variables": len(ck.names),
        "unused_tf_variables": mplan.unused,
    }
    return Conversion(kind.name, config, state, mplan, header)


def write_safetensors(path: Path, state: dict[str, np.ndarray], header: dict) -> None:
    """Write atomically: a temporary file in the same folder, then rename over ``path``."""
    import torch
    from safetensors.torch import save_file

    import models_pt

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={models_pt.METADATA_KEY: json.dumps(header)})


def convert_path(src: str | Path, out: str | Path | None = None, model: str | None = None,
                 allow_nonfinite: bool = False, allow_unused: bool = False,
                 build_keras=None, trust_graph: bool = False) -> tuple[Path, Conversion]:
    """Convert one checkpoint file or folder; returns the weights path and what was done.
    ``build_keras``, ``trust_graph``: see ``porting.readers.open_checkpoint`` (nameless
    ``.weights.h5`` files; a whole-model ``.h5`` whose config names classes outside the release's)."""
    with open_checkpoint(src, build_keras=build_keras, trust_graph=trust_graph) as ck:
        conv = convert_checkpoint(ck, model=model, allow_nonfinite=allow_nonfinite, allow_unused=allow_unused)
    out = Path(out) if out else Path("weights") / f"{file_stem(Path(src))}.safetensors"
    if out.suffix != ".safetensors":
        raise PortError(f"{out}: output must be a .safetensors file")
    conv.module()   # the converted state must load strictly into a fresh module before anything is written
    write_safetensors(out, conv.state, conv.header)
    return out, conv
