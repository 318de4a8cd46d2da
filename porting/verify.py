"""The verdict: judge a PyTorch module's activations against TF's and a float64 truth.

Layer: ``porting`` (NumPy and PyTorch; no TensorFlow). The TF side of a verification, the
``Reference`` (inputs, TF's trace, the float64 truth), is computed by ``crosscheck.verify``
from the reference model of ``models_tf`` rebuilt from the checkpoint's variables (so it can run
in float64 and expose every intermediate activation), first checked against the checkpoint's
own SavedModel as the notebook loads it. This module judges a PyTorch module against a
``Reference`` (``judge_module``: the module traced by forward hooks), and formats the report.

**The float32 verdict is anchored in float64, not in a fixed bar.** For every compared
activation there are three runs on the same inputs and the same weights: TF in float32, PyTorch
in float32, and the *truth*, the TF rebuild run in float64 (PyTorch in float64 agrees with it to
~1e-14 when the mapping is right). TF's own float32 error against the truth is the rounding
floor of that activation on these weights and inputs; the port passes the activation when its
float32 error against the truth is within ``Rule.factor`` times TF's own (TF's error is taken no
smaller than ``Rule.floor_ulps`` float32 epsilons of the activation's largest value, for
activations TF happens to compute exactly), and fails far above it. A wrong layer makes the
port's error grow by orders of magnitude over TF's, whatever the weights' scale; a correct port
on weights nobody has seen stays near 1x because both frameworks round the same arithmetic.
``bench/verdict_sweep.py`` measured the factor and floor over many reference releases (see the
README's "How the port is checked").

A float64 run (``--float64``) is the strict proof: TF and PyTorch in float64 must agree within
``Rule.rel64`` (1e-9) times max(1, the activation's largest value).

The fixed absolute bars of earlier versions (``VerifySpec.output_tol`` / ``layer_tol``) are still
computed and reported next to the verdict (``abs_passed``), so figures can be compared with
other tools; they no longer decide.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

NUM_IMAGES = 8                             # default inputs per model (bench/verdict_sweep.py, README)
EPS32 = float(np.finfo(np.float32).eps)   # 1.19e-7, one unit in the last place at 1.0


@dataclass(frozen=True)
class Rule:
    """How a float32 run is judged against the float64 truth, and a float64 run against TF's.

    ``factor`` and ``floor_ulps`` were chosen from ``bench/verdict_sweep.py`` over many reference
    releases (the README's "How the port is checked" gives the measurements and the reasoning)."""

    factor: float = 8.0       # the port's float32 error may be this many times TF's own
    floor_ulps: float = 4.0   # TF's own error counts as at least this many eps32 of max|truth|
    rel64: float = 1e-9       # float64 runs: |TF - PT| <= rel64 * max(1, max|TF|)

    def to_json(self) -> dict:
        return asdict(self)

    def noise(self, own_error: float, truth_peak: float) -> float:
        """The rounding floor of one activation: a trusted float32 run's own error against the
        truth, taken no smaller than ``floor_ulps`` eps32 of the truth's largest value."""
        return max(own_error, self.floor_ulps * EPS32 * truth_peak)

    def ratio32(self, tf_error: float, port_error: float, truth_peak: float) -> float:
        noise = self.noise(tf_error, truth_peak)
        if not (np.isfinite(port_error) and np.isfinite(noise)):   # an overflowed trusted side decides nothing
            return float("inf")
        return port_error / noise if noise else (0.0 if port_error == 0 else float("inf"))

    def bound64(self, peak: float) -> float:
        return self.rel64 * max(1.0, peak)


RULE = Rule()


@dataclass
class LayerRow:
    name: str
    shape: list
    max_abs_diff: float               # max |TF - PT| in the run's dtype
    max_rel_diff: float               # ... divided by max |TF|
    ref_max_abs: float                # max |TF|
    passed: bool                      # the verdict
    tf_error: float | None = None     # float32 runs: max |TF32 - truth64|, TF's own rounding
    port_error: float | None = None   # float32 runs: max |PT32 - truth64|
    ratio: float | None = None        # port_error / max(tf_error, floor)
    bound: float | None = None        # what the deciding figure had to stay under
    truth_peak: float | None = None   # float32 runs: max |truth64|
    score: float | None = None        # the deciding figure / its bound: passes when <= 1
    abs_passed: bool | None = None    # the old fixed absolute bar (reported, not deciding)


def _peak(a: np.ndarray) -> float:
    return float(np.max(np.abs(a))) if a.size else 0.0


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def judge(name: str, ref, got, truth=None, rule: Rule = RULE, abs_tol: float | None = None,
          scale_free: bool = False, symmetric: bool = False) -> LayerRow:
    """One activation. ``ref``: TF's (the trusted side's) result; ``got``: the candidate's.

    With ``truth`` (a float64 run of the same computation), the float32 verdict:
    ``max|got - truth| <= rule.factor * max(max|ref - truth|, rule.floor_ulps * eps32 * max|truth|)``.
    ``symmetric``: the truth was computed by the candidate's own code in float64 (the AttFind
    effects, ONNX), so a wrong candidate would show as the *trusted* side's error, not its own:
    each float32 error must then be within the factor of the other's.
    Without ``truth``, ``ref`` and ``got`` are float64 runs: ``max|ref - got| <= rule.rel64 * max(1, max|ref|)``.
    ``abs_tol``: the old fixed bar, reported as ``abs_passed`` (times max(1, |ref|) unless
    ``scale_free``)."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return LayerRow(name, list(ref.shape), float("inf"), float("inf"), 0.0, False,
                        ratio=float("inf"), score=float("inf"), abs_passed=False)
    diff, peak = _maxdiff(ref, got), _peak(ref)
    abs_passed = None
    if abs_tol is not None:
        abs_passed = diff <= (abs_tol if scale_free else abs_tol * max(1.0, peak))
    row = LayerRow(name, list(ref.shape), diff, diff / peak if peak else diff, peak, False, abs_passed=abs_passed)
    if truth is None:
        row.bound = rule.bound64(peak)
        row.score = diff / row.bound if np.isfinite(diff) else float("inf")
    else:
        truth = np.asarray(truth, np.float64)
        if truth.shape != ref.shape:
            raise ValueError(f"{name}: truth of shape {list(truth.shape)} for an activation of shape {list(ref.shape)}")
        row.truth_peak = _peak(truth)
        row.tf_error, row.port_error = _maxdiff(ref, truth), _maxdiff(got, truth)
        row.ratio = rule.ratio32(row.tf_error, row.port_error, row.truth_peak)
        row.bound = rule.factor * rule.noise(row.tf_error, row.truth_peak)
        if symmetric:
            reverse = rule.ratio32(row.port_error, row.tf_error, row.truth_peak)
            if reverse > row.ratio:   # the trusted side's error decided: its bound is the port's
                row.ratio, row.bound = reverse, rule.factor * rule.noise(row.port_error, row.truth_peak)
        row.score = row.ratio / rule.factor
    row.passed = bool(row.score <= 1.0)
    return row


@dataclass
class Report:
    model: str
    dtype: str
    source: str
    weights: str
    inputs: str
    tolerance: float                  # the old fixed bar on the output (reported)
    layer_tolerance: float            # the old fixed bar per layer (reported)
    rule: dict = field(default_factory=RULE.to_json)
    layers: list[LayerRow] = field(default_factory=list)
    output: dict = field(default_factory=dict)
    savedmodel: dict | None = None
    same_source: bool = True          # the weights' recorded source sha256 is this checkpoint's
    passed: bool = False
    abs_passed: bool | None = None    # what the old fixed bars would have said
    first_failure: str | None = None  # the first layer, in network order, over its bound
    seconds: float | None = None

    def to_json(self) -> dict:
        return asdict(self)

    def rows(self) -> list[LayerRow]:
        """Every judged row: the layers, then the SavedModel-vs-rebuild check where there is one."""
        return list(self.layers) + ([LayerRow(**self.savedmodel)] if self.savedmodel else [])

    def finish(self) -> "Report":
        """Set the output row, the verdicts and the first failure from ``layers``."""
        self.output = asdict(self.layers[-1]) if self.layers else {}
        rows = self.rows()
        self.passed = bool(self.layers) and all(r.passed for r in rows)
        marks = [r.abs_passed for r in rows if r.abs_passed is not None]
        self.abs_passed = all(marks) if marks else None
        self.first_failure = next((r.name for r in rows if not r.passed), None)
        return self

    def worst(self) -> LayerRow | None:
        """The row closest to (or furthest over) its bound."""
        return max(self.rows(), key=lambda r: r.score if r.score is not None else 0.0, default=None)


@dataclass
class Reference:
    """Everything on the TF side of a verification: inputs, TF's trace in the run's dtype and,
    for float32 runs, the float64 truth. Computed once, it can judge many PyTorch modules (the
    negative controls of ``porting.controls`` reuse it)."""

    kind: str
    dtype: str
    config: dict
    spec: object                      # the kind's porting.kinds.VerifySpec
    inputs: object
    size: int
    tf: dict[str, np.ndarray]
    truth: dict[str, np.ndarray] | None
    source: str = ""
    savedmodel_out: np.ndarray | None = None
    seconds: float = 0.0
    described: str = ""               # the inputs, in words, for the report
    # The TF models built on the way ("savedmodel": as the notebook loads it; "float64": the
    # rebuild that computed the truth), so a caller can reuse them (the release's round trip).
    models: dict = field(default_factory=dict)


def judge_module(ref: Reference, pt_model, rule: Rule = RULE, weights: str = "") -> Report:
    """Trace ``pt_model`` on the reference's inputs and judge every activation."""
    import time

    import torch

    t0 = time.perf_counter()
    spec = ref.spec
    want = torch.float64 if ref.dtype == "float64" else torch.float32
    param = next(pt_model.parameters(), None)
    if param is not None and param.dtype != want:   # a copy: the caller's module keeps its dtype
        import copy

        pt_model = copy.deepcopy(pt_model).to(want)
    got = spec.trace(pt_model, ref.inputs, ref.dtype)
    missing = [k for k in ref.tf if k not in got]
    if missing:
        raise AssertionError(f"PyTorch trace lacks layers {missing[:5]}")
    labels = list(ref.tf)
    truth = ref.truth or {}
    report = Report(ref.kind, ref.dtype, ref.source, weights, ref.described, spec.output_tol[ref.dtype],
                    spec.layer_tol[ref.dtype], rule.to_json())
    for label in labels:
        last = label == labels[-1]
        report.layers.append(judge(label, ref.tf[label], got[label], truth.get(label), rule,
                                   spec.output_tol[ref.dtype] if last else spec.layer_tol[ref.dtype],
                                   scale_free=last))
    if ref.savedmodel_out is not None:
        # The SavedModel as the notebook loads it must compute what the rebuild computes.
        row = judge("savedmodel vs rebuilt TF", ref.tf[labels[-1]], ref.savedmodel_out,
                    truth.get(labels[-1]), rule, spec.output_tol[ref.dtype], scale_free=True)
        report.savedmodel = asdict(row)
    report.seconds = round(ref.seconds + time.perf_counter() - t0, 2)
    return report.finish()


def _fmt(x: float | None, spec: str = ".2e") -> str:
    return "-" if x is None else format(x, spec)


def format_table(report: Report) -> str:
    lines = [] if report.same_source else [
        f"warning: {report.weights} was converted from another file than {report.source} (sha256 differs)"]
    rule = Rule(**report.rule)
    rows = report.rows()
    if report.dtype == "float32":
        lines.append(f"{report.model} (float32, {report.inputs}; truth: the TF rebuild in float64; a layer "
                     f"passes when the port's error is <= {rule.factor:g}x TF's own, TF's own taken as at "
                     f"least {rule.floor_ulps:g} eps32 x max|truth|)")
        lines.append(f"{'layer':<34} {'shape':<20} {'|TF-PT|':>9} {'TF err':>9} {'port err':>9} "
                     f"{'ratio':>7}  ok   abs bar")
        for r in rows:
            absbar = "-" if r.abs_passed is None else ("ok" if r.abs_passed else "over")
            lines.append(f"{r.name:<34} {str(r.shape):<20} {r.max_abs_diff:>9.2e} {_fmt(r.tf_error):>9} "
                         f"{_fmt(r.port_error):>9} {_fmt(r.ratio, '.2f'):>7}  {'yes' if r.passed else 'NO ':<4} {absbar}")
    else:
        lines.append(f"{report.model} ({report.dtype}, {report.inputs}; a layer passes when |TF-PT| <= "
                     f"{rule.rel64:g} x max(1, max|TF|))")
        lines.append(f"{'layer':<34} {'shape':<20} {'|TF-PT|':>9} {'rel diff':>9} {'bound':>9}  ok")
        for r in rows:
            lines.append(f"{r.name:<34} {str(r.shape):<20} {r.max_abs_diff:>9.2e} {r.max_rel_diff:>9.2e} "
                         f"{_fmt(r.bound):>9}  {'yes' if r.passed else 'NO'}")
    worst = report.worst()
    tail = f"{len(report.layers)} layers; output |TF-PT| {report.output['max_abs_diff']:.3e}"
    if report.dtype == "float32" and worst is not None:
        tail += f"; worst layer {worst.name} (ratio {_fmt(worst.ratio, '.2f')})"
    elif worst is not None:
        tail += f"; worst layer {worst.name}"
    if report.first_failure:
        tail += f"; first failing layer {report.first_failure}"
    tail += f"; {'PASSED' if report.passed else 'FAILED'}"
    if report.abs_passed is not None:
        tail += f" (old fixed bars: {'pass' if report.abs_passed else 'over'})"
    lines.append(tail)
    return "\n".join(lines)


def format_summary(reports) -> str:
    """One row per model: the worst layer by its ratio to TF's own float32 error (float32 runs),
    the output's |TF - PT|, TF's own error and the port's there, the verdict, and what the old
    fixed absolute bars would have said."""
    lines = [f"{'model':<14} {'layers':>6}  {'worst layer':<32} {'ratio':>6}  {'output |TF-PT|':>14} "
             f"{'TF err':>9} {'port err':>9}  result  abs bar"]
    for r in reports:
        worst = r.worst()
        out = r.output
        ratio = "-" if worst is None or worst.ratio is None else f"{worst.ratio:.2f}"
        absbar = "-" if r.abs_passed is None else ("pass" if r.abs_passed else "over")
        lines.append(f"{r.model:<14} {len(r.layers):>6}  {worst.name if worst else '-':<32} {ratio:>6}  "
                     f"{out['max_abs_diff']:>14.3e} {_fmt(out.get('tf_error')):>9} {_fmt(out.get('port_error')):>9}  "
                     f"{'pass' if r.passed else 'FAIL':<6}  {absbar}")
    return "\n".join(lines)
