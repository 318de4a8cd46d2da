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

``verify_onnx`` judges a file as ``verify`` judges a port: exact in float64 (the module's
float64 export, evaluated by ``onnx.reference``'s NumPy evaluator, since onnxruntime has no
float64 convolution) and fit for float32 (onnxruntime's output against the float64 truth,
within the rounding model's bound; ``porting.rounding``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from porting import kinds
from porting.atomic import atomic_path
from porting.errors import PortError
from porting.verdict import RULE, judge

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


def export(module, out: Path, size: int | None = None, dtype=np.float32) -> Path:
    """Write ``module`` as ONNX to ``out`` (atomically) and run ``onnx.checker`` on it."""
    import onnx
    import torch

    out = Path(out)
    x = reference_inputs(module, 2, size)
    feed = {k: v.astype(dtype) for k, v in onnx_feed(module, x).items()}
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


def ort_session(path: Path, optimization: str = "all", threads: int | None = None):
    """An onnxruntime CPU session; ``optimization``: "all" (onnxruntime's default: fused nodes and
    NCHWc layouts where it pays) or "none" (every node as written), two kernel choices."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise OnnxExportError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None


def ort_kernels(optimization: str = "all") -> dict:
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "providers": ["CPUExecutionProvider"],
            "graph_optimization": optimization}


def run_onnx(path: Path, feed: dict[str, np.ndarray], optimization: str = "all", threads: int | None = None) -> np.ndarray:
    session = ort_session(path, optimization, threads)
    wanted = {i.name for i in session.get_inputs()}
    if wanted != set(feed):
        raise OnnxExportError(f"{path}: inputs {sorted(wanted)}, expected {sorted(feed)} (a file of another model?)")
    return session.run(None, feed)[0]


def float64_twin(module, size: int | None, out: Path) -> Path:
    """The same module exported in float64 (same tracer, same graph; every constant float64),
    for ``onnx.reference``'s evaluator: onnxruntime has no float64 convolution."""
    import copy

    import torch

    return export(copy.deepcopy(module).to(torch.float64), out, size, dtype=np.float64)


def same_graph(file32: Path, twin64: Path) -> bool:
    """The two files hold the same nodes in the same order (op types), whatever their dtypes: the
    float64 twin's evaluation speaks for the file's graph. Not for its weights: the exporter folds
    constants (BatchNorm into the kernels, a weight times its equalized-learning-rate scale) in
    the file's dtype, so the file's weights differ from the twin's rounded ones by float32
    rounding, up to thousands of ulps where a fold cancels; a wrong weight in the file is the
    float32 check's to catch (a corrupted one scores over 100 there, parity_tests/test_onnx_export.py)."""
    import onnx

    ops = [[n.op_type for n in onnx.load(str(p)).graph.node] for p in (file32, twin64)]
    return ops[0] == ops[1]


def evaluate_float64(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The file's graph evaluated in float64 by ``onnx.reference`` (NumPy, kernel-free)."""
    from onnx.reference import ReferenceEvaluator

    return np.asarray(ReferenceEvaluator(str(path)).run(None, {k: v.astype(np.float64) for k, v in feed.items()})[0])


def _float32_slope():
    """ONNX stores attributes in float32: the file's LeakyRelu slope is float32(0.2) =
    0.20000000298. The port's float64 run it is held to takes the same slope (a patch for the
    duration), or the float64 check would measure the attribute's rounding, 1.5e-8."""
    import contextlib
    from unittest import mock

    import torch.nn.functional as F

    import models_pt.generator as ptg
    import models_pt.resnet_d as ptd
    from models_pt.ops import SQRT2

    slope = float(np.float32(0.2))

    def lrelu(x):
        return F.leaky_relu(x, slope) * SQRT2

    stack = contextlib.ExitStack()
    for module in (ptg, ptd):
        stack.enter_context(mock.patch.object(module, "lrelu", lrelu))
    return stack


@dataclass
class OnnxCheck:
    """onnxruntime's float32 output judged as ``verify`` judges a port's: its error against the
    float64 truth (the PyTorch module run in float64, which ``verify`` holds to TF's float64 run)
    within ``porting.verdict.VerdictRule.factor`` times the rounding model's float32 error
    (``porting.rounding``). Given the TF SavedModel, its float32 output must sit within the same
    bound of that truth (a port whose float64 run were not TF's computation fails there). The
    float64 export of the same module, evaluated by ``onnx.reference``, must equal the truth
    within 1e-9 relative (``score64``). ``vs_pytorch`` / ``vs_tf``: max abs differences of the
    float32 outputs (information)."""

    model: str
    file: str
    inputs: str
    vs_pytorch: float
    vs_tf: float | None
    score: float = 0.0                  # onnxruntime's float32 error / its bound (passes when <= 1)
    tf_score: float | None = None       # the TF SavedModel's float32 error / the same bound
    port_score: float | None = None     # PyTorch's own float32 error / the same bound (information)
    score64: float | None = None        # float64 evaluation of the file's graph: |ONNX64 - PT64| / (1e-9 max(1, |PT64|))
    same_graph: bool | None = None      # the float64 twin holds the float32 file's nodes
    kernels: dict | None = None
    error: float | None = None          # max |ONNX32 - truth|
    model_error: float | None = None    # the rounding model's float32 error of the output
    truth_peak: float | None = None

    @property
    def passed(self) -> bool:
        return (self.score <= 1 and (self.tf_score is None or self.tf_score <= 1)
                and (self.score64 is None or (self.score64 <= 1 and self.same_graph is not False)))


def verify_onnx(path: Path, module, size: int | None = None, n: int = 8, seed: int = 1,
                tf_output=None, float64: bool = True, optimization: str = "all",
                samples: int | None = None, rule=RULE, n64: int = 4) -> OnnxCheck:
    """Run the ONNX file in onnxruntime on non-degenerate inputs (the kind's verify inputs,
    checked as verify checks them) and judge it against the float64 truth (see ``OnnxCheck``);
    ``tf_output``: ``inputs -> output`` of the TF original loaded as the notebook loads it
    (``crosscheck.tf_side.notebook_runner``). ``float64``: also evaluate the module's float64
    export with ``onnx.reference`` on the first ``n64`` inputs (its NumPy convolutions are slow:
    28 s for 4 images through the 512-channel encoder at 64 px; a batch-dependent error such as
    minibatch groups frozen at export shows far above the float32 bound on all ``n``)."""
    import tempfile

    from porting.verdict import float64_inputs, port_runs

    spec = kinds.get(module.kind).verify
    x = reference_inputs(module, n, size, seed)
    spec.check_inputs(x)
    feed = onnx_feed(module, x)
    got = run_onnx(path, feed, optimization)
    x64 = float64_inputs(x)
    runs = port_runs({"port": module}, lambda m, dtype: spec.trace(m["port"], x64 if dtype == "float64" else x, dtype),
                     "float32", samples=samples)
    out = list(runs.got64)[-1]                     # the trace's last entry: the output
    truth, err, ref = runs.got64[out], runs.model_error[out], runs.got32[out]
    if got.shape != ref.shape:
        raise OnnxExportError(f"{path}: output shape {list(got.shape)}, PyTorch gives {list(ref.shape)}")
    vs_onnx = judge("onnx", truth, got32=got, model_error=err, rule=rule)
    vs_port = judge("pytorch", truth, got32=ref, model_error=err, rule=rule)
    vs_tf = diff_tf = None
    if tf_output is not None:
        tf_out = np.asarray(tf_output(x)).reshape(got.shape)
        vs_tf = judge("tf", truth, got32=tf_out, model_error=err, rule=rule)
        diff_tf = float(np.abs(got - tf_out).max())
    score64 = same = None
    if float64:
        import copy

        import torch

        module64 = copy.deepcopy(module).to(torch.float64)   # the float64 export's own twin
        with tempfile.TemporaryDirectory() as tmp:
            twin = float64_twin(module, size if kinds.get(module.kind).onnx.size_fixed else None,
                                Path(tmp) / "float64.onnx")
            same = same_graph(path, twin)
            # the float64 inputs (for the generator: its style vectors, from the float64 module)
            x64 = tuple(a[:n64] for a in x) if isinstance(x, tuple) else x[:n64]
            got64 = evaluate_float64(twin, onnx_feed(module64, x64))
        with _float32_slope():
            truth64 = list(spec.trace(module64, x64, "float64").values())[-1]
        score64 = judge("onnx float64", truth64, got64=got64.reshape(truth64.shape), rule=rule).score64
    shape = x[0].shape if isinstance(x, tuple) else x.shape
    return OnnxCheck(module.kind, str(path), f"{n} x {list(shape[1:])}", float(np.abs(got - ref).max()), diff_tf,
                     vs_onnx.score, vs_tf.score if vs_tf else None, vs_port.score, score64, same,
                     ort_kernels(optimization), vs_onnx.port_error, vs_onnx.model_error, vs_onnx.truth_peak)


def format_checks(checks: list[OnnxCheck]) -> str:
    lines = [f"{'model':<14} {'file':<24} {'inputs':<22} {'float64':>8} {'score':>6} {'PT score':>8} "
             f"{'TF score':>8} {'vs PyTorch':>11} {'vs TF':>10}  result"]
    for c in checks:
        tf = f"{c.vs_tf:.2e}" if c.vs_tf is not None else "-"
        stf = f"{c.tf_score:.2f}" if c.tf_score is not None else "-"
        s64 = f"{c.score64:.1e}" if c.score64 is not None else "-"
        lines.append(f"{c.model:<14} {Path(c.file).name:<24} {c.inputs:<22} {s64:>8} {c.score:>6.2f} "
                     f"{c.port_score:>8.2f} {stf:>8} {c.vs_pytorch:>11.2e} {tf:>10}  "
                     f"{'pass' if c.passed else 'FAIL'}")
    return "\n".join(lines) + (f"\n(float64: the module's float64 export evaluated by onnx.reference against the "
                               f"port in float64, |diff| / (1e-9 max(1, |truth|)), exact when <= 1. score: "
                               f"onnxruntime's float32 error against the float64 truth over {RULE.factor:g}x the "
                               f"rounding model's float32 error; PT score and TF score: PyTorch's and the TF "
                               f"SavedModel's own float32 runs against the same bound; each passes when <= 1)")
