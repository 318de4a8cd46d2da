"""verify's verdict: float32 error measured against a float64 run of the same weights, not a
fixed bar. Unit checks of the rule, then a representative part of ``bench/verdict_sweep.py``:
reference releases built with seeds the project's figures were not taken on, where the correct
port must pass and every negative control of ``porting.controls`` must fail, the small ones
included (in float64 always; in float32 those the sweep shows float32 can see)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
import models_pt
from porting import controls
from porting.readers import open_checkpoint
from crosscheck.verify import tf_reference
from porting.verify import EPS32, RULE, judge

# ----------------------------------------------------------------- the rule itself


def _rounded(truth: np.ndarray, rng, ulps: float) -> np.ndarray:
    """``truth`` with float32-like rounding noise of about ``ulps`` units in the last place."""
    return (truth * (1 + ulps * EPS32 * rng.uniform(-1, 1, truth.shape))).astype(np.float32)


def test_rule_passes_rounding_noise_and_fails_far_above_it():
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 30, (8, 64))
    tf, pt = _rounded(truth, rng, 50), _rounded(truth, rng, 50)
    row = judge("x", tf, pt, truth)
    assert row.passed and 0.3 < row.ratio < 3, row
    assert row.tf_error > 0 and row.port_error > 0 and row.max_abs_diff > 0
    wrong = pt + 50 * row.tf_error * (rng.random(pt.shape) < 0.01)
    bad = judge("x", tf, wrong, truth)
    assert not bad.passed and bad.score > 5
    # The same relative noise at any scale gives the same verdict: no absolute bar anywhere.
    for scale in (1e-6, 1e6):
        assert judge("x", tf * scale, pt * scale, truth * scale).passed
        assert not judge("x", tf * scale, wrong * scale, truth * scale).passed


def test_rule_floor_for_exactly_representable_activations():
    """TF may compute an activation exactly (a ReLU6 stuck at 6, a zero pad): its own error is 0,
    and a port a few ulps away must still pass; one 100 ulps away must not."""
    truth = np.full((4, 16), 6.0)
    tf = truth.astype(np.float32)
    near = np.nextafter(tf, np.float32(0)).astype(np.float32)           # 1 ulp below
    assert judge("relu6", tf, near, truth).passed
    far = (truth * (1 - 100 * EPS32)).astype(np.float32)
    assert not judge("relu6", tf, far, truth).passed
    assert judge("zeros", np.zeros(5, np.float32), np.zeros(5, np.float32), np.zeros(5)).passed
    assert not judge("zeros", np.zeros(5, np.float32), np.full(5, 1e-30, np.float32), np.zeros(5)).passed


def test_rule_symmetric_when_the_truth_comes_from_the_candidate():
    """The AttFind effects and ONNX are judged against the port's own float64 run: a wrong port
    then sits close to its truth, and only the trusted side's error shows it."""
    rng = np.random.default_rng(1)
    wrong_truth = rng.normal(0, 1, 100)
    candidate = _rounded(wrong_truth, rng, 4)
    trusted = _rounded(wrong_truth + 1e-3, rng, 4)        # what a correct model computes
    assert judge("e", trusted, candidate, wrong_truth).passed                  # one-sided: fooled
    assert not judge("e", trusted, candidate, wrong_truth, symmetric=True).passed


def test_rule_float64_and_shapes():
    a = np.linspace(-3, 3, 50)
    assert judge("x", a, a + 1e-12).passed and not judge("x", a, a + 1e-8).passed
    assert not judge("x", a, a[:-1]).passed
    assert not judge("x", a.astype(np.float32), np.full(50, np.nan, np.float32), a).passed


# ----------------------------------------------------------------- releases built with other seeds

