"""Run TF and PyTorch on the same inputs, compare every activation, report.

The TF side is the reference model of ``models_tf`` rebuilt from the checkpoint's variables (so
it can run in float64 and expose every intermediate activation); it is first checked against
the checkpoint's own SavedModel as the notebook loads it (``tf_keras.models.load_model``), so
the rebuild cannot hide a difference. The PyTorch side is the module ``models_pt.load`` builds
from the converted weights file alone.

Comparison of one tensor: ``max_abs_diff``; ``max_rel_diff`` = max abs diff divided by the
reference's max abs value (a per-element ratio explodes near zero and says little). A layer
passes when ``max_abs_diff <= layer_tol * max(1, max |reference|)``; the model's output passes
when ``max_abs_diff <= output_tol``. One pair per model kind and dtype, written in its hooks.
Intermediate layers get their own bound because float32 rounding accumulates with depth (the
float64 run, where both frameworks agree to ~1e-14, is what separates mapping errors from it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np


@dataclass
class Hooks:
    """What verification needs to know about one model kind."""

    output_tol: Mapping[str, float]                     # dtype name -> bound on the output
    layer_tol: Mapping[str, float]                      # dtype name -> bound per layer (scaled)
    make_inputs: Callable[..., object]                  # (config, n, size, seed) -> inputs
    check_inputs: Callable[[object], None]              # raise AssertionError when degenerate
    tf_rebuild: Callable[[dict, str, Mapping[str, np.ndarray]], object]
    tf_trace: Callable[[object, object, str], "dict[str, np.ndarray]"]   # last entry = output
    pt_trace: Callable[[object, object, str], "dict[str, np.ndarray]"]   # same labels, TF layout
    load_savedmodel: Callable[[Path], object] | None = None       # as the notebook loads it
    savedmodel_size: Callable[[object], int | None] = lambda model: None  # its declared input size
    savedmodel_output: Callable[[object, object], np.ndarray] | None = None
    default_size: Callable[[dict], int] = lambda config: 256


@dataclass
class LayerRow:
    name: str
    shape: list
    max_abs_diff: float
    max_rel_diff: float
    ref_max_abs: float
    passed: bool


@dataclass
class Report:
    model: str
    dtype: str
    source: str
    weights: str
    inputs: str
    tolerance: float
    layer_tolerance: float
    layers: list[LayerRow] = field(default_factory=list)
    output: dict = field(default_factory=dict)
    savedmodel: dict | None = None
    same_source: bool = True          # the weights' recorded source sha256 is this checkpoint's
    passed: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    def worst(self) -> LayerRow | None:
        return max(self.layers, key=lambda r: r.max_abs_diff / max(1.0, r.ref_max_abs), default=None)


def compare(name: str, ref: np.ndarray, got: np.ndarray, tol: float, scale_free: bool = False) -> LayerRow:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return LayerRow(name, list(ref.shape), float("inf"), float("inf"), 0.0, False)
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    bound = tol if scale_free else tol * max(1.0, peak)
    return LayerRow(name, list(ref.shape), diff, diff / peak if peak else diff, peak, diff <= bound)


def verify_checkpoint(ck, weights: Path, dtype: str = "float32", num_images: int = 4,
                      size: int | None = None, seed: int = 0) -> Report:
    """Compare every activation of the TF reference and the PyTorch port on the same inputs."""
    import torch

    import models_pt
    from porting import kinds

    header = models_pt.read_header(weights)
    kind = kinds.get(header["kind"])
    hooks = kind.hooks()
    config = header["config"]
    saved = hooks.load_savedmodel(ck.root) if hooks.load_savedmodel and ck.root is not None else None
    native = hooks.savedmodel_size(saved) if saved is not None else None
    size = size or native or hooks.default_size(config)
    inputs = hooks.make_inputs(config, num_images, size, seed)
    hooks.check_inputs(inputs)
    tol, layer_tol = hooks.output_tol[dtype], hooks.layer_tol[dtype]

    variables = ck.read_all()
    tf_model = hooks.tf_rebuild(config, dtype, variables)
    ref = hooks.tf_trace(tf_model, inputs, dtype)
    pt_model = models_pt.load(weights).to(torch.float64 if dtype == "float64" else torch.float32)
    got = hooks.pt_trace(pt_model, inputs, dtype)

    report = Report(kind.name, dtype, str(ck.source), str(weights), f"{num_images} x {size}px", tol, layer_tol)
    report.same_source = header.get("source_sha256") == ck.sha256()
    missing = [k for k in ref if k not in got]
    if missing:
        raise AssertionError(f"PyTorch trace lacks layers {missing[:5]}")
    labels = list(ref)
    for label in labels[:-1]:
        report.layers.append(compare(label, ref[label], got[label], layer_tol))
    out = compare(labels[-1], ref[labels[-1]], got[labels[-1]], tol, scale_free=True)
    report.layers.append(out)
    report.output = asdict(out)
    report.passed = all(r.passed for r in report.layers)

    if saved is not None and dtype == "float32" and native in (None, size):  # its own dtype and size
        sm = hooks.savedmodel_output(saved, inputs)
        row = compare("savedmodel vs rebuilt TF", sm, ref[labels[-1]], tol, scale_free=True)
        report.savedmodel = asdict(row)
        report.passed = report.passed and row.passed
    return report


def format_table(report: Report) -> str:
    lines = [] if report.same_source else [
        f"warning: {report.weights} was converted from another file than {report.source} (sha256 differs)"]
    lines += [f"{report.model} ({report.dtype}, {report.inputs}; output tolerance {report.tolerance:g}, "
             f"layer tolerance {report.layer_tolerance:g} x max(1, |ref|))",
             f"{'layer':<36} {'shape':<22} {'max abs diff':>13} {'max rel diff':>13}  ok"]
    for r in report.layers:
        lines.append(f"{r.name:<36} {str(r.shape):<22} {r.max_abs_diff:>13.3e} {r.max_rel_diff:>13.3e}  "
                     f"{'yes' if r.passed else 'NO'}")
    if report.savedmodel:
        s = report.savedmodel
        lines.append(f"{s['name']:<36} {str(s['shape']):<22} {s['max_abs_diff']:>13.3e} "
                     f"{s['max_rel_diff']:>13.3e}  {'yes' if s['passed'] else 'NO'}")
    worst = report.worst()
    lines.append(f"{len(report.layers)} layers; output max abs diff {report.output['max_abs_diff']:.3e}; "
                 f"worst layer {worst.name if worst else '-'}; {'PASSED' if report.passed else 'FAILED'}")
    return "\n".join(lines)
