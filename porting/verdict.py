"""The verdict: is the port exact, and is its float32 run as good as float32 allows?

Layer: ``porting`` (NumPy and PyTorch; no TensorFlow). The TF side of a verification, the
``Reference`` (inputs, TF's float32 trace, TF's float64 trace), is computed by
``crosscheck.verify`` from the reference model of ``models_tf`` rebuilt from the checkpoint's
variables (so it runs in float64 and exposes every intermediate activation), first checked
against the checkpoint's own SavedModel as the notebook loads it. This module judges a PyTorch
module against a ``Reference`` (``judge_module``: the module traced by forward hooks) and
formats the report. Every compared activation gets two verdicts, and passes when both hold:

1. **Exact, decided in float64.** TF and the port both run in float64 on the same inputs:
   ``max|TF64 - PT64| <= VerdictRule.rel64 * max(1, max|TF64|)`` (1e-9). A mapping error (a wrong
   padding, epsilon, flip, scale or a weight off by 1e-4) is 1e-5 or more off; float64 kernels
   agree to ~1e-14, whichever kernels run, so this verdict is the same on every machine.
2. **Fit for float32, judged by a bound that belongs to the computation.** The port's float32
   error against the float64 truth (TF's float64 run) must stay within ``VerdictRule.factor`` times
   the error a *model* float32 implementation makes on the same weights and inputs
   (``porting.rounding``: the port's float64 graph with every op's float32 rounding simulated,
   the same on every machine), the model's error taken no smaller than ``VerdictRule.floor_ulps``
   float32 ulps of the activation's largest value. TF's own float32 error, its score against
   the same bound and the old ratio (port error / TF's error) are reported as information: they
   say how good each machine's kernels are, and decide nothing.

``bench/verdict_sweep.py`` measured the factor and the floor over many reference releases and
a matrix of kernel choices (``docs/verification.md``).

``dtype="float64"`` runs the first verdict alone (``cli.py verify --float64``).

**One pipeline for every check.** The forward check (``judge_module``), the training check
(``porting.train_check.judge_training``), the round trip and the AttFind effects check
(``crosscheck.verify``) each give ``port_runs`` their modules and how to run them; it makes the
float64 copies, runs them, runs the float32 pass off NNPACK, and runs the rounding model, in
this module only. ``judged`` then judges every quantity against the float64 truth and builds
the ``Report``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

NUM_IMAGES = 8                             # default inputs per model (bench/verdict_sweep.py, docs)
EPS32 = float(np.finfo(np.float32).eps)   # 1.19e-7, one unit in the last place at 1.0


@dataclass(frozen=True)
class VerdictRule:
    """How a run is judged: float64 against TF's float64 run, float32 against the rounding model.

    ``factor`` and ``floor_ulps`` were chosen from ``bench/verdict_sweep.py`` over 20 reference
    releases and the kernel matrix (``docs/verification.md`` gives the figures and the reasoning)."""

    factor: float = 4.0       # the port's float32 error may be this many times the model's
    floor_ulps: float = 1.0   # the model's error counts as at least this many eps32 of max|truth|
    rel64: float = 1e-9       # float64: |TF - PT| <= rel64 * max(1, max|TF|)

    def to_json(self) -> dict:
        return asdict(self)

    def bound32(self, model_error: float, truth_peak: float) -> float:
        """What a float32 run's error against the truth must stay under."""
        return self.factor * max(model_error, self.floor_ulps * EPS32 * truth_peak)

    def bound64(self, peak: float) -> float:
        return self.rel64 * max(1.0, peak)


RULE = VerdictRule()