SEEDS = [7, 11]          # seed 7 is the release the issue found the classifier "FAILED" on
RESOLUTION = 32
# Small controls float32 catches on every release of the sweep (README, "How the port is
# checked"); the others are left to the float64 run.
FLOAT32_SEES = {("classifier", "bn_eps_1.001e-3"), ("classifier", "kernel_channel_1.001"),
                ("generator", "kernel_channel_1.001")}


@pytest.fixture(scope="module", params=SEEDS)
def release(request, tmp_path_factory):
    """make-reference --seed S (no AttFind sweep) at 32 px, then convert the folder: what a new
    user runs."""
    seed = request.param
    ref = tmp_path_factory.mktemp(f"seed{seed}") / "release"
    weights = ref.parent / "weights"
    runner = CliRunner()
    made = runner.invoke(cli.main, ["make-reference", "--out", str(ref), "--seed", str(seed), "--resolution",
                                    str(RESOLUTION), "--num-dlatents", "8", "--no-attfind"])
    assert made.exit_code == 0, made.output
    conv = runner.invoke(cli.main, ["convert", "--tf-ckpt", str(ref), "--out", str(weights)])
    assert conv.exit_code == 0, conv.output
    return seed, ref, weights


def test_verify_passes_on_a_release_built_with_another_seed(release, tmp_path):
    seed, ref, weights = release
    result = CliRunner().invoke(cli.main, ["verify", "--tf-ckpt", str(ref), "--weights", str(weights),
                                           "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["passed"]
    for m in report["models"]:
        rows = m["layers"]
        assert all(r["tf_error"] is not None and r["ratio"] is not None for r in rows), m["model"]
        assert max(r["score"] for r in rows) <= 1
        print(f"seed {seed} {m['model']}: worst ratio {max(r['ratio'] for r in rows):.2f}")


def test_one_generator_zip_takes_the_dlatents_beside_it(release):
    """verify on one released zip (not the folder) still feeds the generator the release's own
    dlatents, and says so."""
    _, ref, weights = release
    result = CliRunner().invoke(cli.main, ["verify", "--tf-ckpt", str(ref / "generator.savedmodel.zip"),
                                           "--weights", str(weights / "generator.safetensors")])
    assert result.exit_code == 0, result.output
    assert f"8 dlatents from {ref.resolve() / 'dlatents.pkl'}" in result.output


def test_round_trip_reuses_the_models_verify_built(release):
    """verify on a folder hands the round trip the SavedModels and float64 rebuilds its per-model
    checks built (nothing read or built twice); the figures equal a round trip that builds its own."""
    from crosscheck.verify import round_trip, verify_checkpoint

    _, ref, weights = release
    manifest = json.loads((weights / "manifest.json").read_text())
    built = {}
    for stem in ("encoder", "mobilenet", "generator"):
        entry, built[stem] = manifest["models"][stem], {}
        with open_checkpoint(ref / entry["source"]) as ck:
            verify_checkpoint(ck, weights / entry["weights"], tf_models=built[stem])
        assert set(built[stem]) == {"savedmodel", "float64"}
    reused, own = round_trip(ref, weights, manifest, tf_models=built), round_trip(ref, weights, manifest)
    assert reused.passed and own.passed
    for a, b in zip(reused.layers, own.layers):
        assert (a.max_abs_diff, a.tf_error, a.port_error) == (b.max_abs_diff, b.tf_error, b.port_error)


def test_generator_inputs_without_any_dlatents_file(monkeypatch, tmp_path):
    """A clone without shared/ verifying one generator zip: seeded Gaussian dlatents, not a crash,
    and the report's input source says so."""
    from porting.kinds import generator as vg

    monkeypatch.setattr(vg, "RELEASED_DLATENTS", tmp_path / "absent.pkl")
    config = {"w_dim": 514, "label_size": 2}
    assert vg.input_source(None) == vg.GAUSSIAN == vg.input_source(tmp_path / "also_absent.pkl")
    w = vg.make_inputs(config, 8, 64, 0)
    vg.check_inputs(w)
    assert w.shape == (8, 514) and np.allclose(w[:, 512:].sum(1), 1)   # label probabilities
    np.testing.assert_array_equal(w, vg.make_inputs(config, 8, 64, 0))  # seeded


def _judge_all(ref_dir, weights, stem, size=None):
    entry = json.loads((weights / "manifest.json").read_text())["models"][stem]
    header = models_pt.read_header(weights / entry["weights"])
    module = models_pt.load(weights / entry["weights"])
    out = {}
    for dtype, n in (("float32", 8), ("float64", 4)):
        with open_checkpoint(ref_dir / entry["source"]) as ck:
            ref = tf_reference(ck, header["kind"], header["config"], dtype, n, size)
        out[dtype] = controls.judge_with_controls(ref, module)
    return header["kind"], out


@pytest.mark.parametrize("stem,size", [("mobilenet", None), ("mobilenet", 33), ("generator", None),
                                       ("encoder", None), ("discriminator", None)])
def test_every_negative_control_fails_and_the_port_passes(release, stem, size):
    seed, ref, weights = release
    kind, reports = _judge_all(ref, weights, stem, size)
    small = {c.name for c in controls.CONTROLS if c.small}
    for dtype, by_control in reports.items():
        assert by_control["correct"].passed, (dtype, by_control["correct"].worst())
        for name, report in by_control.items():
            if name == "correct":
                continue
            score = report.worst().score
            must = name not in small or dtype == "float64" or (kind, name) in FLOAT32_SEES
            print(f"seed {seed} {kind}{'@' + str(size) if size else ''} {dtype} {name}: score {score:.3g}")
            if must:
                assert not report.passed, f"{kind} {dtype}: control {name} passes (score {score:.3g})"
                assert report.first_failure is not None


def test_a_classifier_written_by_someone_else(tmp_path):
    """keras.applications' own MobileNet (alpha 0.5, 96 px), not our reference builder: converted
    and verified through the CLI, the verdict passes it, and a small error still fails it."""
    import tf_keras as keras

    from crosscheck.reference_release import save_savedmodel_zip
    from porting.samples import sample_images

    rng = np.random.default_rng(5)
    model = keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.5, weights=None, classes=2,
                                         classifier_activation=None)
    x = sample_images(16, 96, seed=1)
    for layer in model.layers:   # Keras' 0/1 statistics would hide a wrong epsilon: take real ones
        if isinstance(layer, keras.layers.BatchNormalization):
            feats = keras.Model(model.input, layer.input)(x, training=False).numpy()
            c = feats.shape[-1]
            mean, var = feats.reshape(-1, c).mean(0), feats.reshape(-1, c).var(0) + 1e-4
            layer.set_weights([rng.uniform(0.6, 1.4, c), rng.normal(0.2, 0.2, c), mean,
                               var * rng.uniform(0.7, 1.3, c)])
    head = model.get_layer("conv_preds")
    head.set_weights([head.get_weights()[0], rng.uniform(0.1, 0.5, 2)])   # a bias that is not 0
    zipped = save_savedmodel_zip(model, tmp_path / "mobilenet.savedmodel.zip", "mobilenet.savedmodel")
    weights = tmp_path / "mobilenet.safetensors"
    runner = CliRunner()
    assert runner.invoke(cli.main, ["convert", "--tf-ckpt", str(zipped), "--out", str(weights)]).exit_code == 0
    result = runner.invoke(cli.main, ["verify", "--tf-ckpt", str(zipped), "--weights", str(weights),
                                      "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["passed"] and len(report["layers"]) == 90
    with open_checkpoint(zipped) as ck:
        ref = tf_reference(ck, "classifier", models_pt.read_header(weights)["config"])
    by_name = {c.name: c for c in controls.CONTROLS}
    with controls.broken(by_name["bn_eps_1.001e-3"], models_pt.load(weights)) as wrong:
        from porting.verify import judge_module

        assert not judge_module(ref, wrong).passed
