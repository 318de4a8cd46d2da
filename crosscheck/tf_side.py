"""A model kind's TF side, for the cross-checks: its reference model of ``models_tf`` rebuilt
from a checkpoint's variables (so it runs in float64 and exposes every activation), traced, and
the checkpoint's own SavedModel called as the authors' notebook calls it.

Each module of ``models_tf`` that holds a model kind offers the same four functions
(``reference_model``, ``trace_activations``, ``notebook_output``, ``notebook_input_size``); the
kind's record (``porting.kinds``) names that module (``ModelKind.tf_module``), and only this
module resolves the name.
"""
from __future__ import annotations

import importlib
from typing import Mapping

import numpy as np

from porting import graph_scan, kinds
from porting.errors import PortError
from porting.kernels import fpmath_env
from porting.mapping import MappingError, NameIndex


def tf_module(kind: str):
    """The ``models_tf`` module of a kind (by its record)."""
    return importlib.import_module(kinds.get(kind).tf_module)


def tf_kernels() -> dict:
    """TensorFlow's kernel choice in this process: oneDNN or Eigen (``TF_ENABLE_ONEDNN_OPTS``;
    TF turns oneDNN on by default only on CPUs with AVX-512 VNNI, BF16 or AMX), and the settings
    that change its float32 arithmetic (oneDNN's fpmath mode, TF32 on a GPU)."""
    import os

    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):   # a TF without the probe: say what was asked for
        onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").lower() in ("1", "true")
    return {"tensorflow": tf.__version__, "onednn": onednn,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TF's default)"),
            "fpmath_mode": fpmath_env(), "gpus": len(tf.config.list_physical_devices("GPU")),
            "tf32_execution": bool(tf.config.experimental.tensor_float_32_execution_enabled())}


def load_savedmodel(ck):
    """The SavedModel of an open checkpoint (``porting.readers.Checkpoint``) loaded as the notebook
    loads it, once its graph has passed the scan (``porting.graph_scan.check``: a SavedModel is a
    program, and this runs it). The one door every SavedModel load of the project goes through;
    a checkpoint opened with ``trust_graph`` (``--trust-graph``) loads unscanned, with a warning."""
    import sys

    import tf_keras as keras

    if ck.root is None:
        raise PortError(f"{ck.source}: not a SavedModel ({ck.fmt}); there is no graph to load")
    if ck.trust_graph:
        print(f"warning: --trust-graph: {ck.source} is loaded and run without its graph scan "
              "(a SavedModel is a program; docs/security.md)", file=sys.stderr)
    else:
        graph_scan.check(ck.root, shown=str(ck.source))   # the unpacked folder: what TF loads
    return keras.models.load_model(str(ck.root), compile=False)


def assign_by_name(model, variables: Mapping[str, np.ndarray], source: str = "checkpoint") -> None:
    """Load {TF variable name: array} into a built model; every model variable must be found
    (names matched as the converter matches them: an extra or missing leading scope is fine)."""
    index = NameIndex(list(variables))
    for v in model.variables:
        found = index.find(v.name)
        if found is None:
            raise MappingError(f"{source}: variable {v.name!r} of the TF model is not in the checkpoint")
        value = np.asarray(variables[found])
        if tuple(value.shape) != tuple(v.shape):
            raise MappingError(f"{source}: variable {found!r}: expected shape {list(v.shape)}, "
                               f"found {list(value.shape)}")
        v.assign(value.astype(v.dtype.as_numpy_dtype))


def reference_model(kind: str, config: dict, dtype: str = "float32"):
    """A fresh reference model of ``kind`` with the converted ``config`` (the PyTorch config)."""
    return tf_module(kind).reference_model(kind, config, dtype)


def rebuild(kind: str, config: dict, dtype: str, variables: Mapping[str, np.ndarray], source: str = "checkpoint"):
    """The reference model of ``kind`` holding a checkpoint's ``variables``, in ``dtype``."""
    model = reference_model(kind, config, dtype)
    assign_by_name(model, variables, source)
    return model


def trace(kind: str, model, inputs, dtype: str) -> dict[str, np.ndarray]:
    """Every activation ``verify`` compares, by label, in network order (the last: the output)."""
    return tf_module(kind).trace_activations(model, inputs, dtype)


def notebook_output(kind: str, saved, inputs) -> np.ndarray:
    return tf_module(kind).notebook_output(saved, inputs)


def notebook_input_size(kind: str, saved) -> int | None:
    return tf_module(kind).notebook_input_size(saved)


def notebook_runner(kind: str, ck):
    """``inputs -> output`` of an open checkpoint's SavedModel, as the notebook calls it."""
    saved = load_savedmodel(ck)
    return lambda inputs: notebook_output(kind, saved, inputs)


def build_keras(kind: str, config: dict):
    """For ``porting.readers.open_checkpoint(build_keras=...)``: the reference model a nameless
    ``.weights.h5`` of ``kind`` loads into (float32)."""
    return reference_model(kind, config)