@dataclass
class LayerRow:
    name: str
    shape: list
    max_abs_diff: float               # max |TF - PT| (float32 where it ran, else float64)
    ref_max_abs: float                # max |truth| (TF's float64 run)
    passed: bool                      # exact (where float64 ran) and within the float32 bound (where float32 ran)
    # float64: the mapping is exact
    diff64: float | None = None       # max |TF64 - PT64|
    bound64: float | None = None      # rel64 * max(1, max|TF64|)
    score64: float | None = None      # diff64 / bound64: exact when <= 1
    # float32: as good as float32 allows
    port_error: float | None = None   # max |PT32 - truth|
    model_error: float | None = None  # the rounding model's float32 error (porting.rounding)
    bound: float | None = None        # factor * max(model_error, floor_ulps eps32 max|truth|)
    score: float | None = None        # port_error / bound: fit when <= 1
    # information: the kernels of this machine
    tf_error: float | None = None     # max |TF32 - truth|
    tf_score: float | None = None     # tf_error / bound: TF's own float32 against the same bound
    ratio: float | None = None        # port_error / tf_error (the figure the old rule decided on)
    truth_peak: float | None = None   # max |truth|

    @property
    def exact(self) -> bool | None:
        return None if self.score64 is None else bool(self.score64 <= 1)

    @property
    def fit32(self) -> bool | None:
        return None if self.score is None else bool(self.score <= 1)


def _arr(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a, np.float64)


def _peak(a: np.ndarray) -> float:
    return float(np.max(np.abs(a))) if a.size else 0.0


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _ratio(a: float, b: float) -> float:
    if not (np.isfinite(a) and np.isfinite(b)):
        return float("inf")
    return a / b if b else (0.0 if a == 0 else float("inf"))


def judge(name: str, truth, *, got64=None, got32=None, tf32=None, model_error: float | None = None,
          rule: VerdictRule = RULE, ref32=None) -> LayerRow:
    """One activation. ``truth``: TF's float64 run (or the float64 run the candidate is held to).

    ``got64``: the candidate's float64 run, judged for exactness against ``truth``.
    ``got32``: the candidate's float32 run, judged against ``truth`` with the float32 bound
    ``rule.factor * max(model_error, rule.floor_ulps * eps32 * max|truth|)``; ``model_error``
    (``porting.rounding.simulate``) is then required. ``tf32``: TF's float32 run, for the
    information columns (its error, its score against the same bound, |TF - PT|).
    ``ref32``: what the float32 run is held to instead of ``truth`` (a training check: the
    port's float64 run on the float32 run's branches, ``porting.branches.Branches``); TF's float32
    error, on TF's own branches, is then reported without a score."""
    truth, got64, got32, tf32, ref32 = _arr(truth), _arr(got64), _arr(got32), _arr(tf32), _arr(ref32)
    shape = list(truth.shape)
    for what, a in (("float64 run", got64), ("float32 run", got32), ("TF float32 run", tf32), ("reference", ref32)):
        if a is not None and a.shape != truth.shape:
            inf = float("inf")
            return LayerRow(name, shape, inf, _peak(truth), False, diff64=inf if got64 is not None else None,
                            score64=inf if got64 is not None else None, port_error=inf if got32 is not None else None,
                            score=inf if got32 is not None else None)
    peak = _peak(truth)
    row = LayerRow(name, shape, 0.0, peak, False, truth_peak=peak)
    if got64 is not None:
        row.diff64, row.bound64 = _maxdiff(truth, got64), rule.bound64(peak)
        row.score64 = _ratio(row.diff64, row.bound64)
        row.max_abs_diff = row.diff64
    if got32 is not None:
        if model_error is None:
            raise ValueError(f"{name}: a float32 run is judged against the rounding model's error; "
                             "pass model_error (porting.rounding.simulate)")
        against = truth if ref32 is None else ref32
        row.model_error = float(model_error)
        row.port_error = _maxdiff(got32, against)
        row.bound = rule.bound32(row.model_error, _peak(against))
        row.score = _ratio(row.port_error, row.bound)
        if tf32 is not None:
            row.tf_error = _maxdiff(tf32, truth)
            if ref32 is None:
                row.tf_score = _ratio(row.tf_error, row.bound)
                row.ratio = _ratio(row.port_error, row.tf_error)
                row.max_abs_diff = _maxdiff(tf32, got32)
    row.passed = all(v is not False for v in (row.exact, row.fit32)) and (got64 is not None or got32 is not None)
    return row


