"""Training new models: ``train-classifier`` and ``train`` on image folders, resume, torchrun.

The folder here is one nobody tuned for: discs against bars, drawn in random colours, positions
and sizes, at two image sizes, as PNG and as grey JPEG. The models are tiny (32 px, 8 channels)
so each run takes seconds; what is checked is the machinery: what is written, what reads it,
that a killed run resumes to the same bits, and that two processes equal one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from parity_tests.conftest import ROOT, run_cli

TINY = ["--resolution", "32", "--channel-max", "8", "--z-dim", "8", "--mapping-layers", "1", "--batch", "8",
        "--r1-interval", "2", "--pl-interval", "3", "--sample-every", "2", "--checkpoint-every", "2"]


def draw_shapes(root: Path, per_class: int = 24, seed: int = 0) -> Path:
    """discs/ and bars/: PNGs of 40x48 and grey JPEGs of 50x50."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for cls in ("bars", "discs"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            size = (40, 48) if i % 2 else (50, 50)
            im = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 120, 3)))
            d = ImageDraw.Draw(im)
            cx, cy, r = rng.integers(14, 26), rng.integers(14, 26), rng.integers(6, 12)
            colour = tuple(int(c) for c in rng.integers(130, 256, 3))
            if cls == "discs":
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                d.rectangle([cx - r, cy - 3, cx + r, cy + 3], fill=colour)
            if i % 2:
                im.save(root / cls / f"{i:03d}.png")
            else:
                im.convert("L").save(root / cls / f"{i:03d}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return draw_shapes(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def shapes_classifier(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clf")
    r = run_cli("train-classifier", "--data", shapes, "--out", out, "--steps", "60", "--batch", "16", "--seed", "1")
    assert r.exit_code == 0, r.output
    return out


def cli_subprocess(*args, env=None, timeout=300):
    """``cli.py ARGS`` in a fresh process (a kill must not take the test with it)."""
    e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def trainer_state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


def assert_same_state(a, b, where="", exact=True, rtol=0.0):
    """Every tensor of two checkpoint states equal (``exact``) or within ``rtol`` of the larger."""
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if exact:
            assert torch.equal(a, b), f"{where}: differs by {(a.double() - b.double()).abs().max():.3g}"
        else:
            scale = max(1.0, float(a.double().abs().max()))
            assert float((a.double() - b.double()).abs().max()) <= rtol * scale, where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}/{k}", exact, rtol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]", exact, rtol)
    elif exact or not isinstance(a, float):
        assert a == b, f"{where}: {a!r} != {b!r}"


