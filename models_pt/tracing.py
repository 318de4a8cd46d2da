"""Activation tracing by forward hooks: the forward code stays as the paper writes it.

Each model names its trace points, ``{submodule path: label}`` in network order, where
``""`` is the model itself (its output); ``trace(model, points, *args)`` runs the model once with
a forward hook on each point and returns ``{label: output}`` in the order of ``points``.
"""
from __future__ import annotations

import torch
from torch import nn


def trace(model: nn.Module, points: dict[str, str], *args) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    missing = [path for path in points if path not in modules]
    if missing:
        raise KeyError(f"{type(model).__name__} has no submodules {missing[:5]} to trace")
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for path, label in points.items():
        def hook(_module, _inputs, output, label=label):
            captured[label] = output
        handles.append(modules[path].register_forward_hook(hook))
    try:
        model(*args)
    finally:
        for h in handles:
            h.remove()
    return {label: captured[label] for label in points.values()}