@dataclass
class Report:
    model: str
    dtype: str                        # "float32": exactness (float64) and float32 fitness; "float64": exactness only
    source: str
    weights: str
    inputs: str
    rule: dict = field(default_factory=RULE.to_json)
    layers: list[LayerRow] = field(default_factory=list)
    output: dict = field(default_factory=dict)
    savedmodel: dict | None = None
    same_source: bool = True          # the weights' recorded source sha256 is this checkpoint's
    passed: bool = False
    exact: bool | None = None         # float64: every activation within rel64
    fit32: bool | None = None         # float32: every activation within the float32 bound
    first_failure: str | None = None  # the first layer, in network order, over a bound
    first_inexact: str | None = None  # the first layer over the float64 bound
    kernels: dict = field(default_factory=dict)   # porting.kernels: which kernels ran
    rounding_samples: int | None = None           # noisy runs behind each model error
    seconds: float | None = None
    phases: dict = field(default_factory=dict)    # seconds: "tf" (both TF runs), "float64", "rounding model", "float32"

    def to_json(self) -> dict:
        return asdict(self)

    def rows(self) -> list[LayerRow]:
        """Every judged row: the layers, then the SavedModel-vs-rebuild check where there is one."""
        return list(self.layers) + ([LayerRow(**self.savedmodel)] if self.savedmodel else [])

    def finish(self) -> "Report":
        """Set the output row, the verdicts and the first failures from ``layers``."""
        self.output = asdict(self.layers[-1]) if self.layers else {}
        rows = self.rows()
        self.passed = bool(self.layers) and all(r.passed for r in rows)
        exact = [r.exact for r in rows if r.exact is not None]
        fit = [r.fit32 for r in rows if r.fit32 is not None]
        self.exact = all(exact) if exact else None
        self.fit32 = all(fit) if fit else None
        self.first_failure = next((r.name for r in rows if not r.passed), None)
        self.first_inexact = next((r.name for r in rows if r.exact is False), None)
        return self

    def worst(self) -> LayerRow | None:
        """The row closest to (or furthest over) its float32 bound (float64-only runs: its float64 bound)."""
        key = (lambda r: r.score if r.score is not None else -1.0) if self.fit32 is not None else \
            (lambda r: r.score64 if r.score64 is not None else -1.0)
        return max(self.rows(), key=key, default=None)

    def model_error_by_label(self) -> dict[str, float]:
        """label -> the rounding model's float32 error this report judged each layer with (float32
        runs), to judge other modules on the same reference (``porting.controls``)."""
        return {r.name: r.model_error for r in self.layers if r.model_error is not None}

    def worst64(self) -> LayerRow | None:
        return max(self.rows(), key=lambda r: r.score64 if r.score64 is not None else -1.0, default=None)

    def score(self) -> float:
        """The worst score of any row, float64 or float32: the report passes when <= 1."""
        scores = [s for r in self.rows() for s in (r.score, r.score64) if s is not None]
        return max(scores) if scores else float("inf")


@dataclass
class Reference:
    """Everything on the TF side of a verification: inputs, TF's float64 trace (the truth) and,
    unless only float64 runs, TF's float32 trace. Computed once, it can judge many PyTorch
    modules (the negative controls of ``porting.controls`` reuse it)."""

    kind: str
    dtype: str                        # "float32" (both verdicts) or "float64" (exactness only)
    config: dict
    spec: object                      # the kind's porting.kinds.VerifySpec
    inputs: object
    size: int
    tf64: dict[str, np.ndarray]       # TF's float64 run: the truth
    tf32: dict[str, np.ndarray] | None
    source: str = ""
    savedmodel_out: np.ndarray | None = None
    seconds: float = 0.0
    described: str = ""               # the inputs, in words, for the report
    kernels: dict = field(default_factory=dict)   # TF's kernels (crosscheck.tf_side.tf_kernels)
    # The TF models built on the way ("savedmodel": as the notebook loads it; "float64": the
    # rebuild that computed the truth), so a caller can reuse them (the release's round trip).
    models: dict = field(default_factory=dict)


def float64_inputs(inputs):
    """The inputs of the float64 runs: the same values, C-contiguous (PyTorch's float64
    convolutions are 1.6x slower on channels-last tensors; float64 results do not depend on it)."""
    if isinstance(inputs, tuple):
        return tuple(np.ascontiguousarray(a) for a in inputs)
    return np.ascontiguousarray(inputs)


