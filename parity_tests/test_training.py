"""verify --train: the port trains as TF does.

On releases of other seeds than the demo's (conftest's ``release``: seeds 7 and 11, 32 px), for
every model kind: TF's training step on its rebuild (``crosscheck.train_check``) against the port's
(``porting.train_check``), judged by verify's rule (exact in float64, float32 within the rounding
model's bound), with every training control (``porting.controls.TRAIN_CONTROLS``) failing: ports
whose inference pass is exact and whose training is not. Then Keras' Adam against
``models_pt.training.KerasAdam`` and ``torch.optim.Adam`` over 3 steps, BatchNorm's two moving-
variance rules in TF, the minibatch standard deviation at other batch sizes, the generator's
training noise, and the CLI."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import models_pt
from conftest import SEEDS, run_cli
from crosscheck import train_check as tft
from porting import controls
from porting import branches as pinned
from porting import train_check as ptt
from porting.readers import open_checkpoint
from porting.verdict import judge

STEMS = ["mobilenet", "encoder", "discriminator", "generator"]


def _load(release, stem):
    seed, ref, weights = release
    with open_checkpoint(ref / f"{stem}.savedmodel.zip") as ck:
        variables = ck.read_all()
    return seed, models_pt.load(weights / f"{stem}.safetensors"), variables


# Exactly zero by the mathematics: the discriminator is piecewise linear after its minibatch
# standard deviation, so its input gradient does not depend on the biases there; a ToRGB bias
# adds a constant to the image, which no Jacobian with respect to w sees.
STRUCTURAL_ZEROS = {"r1 grad conv4.bias", "r1 grad dense4.bias", "r1 grad out.bias"} | {
    f"path length grad torgbs.b{4 * 2 ** i}.bias" for i in range(8)}


def _check_not_degenerate(kind, pt, inputs, truth):
    """Every parameter has a gradient row, and no compared quantity is all zeros but those the
    mathematics makes zero (where TF and the port must both give zeros)."""
    params = [k for k, p in pt.named_parameters()]
    assert all(f"grad {k}" in truth for k in params), [k for k in params if f"grad {k}" not in truth][:3]
    dead = {k for k, v in truth.items() if not np.any(v)}
    assert dead <= STRUCTURAL_ZEROS, f"all-zero quantities (a check that could not fail): {sorted(dead)[:5]}"
    if kind == "discriminator":
        assert all(f"r1 grad {k}" in truth for k in params)
    if kind == "generator":
        assert all(f"path length grad {k}" in truth for k in params)
        assert float(np.std(truth["output"])) > 0.05, "generated images nearly constant"


# The classifier's training check runs three times on seed 7's release, on the same inputs: below,
# the port and its controls; then the CLI's verify --train of the port and of a corrupted copy
# (--seed 7). TF's quantities and the rounding model's errors of the correct port are the same
# each time: ``once`` computes each of them once per test run (about 30 s of work).
ONCE: dict = {}


def _digest(value) -> str:
    h = hashlib.sha256()

    def add(v):
        if isinstance(v, dict):
            for k in sorted(v):
                h.update(str(k).encode())
                add(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                add(x)
        else:
            a = np.ascontiguousarray(v.detach().numpy() if isinstance(v, torch.Tensor) else v)
            h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes())
    add(value)
    return h.hexdigest()


def tf_adam_steps(kind: str, model, inputs: dict, dtype: str, pt_module, steps: int = ptt.ADAM_STEPS,
                  settings: dict | None = None) -> dict[str, np.ndarray]:
    """``steps`` steps of ``tf_keras.optimizers.Adam`` (StyleGAN2's settings by default) on the
    loss ``sum(output * upstream)`` of the same batch, TF's rebuild in training mode; returns every
    variable after them, in PyTorch's layout and names (for this file's Adam test alone)."""
    import tensorflow as tf
    import tf_keras as keras

    from models_pt.training import STYLEGAN2_ADAM

    settings = dict(settings or STYLEGAN2_ADAM)
    opt = keras.optimizers.Adam(learning_rate=settings["lr"], beta_1=settings["betas"][0],
                                beta_2=settings["betas"][1], epsilon=settings["eps"])

    def c(a):
        return tf.constant(np.asarray(a).astype(dtype))

    upstream = c(inputs["upstream"])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            if kind == "generator":
                w = model.generator_mapping((c(inputs["z"]), c(inputs["labels"])))
                y = model.g_synthesis.run(model.style_vector_calculator(w), noise=[c(a) for a in inputs["noise"]])
            elif kind == "discriminator":
                y = model((c(inputs["images"]), c(inputs["labels"])), training=True)
            else:
                y = model(c(inputs["images"]), training=True)
            loss = tf.reduce_sum(y * upstream)
        variables = model.trainable_variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    # (a float64 classifier's moving variance took Keras' non-fused, biased updates: compare the
    # parameters; the statistics after a step are the training check's)
    values = {v.name: v.numpy() for v in model.variables}
    return ptt.tf_to_pt(kind, values, tft._shapes(model), pt_module, gradients=False)


@pytest.fixture
def once(monkeypatch):
    """``crosscheck.train_check.tf_quantities`` and ``porting.train_check.model_errors`` of a classifier,
    each computed once per test run for the same weights and inputs (keyed by their digests).
    The key holds what these callers vary: TF's variables, the module's ``state_dict``, the inputs,
    the dtype and the samples. A module that differs only in something outside its ``state_dict``
    (a control that swaps a method, say) would get the correct port's rounding errors back: the
    training controls are judged with those anyway (``judge_training_controls``)."""
    tf_real, errors_real = tft.tf_quantities, ptt.model_errors

    def memo(key, compute):
        if key not in ONCE:
            ONCE[key] = compute()
        return ONCE[key]

    def tf_quantities(kind, model, inputs, dtype, pt):
        if kind != "classifier":
            return tf_real(kind, model, inputs, dtype, pt)
        key = ("tf", dtype, _digest(inputs), _digest([v.numpy() for v in model.variables]))
        return memo(key, lambda: tf_real(kind, model, inputs, dtype, pt))

    def model_errors(kind, module64, inputs, samples=None, clean=None, branches=None):
        if kind != "classifier":
            return errors_real(kind, module64, inputs, samples, clean, branches)
        key = ("errors", samples, _digest(inputs), _digest(module64.state_dict()))
        return memo(key, lambda: errors_real(kind, module64, inputs, samples, clean, branches))

    monkeypatch.setattr(tft, "tf_quantities", tf_quantities)
    monkeypatch.setattr(ptt, "model_errors", model_errors)


@pytest.fixture
def counted(monkeypatch) -> list:
    """The two functions ``once`` wraps, replaced by stand-ins that count their calls."""
    calls = []
    monkeypatch.setattr(tft, "tf_quantities", lambda kind, *a: calls.append(kind) or {"call": len(calls)})
    monkeypatch.setattr(ptt, "model_errors", lambda kind, *a: calls.append(kind) or ({}, {"call": len(calls)}))
    return calls


def test_once_is_keyed_by_the_weights_and_the_inputs(counted, once):
    """The same weights and inputs give the first result back; other inputs, another dtype, other
    weights are computed again, and so is every other kind. (``counted`` comes first in the
    arguments: pytest sets it up first, so ``once`` wraps the counting stand-ins.)"""
    class Variable:      # what the memo reads of a TF variable
        def __init__(self, value):
            self.value = value

        def numpy(self):
            return self.value

    class Model:
        variables = [Variable(np.zeros(3))]

    model, module = Model(), torch.nn.Linear(2, 1)
    a, b = {"images": np.zeros((4, 2))}, {"images": np.ones((4, 2))}
    first = tft.tf_quantities("classifier", model, a, "float32", None)
    assert tft.tf_quantities("classifier", model, {"images": np.zeros((4, 2))}, "float32", None) is first
    assert tft.tf_quantities("classifier", model, b, "float32", None) is not first
    assert tft.tf_quantities("classifier", model, a, "float64", None) is not first
    model.variables[0].value = np.ones(3)
    assert tft.tf_quantities("classifier", model, a, "float32", None) is not first
    assert tft.tf_quantities("encoder", model, a, "float32", None) is not tft.tf_quantities("encoder", model, a,
                                                                                            "float32", None)
    errors = ptt.model_errors("classifier", module, a)
    assert ptt.model_errors("classifier", module, a) is errors
    with torch.no_grad():
        module.weight.add_(1.0)
    assert ptt.model_errors("classifier", module, a) is not errors
    assert len(counted) == 8


@pytest.mark.parametrize("stem", STEMS)
def test_training_check_passes_and_every_training_control_fails(release, stem, once):
    """Both verdicts on the first seed; on the second, the float64 verdict (the rounding model's
    simulations of the encoder's and discriminator's second-order passes cost minutes each)."""
    seed, pt, variables = _load(release, stem)
    kind = pt.kind
    inputs = ptt.train_inputs(kind, pt.config, seed=seed)
    truth = tft.tf_quantities(kind, tft.rebuild(kind, pt.config, "float64", variables), inputs, "float64", pt)
    tf32 = tft.tf_quantities(kind, tft.rebuild(kind, pt.config, "float32", variables), inputs, "float32", pt) \
        if seed == SEEDS[0] else None
    _check_not_degenerate(kind, pt, inputs, truth)
    reports = ptt.judge_training_controls(kind, truth, tf32, pt, inputs)
    correct = reports.pop("correct")
    worst = correct.worst()
    assert correct.passed, (correct.first_failure, worst.name, worst.score, correct.worst64().score64)
    assert correct.exact and correct.worst64().score64 < 0.1, correct.worst64()
    assert (correct.fit32 is True) == (tf32 is not None)
    assert set(reports) == {c.name for c in controls.for_training(kind)} and reports
    for name, r in reports.items():
        # each breaks what training computes (a gradient, a statistic, the noise): float64 sees it
        assert not r.passed and r.exact is False, (name, r.worst64().name, r.worst64().score64)


def test_keras_two_moving_variance_rules(release):
    """Keras' BatchNorm updates the moving variance with the unbiased batch variance on its fused
    float32 kernel, with the biased one on the non-fused float64 path. TF's own float32 training
    step sits next to the truth (the fused rule on TF's float64 statistics, what the port is
    held to), and over the layers a median of more than 3 times further from the non-fused rule;
    the non-fused float64 values miss that truth far beyond the rule, and agree on the means."""
    seed, pt, variables = _load(release, "mobilenet")
    if seed != SEEDS[0]:
        pytest.skip("one seed is enough")
    inputs = ptt.train_inputs("classifier", pt.config, seed=seed)
    truth = tft.tf_quantities("classifier", tft.rebuild("classifier", pt.config, "float64", variables), inputs,
                              "float64", pt)
    fused = tft.tf_quantities("classifier", tft.rebuild("classifier", pt.config, "float32", variables), inputs,
                              "float32", pt)
    model = tft.rebuild("classifier", pt.config, "float64", variables)
    model(inputs["images"].astype(np.float64), training=True)
    nonfused = ptt.tf_to_pt("classifier", {v.name: v.numpy() for v in model.variables},
                            {v.name: tuple(v.shape) for v in model.variables}, pt, gradients=False)
    keys = [k for k in truth if k.endswith("running_var")]
    assert len(keys) == 27
    ratios = []
    for key in keys:
        near, far = np.abs(fused[key] - truth[key]).max(), np.abs(fused[key] - nonfused[key]).max()
        ratios.append(far / near)
        assert judge(key, truth[key], got64=nonfused[key]).score64 > 100, key
        mean = key.replace("running_var", "running_mean")
        assert judge(mean, truth[mean], got64=nonfused[mean]).exact, mean
    # The two rules differ by (1 - momentum) x var / (n - 1): least where n is largest (the first
    # layers), where TF's own float32 error can be as large; in most layers far larger. How much
    # larger depends on TF's kernels: a median of 30-55 on Eigen (AVX2), 7.4 on oneDNN (AVX-512).
    # The rule itself is pinned where the rules differ far beyond any rounding: the next test.
    assert np.median(ratios) > 3, sorted(ratios)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_moving_variance_rule_on_one_layer(dtype):
    """One Keras BatchNorm layer, one training step on 3 x 5 x 5 inputs (n = 75 per channel):
    float32 takes the fused kernel and the unbiased batch variance, float64 the non-fused path and
    the biased one. The two rules differ by 0.01 var / 74, thousands of times TF's rounding on
    any kernels."""
    import tf_keras

    x = np.random.default_rng(0).normal(1.0, 2.0, size=(3, 5, 5, 4))
    layer = tf_keras.layers.BatchNormalization(momentum=0.99, dtype=dtype)
    layer(x.astype(dtype), training=True)
    var = x.reshape(-1, 4).var(axis=0)
    rules = {"unbiased": 0.99 + 0.01 * var * 75 / 74, "biased": 0.99 + 0.01 * var}
    got = layer.moving_variance.numpy().astype(np.float64)
    miss = {name: float(np.abs(got - rule).max()) for name, rule in rules.items()}
    expected = "unbiased" if dtype == "float32" else "biased"
    other = "biased" if expected == "unbiased" else "unbiased"
    assert miss[other] > 1e-4 and miss[expected] < 1e-3 * miss[other], miss


@pytest.mark.parametrize("stem", ["encoder", "generator"])
def test_three_adam_steps_keras_rule_and_torch_s_differs(release, stem):
    """3 steps of Keras' Adam (StyleGAN2's settings: beta1 0, beta2 0.99, eps 1e-8) on the same
    loss and batch, for two of the models StylEx trains: ``KerasAdam`` ends where TF does (exact
    in float64, float32 within the bound of the rounding model run over the 3 steps, on the same
    branches); ``torch.optim.Adam`` does not (its epsilon is applied after the bias correction).
    (Not the classifier, which StylEx keeps fixed: Adam's slope at a zero gradient, lr x 0.1 / eps
    = 2e4, multiplies train-mode BatchNorm's float64 gradient differences of ~1e-14 into 0.7 of
    the float64 bound after 3 steps; docs/training.md.)"""
    seed, pt, variables = _load(release, stem)
    if seed != SEEDS[0]:
        pytest.skip("one seed is enough")
    kind = pt.kind
    inputs = ptt.train_inputs(kind, pt.config, seed=seed)
    tf64 = tf_adam_steps(kind, tft.rebuild(kind, pt.config, "float64", variables), inputs, "float64", pt)
    keras64 = ptt.adam_steps(kind, pt, inputs, "float64")
    keras32, ref32, _ = pinned.float32_against_float64(lambda: ptt.adam_steps(kind, pt, inputs, "float32"),
                                                    lambda: ptt.adam_steps(kind, pt, inputs, "float64"))
    torch64 = ptt.adam_steps(kind, pt, inputs, "float64", optimizer="torch")
    _, errors = pinned.model_errors_on_branches(lambda: ptt.adam_steps(kind, pt, inputs, "float64"))
    start = dict(pt.named_parameters())
    moved = [k for k in keras64 if np.abs(keras64[k] - start[k].detach().numpy()).max() > 1e-4]
    assert len(moved) >= len(keras64) // 2, f"only {len(moved)} of {len(keras64)} parameters moved"
    exact = [judge(k, tf64[k], got64=keras64[k]) for k in keras64]
    fit = [judge(k, ref32[k], got32=keras32[k], model_error=errors[k]) for k in keras64]
    bad = [(r.name, r.score64) for r in exact if not r.passed] + [(r.name, r.score) for r in fit if not r.passed]
    assert not bad, bad[:5]
    torch_rows = [judge(k, tf64[k], got64=torch64[k]) for k in torch64]
    assert max(r.score64 for r in torch_rows) > 10, max(r.score64 for r in torch_rows)


def test_minibatch_stddev_at_other_batch_sizes(release):
    seed, pt, variables = _load(release, "discriminator")
    if seed != SEEDS[0]:
        pytest.skip("one seed is enough")
    model = tft.rebuild("discriminator", pt.config, "float64", variables)
    pt64 = ptt.prepare_module(pt).double()
    rng = np.random.default_rng(0)
    size = pt.config["resolution"]
    for n in (2, 4, 8, 12):
        images = rng.normal(0, 0.5, (n, 3, size, size))
        labels = rng.dirichlet(np.ones(2), n)
        want = model((images, labels), training=True).numpy()
        got = pt64(torch.from_numpy(images), torch.from_numpy(labels)).detach().numpy()
        assert judge(f"batch {n}", want, got64=got).exact, n
    with pytest.raises(ValueError, match="not a multiple of its group size 4"):
        pt64(torch.zeros(6, 3, size, size, dtype=torch.float64), torch.zeros(6, 2, dtype=torch.float64))


def test_generator_training_noise(release):
    """Training mode draws fresh per-image noise on both sides (release_facts'
    GENERATOR_TRAIN_NOISE), inference mode adds the stored constants; given noise is used as given
    (the training check feeds both sides the same)."""
    seed, pt, variables = _load(release, "generator")
    if seed != SEEDS[0]:
        pytest.skip("one seed is enough")
    z = torch.randn(2, pt.config["z_dim"])
    labels = torch.full((2, pt.config["label_size"]), 0.5)
    with torch.no_grad():
        assert torch.equal(pt.sample(z, labels), pt.sample(z, labels))          # eval: constants
        pt.train()
        a, b = pt.sample(z, labels), pt.sample(z, labels)
        assert (a - b).abs().max() > 1e-3                                        # fresh noise each call
        noise = pt.noise_like(2, generator=torch.Generator().manual_seed(0))
        assert torch.equal(pt.sample(z, labels, noise), pt.sample(z, labels, noise))
        pt.eval()
    model = tft.rebuild("generator", pt.config, "float32", variables)
    inputs = (z.numpy(), labels.numpy())
    assert np.array_equal(model(inputs, training=False).numpy(), model(inputs, training=False).numpy())
    assert np.abs(model(inputs, training=True).numpy() - model(inputs, training=True).numpy()).max() > 1e-3


def test_cli_verify_train_passes_and_a_corrupted_tensor_fails(release, once, tmp_path):
    from safetensors.torch import load_file, save_file

    seed, ref, weights = release
    if seed != SEEDS[0]:
        pytest.skip("one seed is enough")
    zip_path, good = ref / "mobilenet.savedmodel.zip", weights / "mobilenet.safetensors"
    report = tmp_path / "train.json"
    ok = run_cli(*["verify", "--train", "--tf-ckpt", str(zip_path), "--weights", str(good), "--seed", seed,
                   "--json", str(report)])
    assert ok.exit_code == 0, ok.output
    data = json.loads(report.read_text())
    assert data["passed"] and data["models"][0]["model"] == "classifier (train)"
    assert "PASSED" in ok.output and "grad blocks.0.dw.weight" in ok.output
    state = load_file(str(good))
    state["blocks.6.pw_bn.weight"] = state["blocks.6.pw_bn.weight"] * 1.001
    bad = tmp_path / "mobilenet.safetensors"
    save_file(state, str(bad), metadata={models_pt.METADATA_KEY: json.dumps(models_pt.read_header(good))})
    failed = run_cli(*["verify", "--train", "--tf-ckpt", str(zip_path), "--weights", str(bad), "--seed", seed])
    assert failed.exit_code == 1 and "FAILED" in failed.output, failed.output[-2000:]


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    """A 32 px release whose encoder and discriminator are 32 channels wide: cheap to train."""
    from crosscheck.reference_release import make_reference
    from porting.release import convert_release

    ref = tmp_path_factory.mktemp("tiny") / "release"
    make_reference(ref, seed=3, resolution=32, num_dlatents=8, channel_max=8, attfind=False, resnet_channel_max=32)
    convert_release(ref, ref.parent / "weights", progress=False)
    return ref, ref.parent / "weights"


def test_finetune_example_trains_exports_and_verifies(tiny_release, tmp_path):
    """examples/finetune.py as a user runs it: the StylEx losses for 20 steps on CPU, the image
    reconstruction of every training image goes down by 10%, the loss curve is drawn, the
    models are exported to TF and converted back into a folder models_pt.load reads, and verify
    --train passes there."""
    import subprocess
    import sys

    ref, weights = tiny_release
    out = tmp_path / "ft"
    # the worker's threads (1 under make test: two threads collapse while the other worker runs)
    run = subprocess.run([sys.executable, "examples/finetune.py", "--weights", str(weights), "--steps", "20",
                          "--out", str(out), "--threads", str(torch.get_num_threads())],
                         capture_output=True, text=True, timeout=600,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((out / "losses.json").read_text())
    assert len(doc["steps"]) == 20
    # every image in eval mode before and after: each step's value is one random batch under fresh
    # noise, and its first and last fifths were within 10% of each other on an AVX-512 machine
    rec = doc["reconstruction, every image, eval mode"]
    assert rec["after"] < 0.9 * rec["before"], rec
    assert (out / "losses.png").stat().st_size > 10_000
    tuned, original = models_pt.load(out / "weights"), models_pt.load(weights)
    moved = {name: max(float((a - b).abs().max()) for a, b in zip(tuned[name].parameters(), original[name].parameters()))
             for name in ("generator", "encoder", "discriminator", "mobilenet")}
    assert moved["mobilenet"] == 0 and min(moved[k] for k in ("generator", "encoder", "discriminator")) > 1e-4, moved
    result = run_cli(*["verify", "--train", "--tf-ckpt", str(out / "release" / "generator.savedmodel.zip"),
                                           "--weights", str(out / "weights" / "generator.safetensors")])
    assert result.exit_code == 0, result.output[-2000:]


def test_export_round_trip_is_exact(tiny_release, tmp_path):
    """crosscheck.export undoes every mapping rule: exported to TF and converted back, every
    tensor of every kind is bit for bit what it was."""
    from safetensors.numpy import load_file

    from crosscheck.export import export_model
    from porting.convert import convert_path

    _, weights = tiny_release
    for stem in ("mobilenet", "generator", "encoder", "discriminator"):
        z = export_model(weights / f"{stem}.safetensors", tmp_path / f"{stem}.savedmodel.zip")
        back, _ = convert_path(z, tmp_path / f"{stem}.safetensors")
        a, b = load_file(str(weights / f"{stem}.safetensors")), load_file(str(back))
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), stem
