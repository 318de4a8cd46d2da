"""MobileNetV1: per-layer and end-to-end parity with TF, float32 and float64, many input sizes,
and negative controls proving each check bites."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import models_pt
from porting import controls, mapping
from porting.kinds import classifier as kind
from porting.readers import open_checkpoint
from porting.samples import sample_images
from crosscheck.tf_side import rebuild
from crosscheck.verify import verify_checkpoint
from porting.kinds.classifier import KIND as CLASSIFIER, check_inputs
from porting.verdict import judge

TOL32 = 1e-5   # a spread the logits must exceed


@pytest.fixture(scope="module")
def variables(classifier_zip):
    with open_checkpoint(classifier_zip) as ck:
        return ck.read_all()


@pytest.fixture(scope="module")
def tf_any_size(variables):
    """The TF reference rebuilt with an unconstrained input size, float32 and float64."""
    config = kind.infer_config({n: v.shape for n, v in variables.items()})
    return {dt: rebuild("classifier", config, dt, variables) for dt in ("float32", "float64")}


def tf_logits(model, x: np.ndarray) -> np.ndarray:
    return model(x.astype(model.dtype), training=False).numpy()


def pt_logits(module: nn.Module, x: np.ndarray) -> np.ndarray:
    p = next(module.parameters(), None)  # a frozen module holds its weights as constants
    dtype = torch.float32 if p is None else p.dtype
    with torch.no_grad():
        return module(torch.from_numpy(x.transpose(0, 3, 1, 2)).to(dtype)).numpy()


# ----------------------------------------------------------------- the inputs are not degenerate

def test_reference_weights_exercise_every_hazard(variables):
    bn = [n[: -len("/moving_variance:0")] for n in variables if n.endswith("/moving_variance:0")]
    assert len(bn) == 27
    var = np.concatenate([variables[f"{b}/moving_variance:0"] for b in bn])
    mean = np.concatenate([variables[f"{b}/moving_mean:0"] for b in bn])
    gamma = np.concatenate([variables[f"{b}/gamma:0"] for b in bn])
    beta = np.concatenate([variables[f"{b}/beta:0"] for b in bn])
    assert np.mean(var < 5e-3) > 0.05, "too few channels with variance near 1e-3: a wrong epsilon would hide"
    assert np.mean(np.abs(var - 1) > 0.2) > 0.5, "moving variances near 1"
    assert np.mean(np.abs(mean) > 0.05) > 0.5, "moving means near 0"
    assert np.std(gamma) > 0.2 and np.mean(np.abs(beta) > 0.05) > 0.5, "gamma/beta near 1/0"
    assert np.all(np.abs(variables["conv_preds/bias:0"]) > 1e-3), "head bias is zero"


def test_logits_vary_across_inputs(classifier_weights):
    module = models_pt.load(classifier_weights)
    x = sample_images(8, 256, seed=11)
    check_inputs(x)
    logits = pt_logits(module, x)
    spread = float(logits.std(axis=0).min())
    assert spread > 1e3 * TOL32, f"logits spread {spread:.2e} across images: parity on them proves little"
    assert np.unique(logits.argmax(1)).size == 2, "every image gets the same class"


# ----------------------------------------------------------------- parity

def test_per_layer_parity_float32(classifier_zip, classifier_weights):
    with open_checkpoint(classifier_zip) as ck:
        report = verify_checkpoint(ck, classifier_weights, "float32", num_images=4)
    assert len(report.layers) >= 80, "every activation must be compared, not only the output"
    failed = [(r.name, r.port_error, r.model_error, r.score64) for r in report.layers if not r.passed]
    assert not failed, f"layers not exact or far above the rounding model's error: {failed[:5]}"
    assert all(r.tf_error is not None and r.model_error > 0 and r.score64 is not None for r in report.layers)
    assert report.savedmodel is not None and report.savedmodel["passed"], \
        "the rebuilt TF model must equal the SavedModel the notebook loads"
    assert report.passed


def test_per_layer_parity_float64(classifier_zip, classifier_weights):
    with open_checkpoint(classifier_zip) as ck:
        report = verify_checkpoint(ck, classifier_weights, "float64", num_images=3)
    assert report.passed, [(r.name, r.max_abs_diff) for r in report.layers if not r.passed][:5]
    assert report.output["max_abs_diff"] <= 1e-9 * max(1.0, report.output["ref_max_abs"])


@pytest.mark.parametrize("size", [256, 255, 224, 97, 64, 33, 32])
def test_end_to_end_any_input_size(size, tf_any_size, classifier_weights):
    """TF 'same' padding must be reproduced for every size, odd ones included."""
    x = sample_images(8, size, seed=size)
    check_inputs(x)
    from porting.rounding import simulate

    module = models_pt.load(classifier_weights)
    module64 = models_pt.load(classifier_weights).double()
    truth = tf_logits(tf_any_size["float64"], x.astype(np.float64))
    got64, errors = simulate(lambda: {"logits": pt_logits(module64, x.astype(np.float64))}, samples=1)
    row = judge("logits", truth, got64=got64["logits"], got32=pt_logits(module, x),
                tf32=tf_logits(tf_any_size["float32"], x), model_error=errors["logits"])
    assert row.exact, f"{size}px float64: {row.diff64:.2e}"
    assert row.fit32, f"{size}px float32: port error {row.port_error:.2e}, the model's {row.model_error:.2e}"


# ----------------------------------------------------------------- negative controls
# Each deliberately wrong port must be caught by the same comparison, by a wide margin.

# The deliberately wrong ports of porting/controls.py that are structural (not a float32-only
# precision fault): each must fail the float64 verdict, at an odd 97 px, and at the release's
# 256 px those that are an error at even sizes only (test_verdict runs them all at 32 and 33 px).
_AT_97 = [c for c in controls.for_kind("classifier", 97) if not c.float32_only]
STRUCTURAL = {97: _AT_97, 256: [c for c in controls.for_kind("classifier", 256)
                                if not c.float32_only and c.name not in {x.name for x in _AT_97}]}


def _exact_row(tf_any_size, module: nn.Module, size: int):
    """The float64 verdict on the logits of 3 images: TF's float64 rebuild against ``module`` in float64."""
    x = sample_images(3, size, seed=7)
    check_inputs(x)
    truth = tf_logits(tf_any_size["float64"], x.astype(np.float64))
    return judge("logits", truth, got64=pt_logits(copy.deepcopy(module).double(), x.astype(np.float64)))