# ----------------------------------------------------------------- the pipeline every check feeds

@dataclass
class PortRuns:
    """The port's side of one check, as ``port_runs`` computed it."""
    got64: dict                       # {label: the port's float64 run}: the exact verdict's input
    got32: dict | None = None         # {label: the port's float32 run}
    ref32: dict | None = None         # what the float32 run is held to, where not the truth (branches)
    model_error: dict | None = None   # {label: the rounding model's float32 error}
    kernels: dict = field(default_factory=dict)   # PyTorch's kernels of the float32 run
    phases: dict = field(default_factory=dict)    # seconds: "float64", "float32", "rounding model"
    samples: int | None = None        # noisy runs behind each model error (None: none simulated here)
    flips: int | None = None          # elements the branch replay moved (branches only)


def port_runs(modules: dict, forward, dtype: str, *, samples: int | None = None,
              model_error: dict | None = None, branches: bool = False, errors=None,
              summing: bool = True) -> PortRuns:
    """Run the port for a verdict, the one place it is done: ``forward(models, dtype)`` (models:
    ``modules``' copies in that dtype, by the same keys) -> ``{label: array}``.

    1. float64: copies of ``modules`` in float64, run once (the exact verdict's input);
    2. float32 (``dtype="float32"`` only): ``modules`` in float32, off NNPACK
       (``kernels.summing_kernels``), PyTorch's kernels recorded;
    3. the rounding model's float32 error of every quantity (``rounding.simulate`` on the float64
       run), unless ``model_error`` is given (the negative controls share the correct port's),
       or computed by ``errors(models64, clean, recorded_branches)`` where the caller has its own
       (a cache).

    ``branches`` (training checks, whose gradients jump where a rounding moves an input across a
    kink): the float32 run is held to the float64 run on the float32 run's branches (``ref32``),
    and the rounding model runs on the clean run's branches (``porting.branches.Branches``).
    ``summing=False``: the float32 run on whatever kernels the machine picks (AttFind's effects,
    judged as AttFind computes them)."""
    from contextlib import nullcontext

    import copy
    import time

    import torch

    from porting import branches as pinned
    from porting import kernels, rounding

    t0 = time.perf_counter()
    m64 = {k: copy.deepcopy(m).to(torch.float64) for k, m in modules.items()}
    clean_branches = None
    if branches:
        got64, clean_branches = pinned.recorded(lambda: forward(m64, "float64"))
    else:
        got64 = forward(m64, "float64")
    out = PortRuns(got64, kernels=kernels.torch_kernels(), phases={"float64": round(time.perf_counter() - t0, 2)})
    if dtype != "float32":
        return out
    t1 = time.perf_counter()
    m32 = {k: m if next(m.parameters(), torch.zeros(0)).dtype == torch.float32 else copy.deepcopy(m).float()
           for k, m in modules.items()}
    if branches:
        out.got32, out.ref32, out.flips = pinned.float32_against_float64(lambda: forward(m32, "float32"),
                                                                            lambda: forward(m64, "float64"))
        with kernels.summing_kernels():
            out.kernels = kernels.torch_kernels()
    else:
        with kernels.summing_kernels() if summing else nullcontext():
            out.got32 = forward(m32, "float32")
            out.kernels = kernels.torch_kernels()
    out.phases["float32"] = round(time.perf_counter() - t1, 2)
    out.model_error = model_error
    if model_error is None:
        t1 = time.perf_counter()
        out.samples = rounding.SAMPLES if samples is None else samples
        if errors is not None:
            out.model_error = errors(m64, got64, clean_branches)
        elif branches:
            out.model_error = pinned.model_errors_on_branches(lambda: forward(m64, "float64"), out.samples,
                                                                clean=got64, branches=clean_branches)[1]
        else:
            out.model_error = rounding.simulate(lambda: forward(m64, "float64"), out.samples, clean=got64)[1]
        out.phases["rounding model"] = round(time.perf_counter() - t1, 2)
    return out