# ---------------------------------------------------------------------- data
def test_image_folder_reads_sizes_greys_and_refuses_bad_folders(shapes, tmp_path):
    from stylex_port.training.data import DataError, load_folder, split

    data = load_folder(shapes, 32)
    assert data.classes == ["bars", "discs"] and data.pixels.shape == (48, 3, 32, 32)
    x = data.images(np.arange(4))
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and float(x.std()) > 0.1   # not degenerate
    grey = data.pixels[0]                       # a JPEG saved grey: its three channels equal
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    train, held = split(data.labels, 0.25, 0)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == 48
    assert set(data.labels[held]) == {0, 1}

    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "b").mkdir()
    (bad / "a" / "x.png").write_bytes(b"\x89PNG not really")
    (bad / "b" / "y.png").write_bytes((shapes / "discs" / "001.png").read_bytes())
    with pytest.raises(DataError, match=r"x\.png: not a readable image"):
        load_folder(bad, 32)
    (bad / "a" / "x.png").unlink()
    with pytest.raises(DataError, match=r"bad/a: class 'a' has no PNG or JPEG"):
        load_folder(bad, 32)
    (bad / "a").rmdir()
    with pytest.raises(DataError, match="only one class"):
        load_folder(bad, 32)
    r = run_cli("train-classifier", "--data", bad, "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0 and "only one class" in r.output
    assert not (tmp_path / "o").exists()


def test_degenerate_classifier_is_refused():
    from stylex_port.training.classifier import degenerate

    labels = np.array([0] * 10 + [1] * 10)
    assert degenerate(np.zeros(20, int), labels, ["8", "9"]) is not None
    assert degenerate(np.array([0] * 19 + [1]), labels, ["8", "9"]) is not None
    assert degenerate(labels.copy(), labels, ["8", "9"]) is None
    assert degenerate(np.zeros(20, int), np.zeros(20, int), ["8", "9"]) is None   # the data is one class


# ---------------------------------------------------------------------- a short run, read back
def test_train_classifier_and_stylex_write_what_every_command_reads(shapes, shapes_classifier, tmp_path):
    import json

    import models_pt
    from models_pt.dlatents import dlatent_matrix, load_dlatents

    info = json.loads((shapes_classifier / "classifier.json").read_text())
    assert info["held_out_images"] == 4 and 0.0 <= info["held_out_accuracy"] <= 1.0
    clf = models_pt.load(shapes_classifier)["mobilenet"]
    assert clf.kind == "classifier" and clf.config["alpha"] == 0.25

    out = tmp_path / "run"
    r = run_cli("train", "--data", shapes, "--classifier", shapes_classifier, "--out", out, "--steps", "4",
                "--seed", "1", *TINY)
    assert r.exit_code == 0, r.output
    models = models_pt.load(out / "weights")
    assert sorted(models) == ["discriminator", "encoder", "generator", "mobilenet"]
    G = models["generator"]
    assert G.config["resolution"] == 32 and G.config["label_size"] == 2
    d = dlatent_matrix(load_dlatents(out / "dlatents.pkl"))
    assert d.shape == (4, 8 + 2) and np.allclose(d[:, -2:].sum(1), 1, atol=1e-5) and d[:, :8].std() > 0
    with torch.no_grad():
        img = G(torch.from_numpy(d))
    assert img.shape == (4, 3, 32, 32) and float(img.std()) > 0
    history = json.loads((out / "losses.json").read_text())
    assert [h["branch"] for h in history] == ["encoder", "mapping"] * 2
    assert "R1" in history[0] and "R1" not in history[1] and "path length" in history[0] and "path length" in history[3]
    assert all(np.isfinite(v) for h in history for k, v in h.items() if k != "branch")
    for f in ("losses.png", "train.json", "samples/step_000002.png", "samples/step_000004.png"):
        assert (out / f).stat().st_size > 0, f
    # AttFind reads the trained folder as it reads a converted release
    r = run_cli("attfind", "--weights", out / "weights", "--dlatents", out / "dlatents.pkl", "--out", tmp_path / "af",
                "--num-indices", "2", "--top", "1", "--examples", "1", "--truth-images", "0")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "af" / "attfind.json").read_text())
    assert doc["effects"]["computed_images"] == 4

    # fine-tuning: --init takes a converted folder's generator, encoder and discriminator (sizes its own)
    r = run_cli("train", "--data", shapes, "--classifier", shapes_classifier, "--out", tmp_path / "ft", "--steps", "2",
                "--init", out / "weights", *TINY[:-4], "--channel-max", "64")
    assert r.exit_code == 0, r.output
    tuned = models_pt.load(tmp_path / "ft" / "weights")["generator"]
    assert tuned.config == G.config                          # the release's sizes, not --channel-max 64
    assert not torch.equal(tuned.const, G.const)             # and it trained
    r = run_cli("train", "--data", shapes, "--classifier", shapes_classifier, "--out", tmp_path / "ft2",
                "--init", out / "weights", "--resolution", "64")
    assert r.exit_code == 2 and "its generator is 32 px" in r.output

    # the same --out again refuses to overwrite the run; a degenerate classifier is refused
    r = run_cli("train", "--data", shapes, "--classifier", shapes_classifier, "--out", out, "--steps", "4", *TINY)
    assert r.exit_code == 2 and "--resume" in r.output
    from stylex_port.training.weights import write_models

    with torch.no_grad():
        clf.head.conv.bias.copy_(torch.tensor([50.0, -50.0]))
    write_models(tmp_path / "bad_clf", {"classifier": clf}, {"by": "test"})
    r = run_cli("train", "--data", shapes, "--classifier", tmp_path / "bad_clf", "--out", tmp_path / "r2", *TINY)
    assert r.exit_code == 2 and "'bars' for 100%" in r.output and "switched off" in r.output, r.output


