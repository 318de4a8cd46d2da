"""Checkpoint -> safetensors: detect the kind, infer the config, map, check, write atomically."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import porting
from porting import kinds, mapping
from porting.atomic import atomic_path
from porting.errors import PortError
from porting.readers import Checkpoint, open_checkpoint


@dataclass
class Conversion:
    kind: str
    config: dict
    state: dict[str, np.ndarray]
    plan: mapping.MappingPlan
    header: dict = field(default_factory=dict)


def release_stem(path: Path) -> str:
    """'mobilenet' for mobilenet.savedmodel.zip, 'ckpt' for ckpt.index, etc."""
    name = Path(path).name
    for suffix in (".zip", ".index", ".h5", ".hdf5", ".keras", ".savedmodel"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "model"


def convert_checkpoint(ck: Checkpoint, model: str | None = None, allow_nonfinite: bool = False) -> Conversion:
    import models_pt

    where = str(ck.source)
    kind = kinds.detect(ck.names, where, forced=model)
    config = kind.infer_config(ck.shapes)
    module = models_pt.model_class(kind.name)(**config)
    own = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    pt_shapes = {k: tuple(v.shape) for k, v in own.items()}
    mplan = mapping.plan(kind.rules(config), pt_shapes, ck.names, where=where)
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
                 allow_nonfinite: bool = False) -> tuple[Path, Conversion]:
    """Convert one checkpoint file or folder; returns the weights path and what was done."""
    with open_checkpoint(src) as ck:
        conv = convert_checkpoint(ck, model=model, allow_nonfinite=allow_nonfinite)
    out = Path(out) if out else Path("weights") / f"{release_stem(Path(src))}.safetensors"
    if out.suffix != ".safetensors":
        raise PortError(f"{out}: output must be a .safetensors file")
    check_loads(conv)
    write_safetensors(out, conv.state, conv.header)
    return out, conv


def check_loads(conv: Conversion) -> None:
    """The converted state must load strictly into a fresh module before anything is written."""
    import torch

    import models_pt

    module = models_pt.model_class(conv.kind)(**conv.config)
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in conv.state.items()},
                           strict=True)