@pytest.mark.parametrize("size,control", [(s, c) for s, cs in STRUCTURAL.items() for c in cs],
                         ids=lambda v: v.name if hasattr(v, "name") else str(v))
def test_control_fails_the_float64_verdict(size, control, tf_any_size, classifier_weights):
    module = models_pt.load(classifier_weights)
    assert _exact_row(tf_any_size, module, size).exact, "the correct port must pass first"
    with controls.broken(control, module) as bad:
        row = _exact_row(tf_any_size, bad, size)
    assert row.exact is False, f"{control.name} at {size} px: float64 score {row.score64:.2e}"


def test_control_transposed_wrong_kernel(classifier_zip, tf_any_size):
    """A rule that swaps the kernel's spatial axes ([out, in, kw, kh]) still fits every shape;
    only the comparison can catch it."""
    wrong = [mapping.Rule(r.target, r.source, [lambda a: a.transpose(3, 2, 1, 0)], note="wrong")
             if r.transform == ["conv_kernel"] else r for r in kind.RULES]
    with open_checkpoint(classifier_zip) as ck:
        config = kind.infer_config(ck.shapes)
        module = CLASSIFIER.module_class()(**config)
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        plan = mapping.plan(wrong, shapes, ck.names)
        state = mapping.apply(plan, {a.tf_name: ck.read(a.tf_name) for a in plan.assignments if a.tf_name},
                              shapes)
    own = module.state_dict()
    module.load_state_dict({k: torch.from_numpy(state.get(k, own[k].numpy())) for k in own})
    module.eval()
    assert _exact_row(tf_any_size, module, 256).exact is False


def test_control_corrupted_tensor_fails_verify(classifier_zip, classifier_weights, tmp_path):
    """verify itself (not only these tests) must report a failure for a wrong weight."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(classifier_weights), "pt") as f:
        meta = f.metadata()
    state = load_file(str(classifier_weights))
    state["blocks.6.pw.weight"] = state["blocks.6.pw.weight"] * 1.01
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=meta)
    with open_checkpoint(classifier_zip) as ck:
        report = verify_checkpoint(ck, bad, "float32", num_images=2)
    assert not report.passed
    first_bad = next(r.name for r in report.layers if not r.passed)
    assert first_bad == "conv_pw_7", f"the first failing layer should be the corrupted one, got {first_bad}"


FOLDED_TOL32 = 2e-5  # folding reorders the float32 arithmetic: ~1e-5 from TF, 4e-6 from the readable module


def _freeze_temp_dirs(folder) -> set:
    from pathlib import Path

    return set(Path(folder).glob("freeze_for_inference-*"))


@pytest.fixture(scope="module")
def deployment_forms(classifier_weights, tmp_path_factory):
    """The readable module, its two deployment forms, and the temp folders the frozen form's
    AOTInductor build left behind (none expected). The frozen form is built for batch 4; the
    tests' batch 1 makes it build again, on first use."""
    from models_pt.inference import freeze_for_inference, optimize_for_inference

    import tempfile

    module = models_pt.load(classifier_weights)
    example = torch.zeros(4, 3, 256, 256)
    # A temp folder of this build's own: another process building at the same time (a second
    # test run, a benchmark) must not look like a folder this build left behind.
    private, saved = tmp_path_factory.mktemp("freeze_tmp"), tempfile.tempdir
    tempfile.tempdir = str(private)
    try:
        forms = {"optimized": optimize_for_inference(module), "frozen": freeze_for_inference(module, example)}
    finally:
        tempfile.tempdir = saved
    return module, forms, _freeze_temp_dirs(private)