def judged(model: str, truth: dict, runs: PortRuns, *, tf32: dict | None = None, rule: VerdictRule = RULE,
           source: str = "", weights: str = "", described: str = "", tf_kernels: dict | None = None,
           samples: int | None = None, strict: bool = False) -> Report:
    """Every quantity of ``truth`` (TF's float64 run, in network order: the last is the output)
    judged (``judge``) against the port's ``runs``, with TF's float32 run ``tf32`` for
    information, as a finished ``Report``. ``samples``: the rounding model's noisy runs, where
    the errors came from elsewhere (a controls' shared model error). ``strict``: the port must
    return no quantity TF lacks either (a trace may hold more points than TF's)."""
    from porting import rounding

    missing = [k for k in truth if k not in runs.got64]
    extra = [k for k in runs.got64 if k not in truth] if strict else []
    if missing or extra:
        raise AssertionError(f"{model}: TF and PyTorch compare different quantities: TF only {missing[:5]}, "
                             f"PyTorch only {extra[:5]}")
    float32 = runs.got32 is not None
    report = Report(model, "float32" if float32 else "float64", source, weights, described, rule.to_json(),
                    kernels={**(tf_kernels or {}), "pytorch": runs.kernels},
                    rounding_samples=(runs.samples or samples or rounding.SAMPLES) if float32 else None)
    for label in truth:
        report.layers.append(judge(
            label, truth[label], got64=runs.got64[label], rule=rule,
            got32=runs.got32[label] if float32 else None,
            tf32=tf32[label] if float32 and tf32 is not None else None,
            model_error=runs.model_error[label] if float32 else None,
            ref32=runs.ref32[label] if float32 and runs.ref32 is not None else None))
    report.phases = dict(runs.phases)
    return report.finish()


def judge_module(ref: Reference, pt_model, rule: VerdictRule = RULE, weights: str = "",
                 model_error: dict | None = None, samples: int | None = None) -> Report:
    """Trace ``pt_model`` on the reference's inputs, in float64 and (unless ``ref.dtype`` is
    float64) in float32, and judge every activation (``port_runs``, ``judged``). ``model_error``:
    the rounding model's errors per label, when already simulated for this reference (the
    negative controls share the correct port's)."""
    import time

    t0 = time.perf_counter()
    spec, x64 = ref.spec, float64_inputs(ref.inputs)
    runs = port_runs({"port": pt_model}, lambda m, dtype: spec.trace(m["port"], x64 if dtype == "float64" else ref.inputs, dtype),
                     ref.dtype, samples=samples, model_error=model_error)
    report = judged(ref.kind, ref.tf64, runs, tf32=ref.tf32, rule=rule, source=ref.source, weights=weights,
                    described=ref.described, tf_kernels=ref.kernels, samples=samples)
    if ref.savedmodel_out is not None and runs.got32 is not None:
        # The SavedModel as the notebook loads it is one more float32 implementation of the
        # truth: it must sit within the same bound (it equals the rebuild bit for bit here).
        out = list(ref.tf64)[-1]
        row = judge("savedmodel vs rebuilt TF", ref.tf64[out], got32=ref.savedmodel_out, tf32=ref.tf32[out],
                    model_error=runs.model_error[out], rule=rule)
        report.savedmodel = asdict(row)
        report.finish()
    report.seconds = round(ref.seconds + time.perf_counter() - t0, 2)
    report.phases = {"tf": round(ref.seconds, 2), **runs.phases}
    return report


# ----------------------------------------------------------------- the report

def _fmt(x: float | None, spec: str = ".2e") -> str:
    return "-" if x is None else format(x, spec)


def _ok(row: LayerRow) -> str:
    if row.passed:
        return "yes"
    return "NO (float64)" if row.exact is False else "NO"