# ---------------------------------------------------------------------- resume
def test_killed_and_resumed_equals_never_stopped(shapes, shapes_classifier, tmp_path):
    """SIGKILL after step 3 (between checkpoints), and inside the third checkpoint write: each
    resumed run ends with the uninterrupted run's weights, optimizer moments, EMA and random
    state, bit for bit; a kill inside a write leaves the previous checkpoint whole."""
    args = ["train", "--data", shapes, "--classifier", shapes_classifier, "--steps", "6", "--threads", "1", *TINY]
    whole = cli_subprocess(*args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    reference = trainer_state(tmp_path / "whole")
    assert reference["trainer"]["steps_done"] == 6

    for fault, left_at in (("step:3", 2), ("write:3", 4)):
        out = tmp_path / fault.replace(":", "_")
        killed = cli_subprocess(*args, "--out", out, env={"STYLEX_TRAIN_FAULT": fault})
        assert killed.returncode == -9, killed.stderr
        assert trainer_state(out)["trainer"]["steps_done"] == left_at     # the previous checkpoint, whole
        resumed = cli_subprocess(*args, "--out", out, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert f"resuming {out / 'checkpoint.pt'} at step {left_at}" in resumed.stderr
        state, want = trainer_state(out), dict(reference)
        state.pop("seconds"), want.pop("seconds")           # wall time, the one thing that differs
        assert_same_state(state, want, fault)
    # the control: another seed's run is not equal (the comparison can fail)
    other = cli_subprocess(*args, "--out", tmp_path / "other", "--seed", "2")
    assert other.returncode == 0, other.stderr
    with pytest.raises(AssertionError):
        assert_same_state(trainer_state(tmp_path / "other")["trainer"]["G"], reference["trainer"]["G"])


# ---------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_equal_one(shapes, shapes_classifier, tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo) against one process on the same global batch, in
    float64, after 4 steps (both branches, R1 and the path length on their lazy steps): every
    weight, moment and the EMA equal to rounding. A rank killed mid-run fails the job with a
    message, and --resume finishes it to the uninterrupted two-process run's bits."""
    args = ["--data", shapes, "--classifier", shapes_classifier, "--steps", "4", "--dtype", "float64",
            "--threads", "1", *TINY]
    one = cli_subprocess("train", *args, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(ROOT / "cli.py"), "train", *map(str, args)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*torchrun, "--out", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = trainer_state(tmp_path / "one")["trainer"], trainer_state(tmp_path / "two")["trainer"]
    assert a["steps_done"] == b["steps_done"] == 4
    assert float(a["pl_mean"]) > 0
    for part in ("G", "E", "D", "G_ema", "opt_g", "opt_d", "pl_mean"):
        assert_same_state(a[part], b[part], part, exact=False, rtol=1e-9)
    # the control: a half batch on one process (what a rank alone sees) is not the same run
    half = cli_subprocess("train", *args, "--out", tmp_path / "half", "--batch", "4")
    assert half.returncode == 0, half.stderr
    with pytest.raises(AssertionError):
        assert_same_state(trainer_state(tmp_path / "half")["trainer"]["G"], a["G"], exact=False, rtol=1e-9)

    # rank 1 killed after step 3: the job fails, --resume (two processes again) finishes it
    env_kill = {**env, "STYLEX_TRAIN_FAULT": "step:3", "STYLEX_TRAIN_FAULT_RANK": "1"}
    killed = subprocess.run([*torchrun, "--out", str(tmp_path / "killed")], cwd=ROOT, env=env_kill,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0
    # rank 0 hears of it from torchrun's SIGTERM or from its next all-reduce, whichever comes first
    assert ("torchrun stops every process" in killed.stderr or "lost the other processes" in killed.stderr), \
        killed.stderr[-2000:]
    assert "--resume" in killed.stderr
    resumed = subprocess.run([*torchrun, "--out", str(tmp_path / "killed"), "--resume"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = trainer_state(tmp_path / "killed")["trainer"]
    for part in ("G", "E", "D", "G_ema", "opt_g", "opt_d", "pl_mean"):
        assert_same_state(c[part], b[part], part)


# ---------------------------------------------------------------------- the step against TF
def test_stylex_step_against_tf_float64_and_its_controls(shapes, shapes_classifier):
    """Four StylEx steps written again in TF (``crosscheck.stylex_step``) on the same weights and
    draws: the encoder branch with R1 and the path length (step 0), the mapping branch (1), the
    encoder branch with R1 (2), the mapping branch with the path length (3). Every loss term,
    gradient, updated weight, the EMA generator and the path-length mean are exact by the
    float64 rule; each deliberately wrong trainer fails it."""
    pytest.importorskip("tensorflow")
    import models_pt
    from crosscheck import stylex_step
    from models_pt.stylex import Objective, draw_inputs, fresh_models
    from stylex_port.training.data import load_folder

    data = load_folder(shapes, 32)
    models = fresh_models(32, 2, channel_max=8, z_dim=8, mapping_layers=2, seed=3)
    models["classifier"] = models_pt.load(shapes_classifier)["mobilenet"]
    real = data.images(np.array([0, 1, 30, 31]))
    with torch.no_grad():
        probs = torch.softmax(models["classifier"](real), 1)
    assert float(probs[:, 0].std()) > 0.05, "the classifier must tell the images apart, or its term is void"
    objective = Objective(r1_interval=2, pl_interval=3, ema_beta=0.9)
    rng = torch.Generator().manual_seed(1)
    inputs = [draw_inputs(rng, real, probs, probs, models["generator"]) for _ in range(4)]
    settings = dict(lr=0.002, betas=(0.0, 0.99), eps=1e-8)
    tf_steps = stylex_step.tf_run(models, objective, inputs, **settings)

    result = stylex_step.compare(stylex_step.trainer_factory(**settings), models, objective, inputs, tf_steps)
    report = result.report
    assert [(s["branch"], s["R1"], s["path length"]) for s in result.steps] == [
        ("encoder", True, True), ("mapping", False, False), ("encoder", True, False), ("mapping", False, True)]
    assert report.passed and report.exact, f"{report.first_inexact}: {report.worst64().score64:.3g}"
    names = [r.name for r in report.layers]
    for must in ("step 0 loss R1", "step 0 loss path length", "step 0 loss classifier KL", "step 3 loss path length",
                 "step 2 grad encoder.out.weight", "step 3 grad generator.mapping.weight.0",
                 "step 3 weight G_ema.const", "step 3 path-length mean"):
        assert must in names, must
    moved = [r for r in report.layers if " grad " in r.name]
    assert len(moved) > 300 and sum(r.truth_peak > 0 for r in moved) > 0.9 * len(moved)   # gradients that are there
    first = {"encoder_detached": "step 0 grad encoder.", "classifier_term_dropped": "step 0 grad generator.",
             "r1_not_scaled_by_interval": "step 0 loss G adversarial", "wrong_ema_beta": "step 0 weight G_ema."}
    for name, cls in stylex_step.controls().items():
        bad = stylex_step.compare(stylex_step.trainer_factory(cls, **settings), models, objective, inputs, tf_steps)
        assert not bad.report.exact, f"control {name} passed"
        assert bad.report.first_inexact.startswith(first[name]), (name, bad.report.first_inexact)   # its own defect


# ---------------------------------------------------------------------- the digits, briefly
def test_digits_short_run_losses_fall_and_attfind_runs(tmp_path):
    """The docs' digits run (8 against 9), cut to a few minutes' work: the classifier is accurate
    on held-out digits, StylEx's image reconstruction falls over 120 steps, the checkpoint
    loads, and AttFind runs on the trained model's held-out dlatents."""
    pytest.importorskip("sklearn", reason="scikit-learn (the test extra) ships the digits")
    import json

    sys.path.insert(0, str(ROOT / "examples"))
    from digits_folder import write_digits

    data = tmp_path / "digits89"
    assert write_digits(data) == {"eight": 174, "nine": 180}
    r = run_cli("train-classifier", "--data", data, "--out", tmp_path / "clf", "--steps", "200", "--threads",
                torch.get_num_threads())
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "clf" / "classifier.json").read_text())["held_out_accuracy"] >= 0.9
    out = tmp_path / "run"
    r = run_cli("train", "--data", data, "--classifier", tmp_path / "clf", "--out", out, "--steps", "120",
                "--channel-max", "16", "--z-dim", "16", "--mapping-layers", "2", "--batch", "8",
                "--sample-every", "120", "--checkpoint-every", "60", "--threads", torch.get_num_threads())
    assert r.exit_code == 0, r.output
    rec = [h["reconstruction image L1"] for h in json.loads((out / "losses.json").read_text())
           if "reconstruction image L1" in h]
    assert len(rec) == 60 and np.mean(rec[-15:]) < 0.8 * np.mean(rec[:15]), (np.mean(rec[:15]), np.mean(rec[-15:]))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["steps_done"] == 120
    r = run_cli("attfind", "--weights", out / "weights", "--dlatents", out / "dlatents.pkl", "--out", tmp_path / "af",
                "--num-indices", "2", "--top", "1", "--examples", "2", "--truth-images", "0")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "af" / "attfind.json").exists() and list((tmp_path / "af").glob("*.png"))


def test_gradient_accumulation_equals_one_batch(monkeypatch):
    """``accumulate=2`` (every other image per micro-batch) ends 3 float64 steps where one batch
    of 8 ends, to rounding; contiguous halves would regroup the minibatch-stddev groups and do not."""
    from models_pt.classifier import MobileNetV1
    from models_pt.stylex import Objective, StepInputs, StylExTrainer, draw_inputs, fresh_models

    def run(accumulate):
        models = fresh_models(32, 2, channel_max=8, z_dim=8, mapping_layers=1, seed=5)
        C = MobileNetV1(alpha=0.25, depth_multiplier=1, num_classes=2, bn_epsilon=1e-3, strided_padding="explicit")
        torch.manual_seed(0)
        for p in C.parameters():
            p.data.normal_(0, 0.3)
        G, E, D = (m.double() for m in (models["generator"], models["encoder"], models["discriminator"]))
        trainer = StylExTrainer(G, E, D, C.double().eval(), Objective(r1_interval=2, pl_interval=2),
                                accumulate=accumulate)
        rng = torch.Generator().manual_seed(3)
        real = torch.rand(8, 3, 32, 32, generator=rng, dtype=torch.float64) * 2 - 1
        probs = torch.softmax(C(real), 1).detach()
        for _ in range(3):
            trainer.step(draw_inputs(rng, real, probs, probs, G).to(dtype=torch.float64))
        return trainer.state_dict()

    one, two = run(1), run(2)
    for part in ("G", "E", "D", "G_ema"):
        assert_same_state(two[part], one[part], part, exact=False, rtol=1e-10)
    monkeypatch.setattr(StepInputs, "chunks", lambda self, k: [self._map(lambda t, i=i: t[i * len(t) // k:
                                                                                       (i + 1) * len(t) // k])
                                                               for i in range(k)])
    with pytest.raises(AssertionError):
        assert_same_state(run(2)["D"], one["D"], "D", exact=False, rtol=1e-10)
