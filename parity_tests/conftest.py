"""Shared fixtures: reference checkpoints are built once per test session, in temp folders."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

# `make test` runs the suite in two pytest-xdist workers (`-n 2 --dist loadgroup`). Files that
# share an expensive session fixture run in one worker, so it is built once: the releases of
# other seeds (``release``, ``verified``) and the AttFind release (``attfind_release``). Any other
# file is a group of its own. parity_tests/scheduling.py does the grouping (xdist's own loses
# the groups under pytest 9.2) and hands out the costliest group first, by GROUP_MINUTES.
GROUPS = {
    "releases": {"test_verdict", "test_training", "test_release_convert", "test_readers_and_bad_input",
                 "test_graph_scan"},
    "attfind": {"test_analyses", "test_attfind_distributed", "test_attfind_parity", "test_download",
                "test_onnx_export", "test_base_install", "test_studies", "test_certify"},
}
# The releases group runs as one group per seed (each seed's release and verify are fixtures of
# their own) plus the rest: as one group it was the suite's critical path on one worker.
SEEDS = [7, 11]          # releases of other seeds than the demo's (seed 7: the "FAILED" classifier)
SPLIT = {"releases": {str(seed) for seed in SEEDS}}
# Minutes of one-thread work per group (--durations on a 2-core AVX-512 EPYC, rounded); a group not
# listed counts 0.01 min per test. Only the order matters: a wrong figure costs balance, not tests.
GROUP_MINUTES = {"attfind": 7.3, "releases[11]": 3.9, "releases[7]": 3.5, "test_train": 3.0, "test_generator": 2.1,
                 "releases": 1.9,
                 "test_classifier_parity": 1.6, "test_encoder_discriminator": 0.2, "test_tfrecord_codec": 0.2}
WORKER_THREADS = 1   # per xdist worker: two workers share 2 cores, and PyTorch's threads collapse
                     # when another process holds a core (STYLEX_TEST_THREADS overrides)


def pytest_configure(config):
    """In an xdist worker, PyTorch and TF run ``WORKER_THREADS`` threads each (set before TF
    starts its runtime); the serial run keeps the libraries' defaults."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    threads = int(os.environ.get("STYLEX_TEST_THREADS", WORKER_THREADS))
    import tensorflow as tf
    import torch

    torch.set_num_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist: no error where it is not installed
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: the groups above, costliest first (parity_tests/scheduling.py)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from parity_tests.scheduling import GroupScheduling

    return GroupScheduling(config, log, groups=GROUPS, minutes=GROUP_MINUTES, split=SPLIT)


def _real_dlatents_absent() -> bool:
    from models_pt.release_facts import RELEASED_DLATENTS

    return not RELEASED_DLATENTS.exists()


# Tests that read the real release's dlatents.pkl, or whose assertions hold for a reference release
# built on them (the planted attribute's margins, what the discriminator lets through): without
# the file the reference releases are built on seeded Gaussian dlatents, and these skip.
needs_real_dlatents = pytest.mark.skipif(
    _real_dlatents_absent(), reason="the real release's dlatents.pkl is not beside this checkout "
    "(STYLEX_RELEASED_DLATENTS points at it); the reference release was built on Gaussian stand-ins")


def run_cli(*args):
    """``cli.py ARGS`` in this process (click's runner), every argument as a string. An exception
    that is not an exit is re-raised, so a crash is never read as a failure's exit code."""
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


# ``slow``: a test that builds or uses a release-sized fixture (a reference release, the 256 px
# classifier, a fresh venv), or whose own work took more than about 10 s on the 2-core machine
# (--durations). ``pytest -m "not slow"`` is the developer's quick loop; CI runs everything.
SLOW_FIXTURES = {"release", "verified", "attfind_release", "classifier_zip", "classifier_weights", "small_classifier",
                 "base_env", "tf_record", "disc_setup", "attfind_run", "deployment_forms", "tf_any_size", "variables",
                 "generator_256"}
