"""PyTorch weights back to TF: a converted (or fine-tuned) model written as a release zip.

``export_model`` undoes the kind's mapping rules (``porting.mapping.invert``), loads the result
into the TF reference model of ``models_tf`` and saves it as the release does
(``<stem>.savedmodel.zip``), so a checkpoint trained in PyTorch can be loaded as the notebook
loads the release, and checked against TF again (``verify``, ``verify --train``) after
``cli.py convert`` brings it back. The round trip is exact: the rules only move values.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import models_pt
from crosscheck import tf_side
from crosscheck.reference_release import save_savedmodel_zip
from porting import kinds, mapping
from porting.convert import prepare


def tf_model_holding(kind: str, config: dict, state: dict, where: str, dtype: str = "float32"):
    """The TF reference model of ``kind`` holding a PyTorch state dict (tensors or arrays), the
    kind's mapping rules undone; returns it and the mapping plan (TF names -> PyTorch keys)."""
    state = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in state.items()}
    model = tf_side.reference_model(kind, config, dtype)
    shapes = {v.name: tuple(v.shape) for v in model.variables}
    plan = prepare(list(shapes), shapes, f"the TF {kind} of {where}", model=kind).plan
    tf_side.assign_by_name(model, mapping.invert(plan, state, shapes, where=where), where)
    return model, plan


def export_model(weights: Path, out_zip: Path | None = None, state: dict | None = None) -> Path:
    """One ``.safetensors`` file (or ``state``, a PyTorch state dict of that file's kind and
    config) -> ``<stem>.savedmodel.zip`` beside it or at ``out_zip``; written atomically."""
    weights = Path(weights)
    header = models_pt.read_header(weights)
    kind = kinds.get(header["kind"])
    if state is None:
        from safetensors.numpy import load_file

        state = load_file(str(weights))
    model, _ = tf_model_holding(kind.name, header["config"], state, str(weights))
    out_zip = Path(out_zip) if out_zip else weights.with_name(f"{kind.release_stem}.savedmodel.zip")
    return save_savedmodel_zip(model, out_zip, f"{kind.release_stem}.savedmodel")
