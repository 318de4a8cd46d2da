"""ONNX export of the ported modules, and its check in onnxruntime against PyTorch (and TF).

What each file computes (batch axis dynamic, spatial size fixed at export):

* classifier: ``images [N, 3, S, S]`` (NCHW, [-1, 1]) -> ``logits [N, C]``;
* encoder: ``images [N, 3, R, R]`` -> ``latent [N, 512]``;
* discriminator: ``images``, ``labels [N, label_size]`` -> ``score [N, 1]``;
* generator: the *synthesis*, with the style vectors as inputs, ``style_conv0..`` (one per conv
  style layer, StyleSpace order) and ``style_torgb0..``, -> ``images [N, 3, R, R]``; so a
  StyleSpace edit is an edit of an input, in ONNX too. The style vectors of a dlatent come from
  ``Generator.style_vectors`` (or the ``style_vector_calculator`` of the TF model).

The classifier's TF 'same' padding depends on the input size, so an exported classifier takes
the size it was exported at (``size``; the generator's resolution for a release).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from porting import kinds
from porting.atomic import atomic_path
from porting.errors import PortError
from porting.verify import RULE, judge

ONNX_TOL = 1e-4   # the old fixed bar on max abs diff: reported next to the verdict, no longer deciding
OPSET = 17


class OnnxExportError(PortError):
    """A model that cannot be exported or an ONNX file that does not check out."""


def reference_inputs(module, n: int, size: int | None, seed: int = 0):
    """Inputs in the kind's verify layout (TF's): NHWC images for the classifier, NCHW images
    (and labels) for the encoder and discriminator, dlatents for the generator."""
    spec = kinds.get(module.kind).verify
    if size is None:
        size = 256 if kinds.get(module.kind).onnx.size_fixed else spec.default_size(module.config)
    return spec.make_inputs(module.config, n, size, seed)


def onnx_feed(module, x) -> dict[str, np.ndarray]:
    """The ONNX file's inputs for ``reference_inputs``' ``x`` (the kind's ``OnnxSpec.feed``)."""
    return kinds.get(module.kind).onnx.feed(module, x)


def export(module, out: Path, size: int | None = None) -> Path:
    """Write ``module`` as ONNX to ``out`` (atomically) and run ``onnx.checker`` on it."""
    import onnx
    import torch

    out = Path(out)
    x = reference_inputs(module, 2, size)
    feed = onnx_feed(module, x)
    names = list(feed)
    args = tuple(torch.from_numpy(v) for v in feed.values())
    spec = kinds.get(module.kind).onnx
    net, output = spec.net(module.eval()), spec.output
    dynamic = {n: {0: "batch"} for n in names + [output]}
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(tmp), dynamo=False, input_names=names, output_names=[output],
                          dynamic_axes=dynamic, opset_version=OPSET)
        try:
            onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
        except Exception as e:  # a file that does not check out is never renamed into place
            raise OnnxExportError(f"{out}: onnx.checker rejected the exported {module.kind}: {e}") from None
    return out


def run_onnx(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise OnnxExportError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None
    wanted = {i.name for i in session.get_inputs()}
    if wanted != set(feed):
        raise OnnxExportError(f"{path}: inputs {sorted(wanted)}, expected {sorted(feed)} (a file of another model?)")
    return session.run(None, feed)[0]


@dataclass
class OnnxCheck:
    """onnxruntime's float32 output judged as ``verify`` judges a port: its error against a
    float64 truth (the PyTorch module run in float64, which ``verify --float64`` proves equal to
    TF's float64 run) must be within ``porting.verify.Rule.factor`` of PyTorch's own float32
    error; against TF (given the SavedModel) the rule is applied both ways, since the truth then
    comes from the candidate's side. ``vs_pytorch`` / ``vs_tf``: max abs differences, reported
    next to the old fixed bar ``ONNX_TOL``."""

    model: str
    file: str
    inputs: str
    vs_pytorch: float
    vs_tf: float | None
    score_pytorch: float = 0.0          # deciding figure / its bound (passes when <= 1)
    score_tf: float | None = None
    tol: float = ONNX_TOL               # the old fixed bar (reported)

    @property
    def passed(self) -> bool:
        return self.score_pytorch <= 1 and (self.score_tf is None or self.score_tf <= 1)

    @property
    def abs_passed(self) -> bool:
        return self.vs_pytorch <= self.tol and (self.vs_tf is None or self.vs_tf <= self.tol)


def verify_onnx(path: Path, module, size: int | None = None, n: int = 8, seed: int = 1,
                tf_output=None) -> OnnxCheck:
    """Run the ONNX file in onnxruntime on non-degenerate inputs (the kind's verify inputs,
    checked as verify checks them) and judge it against the PyTorch module and, given
    ``tf_output`` (``inputs -> output`` of the TF original loaded as the notebook loads it:
    ``crosscheck.tf_side.notebook_runner``), against TF too (see ``OnnxCheck``)."""
    import copy

    import torch

    spec = kinds.get(module.kind).verify
    x = reference_inputs(module, n, size, seed)
    spec.check_inputs(x)
    got = run_onnx(path, onnx_feed(module, x))
    ref = list(spec.trace(module, x, "float32").values())[-1]   # the trace's last entry: the output
    if got.shape != ref.shape:
        raise OnnxExportError(f"{path}: output shape {list(got.shape)}, PyTorch gives {list(ref.shape)}")
    truth = list(spec.trace(copy.deepcopy(module).to(torch.float64), x, "float64").values())[-1]
    vs_pt = judge("onnx vs pytorch", ref, got, truth)
    vs_tf = None
    if tf_output is not None:
        tf_out = np.asarray(tf_output(x)).reshape(got.shape)
        vs_tf = judge("onnx vs tf", tf_out, got, truth, symmetric=True)
    shape = x[0].shape if isinstance(x, tuple) else x.shape
    return OnnxCheck(module.kind, str(path), f"{n} x {list(shape[1:])}", vs_pt.max_abs_diff,
                     vs_tf.max_abs_diff if vs_tf else None, vs_pt.score, vs_tf.score if vs_tf else None)


def format_checks(checks: list[OnnxCheck]) -> str:
    lines = [f"{'model':<14} {'file':<28} {'inputs':<22} {'vs PyTorch':>11} {'score':>6} {'vs TF':>10} "
             f"{'score':>6}  result  abs bar"]
    for c in checks:
        tf = f"{c.vs_tf:.2e}" if c.vs_tf is not None else "-"
        stf = f"{c.score_tf:.2f}" if c.score_tf is not None else "-"
        lines.append(f"{c.model:<14} {Path(c.file).name:<28} {c.inputs:<22} {c.vs_pytorch:>11.2e} "
                     f"{c.score_pytorch:>6.2f} {tf:>10} {stf:>6}  {'pass' if c.passed else 'FAIL':<6}  "
                     f"{'pass' if c.abs_passed else 'over'}")
    return "\n".join(lines) + (f"\n(score: onnxruntime's float32 error against the float64 truth over "
                               f"{RULE.factor:g}x PyTorch's own; passes when <= 1. abs bar: the old "
                               f"max abs diff <= {ONNX_TOL:g}, reported only)")
