"""PyTorch modules of the StylEx release, and ``load`` to rebuild them from converted weights.

PyTorch only: nothing here imports TensorFlow.

    import models_pt
    clf = models_pt.load("weights/mobilenet.safetensors")      # one model, eval mode
    models = models_pt.load("weights/celeb_a_age")            # a converted release: {name: module}
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

# model kind (as written in the weights' metadata) -> "module:class"
MODELS = {
    "classifier": "models_pt.classifier:MobileNetV1",
    "generator": "models_pt.generator:Generator",
    "encoder": "models_pt.resnet_d:Encoder",
    "discriminator": "models_pt.resnet_d:Discriminator",
}

METADATA_KEY = "stylex_port"  # safetensors metadata entry holding our JSON header


class WeightsError(ValueError):
    """A weights file that cannot be turned back into a module."""


def model_class(kind: str):
    if kind not in MODELS:
        raise WeightsError(f"unknown model kind {kind!r}; known kinds: {', '.join(MODELS)}")
    module, cls = MODELS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def read_header(path: str | Path) -> dict:
    """The JSON header the converter wrote: kind, config, source sha256, converter version."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise WeightsError(f"{path}: not a readable safetensors file: {e}") from None
    if METADATA_KEY not in meta:
        raise WeightsError(f"{path}: safetensors file has no '{METADATA_KEY}' metadata; "
                           "was it written by `cli.py convert`?")
    return json.loads(meta[METADATA_KEY])


def load_file(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild one module from its safetensors file alone, weights loaded strictly, eval mode."""
    from safetensors.torch import load_file as st_load

    path = Path(path)
    header = read_header(path)
    module = model_class(header["kind"])(**header["config"])
    state = st_load(str(path), device="cpu")
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not fit {header['kind']} {header['config']}: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return module.to(device).eval()


def load(path: str | Path, device: str | torch.device = "cpu"):
    """A ``.safetensors`` file -> its module; a converted release folder -> ``{name: module}``."""
    path = Path(path)
    if path.is_dir():
        manifest = path / "manifest.json"
        if not manifest.exists():
            raise WeightsError(f"{path}: folder has no manifest.json (convert a release folder "
                               "to get one, or pass a .safetensors file)")
        entries = json.loads(manifest.read_text())["models"]
        return {name: load_file(path / e["weights"], device) for name, e in entries.items()}
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    return load_file(path, device)