@pytest.mark.parametrize("form", ["optimized", "frozen"])
def test_deployment_forms_still_match_tf(tf_any_size, deployment_forms, form):
    """The deployment forms (BatchNorm folded, padding absorbed, channels-last; then frozen for
    oneDNN) stay within their own documented bar, at batch 1 and 4."""
    from models_pt.inference import SameConvInference

    module, forms, _ = deployment_forms
    fast = forms[form]
    if form == "optimized":
        assert not any(isinstance(m, (nn.BatchNorm2d, nn.ZeroPad2d)) for m in fast.modules())
        assert any(isinstance(m, SameConvInference) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in module.modules()), "original left untouched"
    x = sample_images(4, 256, seed=21)
    check_inputs(x)
    want = tf_logits(tf_any_size["float32"], x)
    for n in (1, 4):
        diff = float(np.abs(want[:n] - pt_logits(fast, x[:n])).max())
        assert diff <= FOLDED_TOL32, f"{form} module, batch {n}: {diff:.2e}"
    with torch.no_grad():
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        assert float((fast(xt) - module(xt)).abs().max()) <= FOLDED_TOL32


def test_frozen_form_refuses_another_image_size(deployment_forms):
    _, forms, _ = deployment_forms
    with pytest.raises(ValueError, match=r"compiled for torch.float32 CPU images of shape \[N, 3, 256, 256\]"):
        forms["frozen"](torch.zeros(1, 3, 255, 255))
    with pytest.raises(ValueError, match=r"got torch.float64"):
        forms["frozen"](torch.zeros(1, 3, 256, 256, dtype=torch.float64))


def test_frozen_form_builds_per_batch_size_takes_any_layout_and_leaves_no_files(deployment_forms):
    """The AOTInductor build assumes its example's batch size and NCHW layout: another batch
    size gets its own build, a channels-last tensor the same logits; the packages' temp
    folders are gone once loaded."""
    module, forms, left = deployment_forms
    frozen = forms["frozen"]
    assert left == set(), f"temp folders left behind: {left}"
    x = torch.from_numpy(sample_images(1, 256, seed=22).transpose(0, 3, 1, 2).copy()).float()
    with torch.no_grad():
        want = module(x)
        got = frozen(x)
        got_cl = frozen(x.contiguous(memory_format=torch.channels_last))
    assert frozen.batch_sizes == [1, 4]
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= FOLDED_TOL32
    assert float((got_cl - want).abs().max()) <= FOLDED_TOL32


def test_frozen_form_without_a_compiler_says_so(classifier_weights, monkeypatch):
    import torch._inductor.config as inductor_config

    from models_pt.inference import freeze_for_inference

    with pytest.raises(ValueError, match="builds a float32 CPU form; the example is torch.float64"):
        freeze_for_inference(models_pt.load(classifier_weights), torch.zeros(1, 3, 256, 256, dtype=torch.float64))
    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "/nonexistent/g++"))
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler \(looked for /nonexistent/g\+\+"):
        freeze_for_inference(models_pt.load(classifier_weights), torch.zeros(1, 3, 256, 256))


def test_inference_forms_do_not_use_torch_jit():
    """torch 2.13 marks torch.jit deprecated: the deployment forms are built on torch.export."""
    from pathlib import Path

    import models_pt.inference as inference

    assert "torch.jit" not in Path(inference.__file__).read_text()


def test_absorbed_padding_any_size_and_negative_control(tf_any_size, classifier_weights, monkeypatch):
    """Odd sizes take the symmetric branch of 'same' padding, even ones the zero-led kernel; a
    zero row and column put after the kernel instead of in front (the window shifted by one
    pixel) must fail the bar."""
    import torch.nn.functional as F

    import models_pt.inference as inference

    module = models_pt.load(classifier_weights)
    for size in (255, 256):
        x = sample_images(2, size, seed=size)
        diff = float(np.abs(pt_logits(module, x) - pt_logits(inference.optimize_for_inference(module), x)).max())
        assert diff <= FOLDED_TOL32, f"{size} px: {diff:.2e}"
    monkeypatch.setattr(inference, "lead_with_zeros", lambda w: F.pad(w, (0, 1, 0, 1)))
    x = sample_images(4, 256, seed=21)
    diff = float(np.abs(tf_logits(tf_any_size["float32"], x) - pt_logits(inference.optimize_for_inference(module), x)).max())
    assert diff > 100 * FOLDED_TOL32, f"a shifted window went unnoticed: {diff:.2e}"