def format_report(report: Report) -> str:
    from porting.kernels import describe, float32_diagnosis

    lines = [] if report.same_source else [
        f"warning: {report.weights} was converted from another file than {report.source} (sha256 differs)"]
    rule = VerdictRule(**report.rule)
    rows = report.rows()
    lines.append(f"{report.model} ({report.inputs}; {describe(report.kernels)})")
    if report.dtype == "float32":
        lines.append(f"  exact: |TF64 - PT64| <= {rule.rel64:g} x max(1, max|TF64|) (score64 <= 1). float32: the port's "
                     f"error against TF's float64 run <= {rule.factor:g} x the rounding model's float32 error "
                     f"(at least {rule.floor_ulps:g} ulp of max|truth|; score <= 1). TF err, TF score and ratio: "
                     f"this machine's TF kernels, for information")
        lines.append(f"{'layer':<34} {'shape':<20} {'score64':>8} {'|TF-PT|':>9} {'port err':>9} {'model err':>9} "
                     f"{'score':>6} {'TF err':>9} {'TF score':>8} {'ratio':>6}  ok")
        for r in rows:
            lines.append(f"{r.name:<34} {str(r.shape):<20} {_fmt(r.score64, '.1e'):>8} {r.max_abs_diff:>9.2e} "
                         f"{_fmt(r.port_error):>9} {_fmt(r.model_error):>9} {_fmt(r.score, '.2f'):>6} "
                         f"{_fmt(r.tf_error):>9} {_fmt(r.tf_score, '.2f'):>8} {_fmt(r.ratio, '.2f'):>6}  {_ok(r)}")
    else:
        lines.append(f"  float64 only: a layer passes when |TF - PT| <= {rule.rel64:g} x max(1, max|TF|)")
        lines.append(f"{'layer':<34} {'shape':<20} {'|TF-PT|':>9} {'bound':>9} {'score64':>8}  ok")
        for r in rows:
            lines.append(f"{r.name:<34} {str(r.shape):<20} {r.max_abs_diff:>9.2e} {_fmt(r.bound64):>9} "
                         f"{_fmt(r.score64, '.1e'):>8}  {'yes' if r.passed else 'NO'}")
    tail = f"{len(report.layers)} layers; output |TF-PT| {report.output['max_abs_diff']:.3e}"
    worst64 = report.worst64()
    if worst64 is not None and worst64.score64 is not None:
        tail += f"; exact: {'yes' if report.exact else 'NO'} (worst score64 {worst64.score64:.1e}, {worst64.name})"
    if report.fit32 is not None:
        worst = report.worst()
        tail += f"; float32: {'fit' if report.fit32 else 'NOT fit'} (worst score {worst.score:.2f}, {worst.name})"
    if report.first_failure:
        tail += f"; first failing layer {report.first_failure}"
    tail += f"; {'PASSED' if report.passed else 'FAILED'}"
    lines.append(tail)
    return "\n".join(lines + float32_diagnosis([report]))


def format_summary(reports) -> str:
    """One row per model: the float64 verdict (exact: its worst score64), the float32 verdict
    (the worst layer by its score against the rounding-model bound), the output's errors, and,
    for information, TF's own float32 error and the old ratio of that worst layer."""
    from porting.kernels import describe, float32_diagnosis

    width = max([14] + [len(r.model) for r in reports])
    lines = [f"{'model':<{width}} {'layers':>6}  {'exact (float64)':<17} {'float32 worst layer':<32} {'score':>6} "
             f"{'port err':>9} {'model err':>9} {'TF err':>9} {'ratio':>6}  result"]
    for r in reports:
        w64 = r.worst64()
        exact = "-" if r.exact is None else f"{'yes' if r.exact else 'NO'} {w64.score64:.1e}"
        worst = r.worst() if r.fit32 is not None else None
        lines.append(f"{r.model:<{width}} {len(r.layers):>6}  {exact:<17} {worst.name if worst else '-':<32} "
                     f"{_fmt(worst.score if worst else None, '.2f'):>6} {_fmt(worst.port_error if worst else None):>9} "
                     f"{_fmt(worst.model_error if worst else None):>9} {_fmt(worst.tf_error if worst else None):>9} "
                     f"{_fmt(worst.ratio if worst else None, '.2f'):>6}  {'pass' if r.passed else 'FAIL'}")
    if reports:
        lines.append(f"kernels: {describe(reports[0].kernels)}")
    return "\n".join(lines + float32_diagnosis(reports))