SLOW_TESTS = {"test_parity_float32_all_250_released_dlatents", "test_per_layer_parity_through_verify",
              "test_a_classifier_written_by_someone_else", "test_verify_exits_1_and_writes_json_when_a_weight_is_wrong",
              "test_nameless_keras_layout_of_every_release_model_converts",
              "test_train_classifier_and_stylex_write_what_every_command_reads",
              "test_killed_and_resumed_equals_never_stopped", "test_torchrun_two_processes_equal_one",
              "test_stylex_step_against_tf_float64_and_its_controls",
              "test_digits_short_run_losses_fall_and_attfind_runs"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the slow tests ``slow``; refuse to run when a test of a seeded release would not land
    in its seed's group (``SPLIT``): that release would be built in both workers."""
    try:
        from parity_tests.scheduling import group_of
    except ImportError:                  # no pytest-xdist: one process, nothing to schedule
        group_of = None
    for item in items:
        if group_of and "release" in getattr(item, "fixturenames", ()):
            group = group_of(item.nodeid, GROUPS)
            if group in SPLIT and group_of(item.nodeid, GROUPS, SPLIT) == group:
                raise pytest.UsageError(f"{item.nodeid}: uses the seeded `release` fixture, but its id does not "
                                        "begin with the seed (conftest.py SPLIT)")
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, for the tests that compare with it directly (skipped where it is not installed)."""
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="session")
def classifier_zip(tmp_path_factory) -> Path:
    """The reference classifier at the release configuration (256 px), zipped as released."""
    from crosscheck.reference_release import seeded_classifier
    from models_tf.classifier import default_config
    from crosscheck.reference_release import save_savedmodel_zip

    out = tmp_path_factory.mktemp("reference")
    model = seeded_classifier(default_config(256), seed=0)
    return save_savedmodel_zip(model, out / "mobilenet.savedmodel.zip", "mobilenet.savedmodel")


@pytest.fixture(scope="session")
def classifier_weights(classifier_zip, tmp_path_factory) -> Path:
    from porting.convert import convert_path

    out, _ = convert_path(classifier_zip, tmp_path_factory.mktemp("weights") / "mobilenet.safetensors")
    return out


@pytest.fixture(scope="session")
def small_classifier(tmp_path_factory):
    """A 32 px seeded classifier saved in every format the readers accept (fast to build)."""
    from crosscheck.reference_release import seeded_classifier
    from models_tf.classifier import default_config

    d = tmp_path_factory.mktemp("small")
    config = default_config(input_size=32)
    model = seeded_classifier(config, seed=3)
    paths = {
        "savedmodel": d / "mobilenet.savedmodel",
        "h5": d / "weights.h5",
        "checkpoint": d / "ckpt" / "model",
    }
    model.save(str(paths["savedmodel"]), save_format="tf", include_optimizer=False)
    model.save_weights(str(paths["h5"]))
    model.save_weights(str(paths["checkpoint"]))
    from crosscheck.reference_release import zip_savedmodel

    paths["zip"] = zip_savedmodel(paths["savedmodel"], d / "mobilenet.savedmodel.zip", "mobilenet.savedmodel")
    return model, config, paths


# The AttFind release's encoder and discriminator widths: 128 channels (the release's 512 cost 16x
# the work in every 3x3 conv, for the ONNX export, the discriminator filter and the downloads'
# verify); the seed-11 release keeps 512 for the checks at the release's widths.
ATTFIND_RESNET_CHANNEL_MAX = 128


@pytest.fixture(scope="session")
def attfind_release(tmp_path_factory):
    """A reference release with a planted attribute and its examples_1.tfrecord (TF backend),
    32 px, 32 images, generator widths capped at 16 (112 StyleSpace coordinates); converted."""
    from crosscheck.reference_release import make_reference
    from porting.release import convert_release

    ref = tmp_path_factory.mktemp("attfind") / "reference"
    make_reference(ref, seed=0, resolution=32, num_dlatents=32, channel_max=16, resnet_channel_max=ATTFIND_RESNET_CHANNEL_MAX)
    weights = ref.parent / "weights"
    convert_release(ref, weights)
    return ref, weights


class SavedModels(dict):
    """``stem -> the release's SavedModel, loaded as the notebook loads it``, each loaded on first
    use and then shared (a load takes 3 to 5 s). A test that edits one (the TF backend's style-bias
    shift) puts it back bit for bit, as the notebook's loop does."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def __missing__(self, stem: str):
        from crosscheck.tf_side import load_savedmodel
        from porting.readers import open_checkpoint

        with open_checkpoint(self.folder / f"{stem}.savedmodel.zip") as ck:
            self[stem] = load_savedmodel(ck)
        return self[stem]


@pytest.fixture(scope="session")
def attfind_savedmodels(attfind_release) -> SavedModels:
    """The AttFind release's SavedModels, each loaded once per test run."""
    return SavedModels(attfind_release[0])


@pytest.fixture(scope="session")
def attfind_run(attfind_release, tmp_path_factory) -> Path:
    """``cli.py attfind`` on ``attfind_release`` (no pictures, no float64 verdict): its output
    folder, with attfind.json and the effect cache the analyses read."""
    ref, weights = attfind_release
    out = tmp_path_factory.mktemp("attfind_run") / "attfind"
    r = run_cli("attfind", "--weights", weights, "--dlatents", ref / "dlatents.pkl", "--out", out,
                "--no-pictures", "--truth-images", "0")
    assert r.exit_code == 0, r.output
    return out


RESOLUTION = 32
# The encoder's and discriminator's widths per seed: seed 7, where the suite runs every control and
# the float32 training checks, at 128 channels (a tenth of the cost at 512: the rounding model's
# second-order passes); seed 11 at the release's 512, where verify and the float64 training check run.
RESNET_CHANNEL_MAX = {7: 128, 11: None}


@pytest.fixture(scope="session", params=SEEDS)
def release(request, tmp_path_factory):
    """make-reference --seed S (no AttFind sweep) at 32 px, then convert the folder: what a new
    user runs. Built once per session per seed (test_verdict.py, test_training.py,
    test_release_convert.py)."""
    seed = request.param
    ref = tmp_path_factory.mktemp(f"seed{seed}") / "release"
    weights = ref.parent / "weights"
    args = ["make-reference", "--out", str(ref), "--seed", str(seed), "--resolution", str(RESOLUTION),
            "--num-dlatents", "8", "--no-attfind"]
    if RESNET_CHANNEL_MAX[seed]:
        args += ["--resnet-channel-max", str(RESNET_CHANNEL_MAX[seed])]
    made = run_cli(*args)
    assert made.exit_code == 0, made.output
    conv = run_cli(*["convert", "--tf-ckpt", str(ref), "--out", str(weights)])
    assert conv.exit_code == 0, conv.output
    return seed, ref, weights


# What each seed's folder verify judged, by kind: ``(Reference, Report)``, recorded as ``verified``
# runs the command line, so tests that judge more modules on the same reference (the negative
# controls, the round trip's reuse of verify's TF models) take verify's own instead of building it
# again. Filled by ``verified``; read through ``verify_references``. It holds each seed's traces
# and TF models (seed 11's 512-channel float64 rebuilds among them) for the whole run.
VERIFY_REFERENCES: dict[int, dict] = {}


@pytest.fixture(scope="session")
def verified(release, tmp_path_factory):
    """``cli.py verify`` on the whole ``release`` folder, run once per seed: ``(seed, ref, weights,
    output, report)`` with the report's JSON. Tests read it; none may change the folder."""
    import json

    import crosscheck.verify

    seed, ref, weights = release
    report = tmp_path_factory.mktemp(f"verify{seed}") / "v.json"
    judged, judge = {}, crosscheck.verify.judge_module

    def recording(reference, module, *args, **kwargs):
        out = judge(reference, module, *args, **kwargs)
        judged[reference.kind] = (reference, out)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crosscheck.verify, "judge_module", recording)
        result = run_cli(*["verify", "--tf-ckpt", str(ref), "--weights", str(weights), "--json", str(report)])
    assert result.exit_code == 0, result.output
    VERIFY_REFERENCES[seed] = judged
    return seed, ref, weights, result.output, json.loads(report.read_text())


@pytest.fixture(scope="session")
def verify_references(verified) -> dict:
    """kind -> ``(Reference, Report)`` of ``verified``'s run (its seed's)."""
    return VERIFY_REFERENCES[verified[0]]
