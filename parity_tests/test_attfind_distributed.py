"""AttFind's effects on a local Ray cluster (``attfind.distributed``) against the single-process
path: the same effects bit for bit, the same ranking, a killed worker's image retried, a resume
across the two paths, Ctrl-C, and a worker that cannot load the weights.

Every Ray run here starts its own local cluster of 2 workers (``ray.init(num_cpus=2)``-sized)
and stops it; the reference release is the 32 px one with a planted attribute."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]


THREADS = 1   # torch threads per process, the same in both paths: on a CPU, oneDNN's results
              # depend on the thread count (at 64 px, 1 vs 2 threads differ by ~1e-7 in the images)


def _run(weights, ref, out, log=None, **kw):
    import torch

    from attfind.run import Options, run

    if kw.get("workers"):
        kw.setdefault("threads_per_worker", THREADS)
    opts = Options(pictures=False, truth_images=0, **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return run(weights, ref / "dlatents.pkl", out, opts, log=log or (lambda m: None))
    finally:
        torch.set_num_threads(threads)


def _entries(out: Path) -> dict[int, tuple]:
    cache = out / "effects_cache"
    got = {}
    for f in sorted(cache.glob("image_*.npz")):
        with np.load(f) as z:
            got[int(f.stem.split("_")[1])] = (str(z["key"]), z["base"].copy(), z["effects"].copy())
    return got


def _assert_clean(out: Path):
    left = [p.name for p in (out / "effects_cache").iterdir() if p.name.endswith(".tmp")]
    assert not left, f"temporary files left in the cache: {left}"


@pytest.fixture(scope="module")
def single(attfind_release, tmp_path_factory):
    """The single-process run: the reference every distributed run must equal."""
    ref, weights = attfind_release
    out = tmp_path_factory.mktemp("single")
    outcome = _run(weights, ref, out)
    return out, outcome, _entries(out)


def _same_effects(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for i in a:
        assert a[i][0] == b[i][0], f"image {i}: cache keys differ"
        assert np.array_equal(a[i][1], b[i][1]), f"image {i}: base logits differ"
        assert np.array_equal(a[i][2], b[i][2]), f"image {i}: effects differ (max {np.abs(a[i][2] - b[i][2]).max()})"


def test_two_workers_equal_single_process_bit_for_bit(attfind_release, single, tmp_path):
    ref, weights = attfind_release
    s_out, s_outcome, s_entries = single
    # not degenerate: effects spread, and the planted attribute is what both find
    effects = np.stack([e for _, _, e in s_entries.values()])
    assert np.ptp(effects) > 1.0 and np.abs(effects).mean() > 1e-3
    outcome = _run(weights, ref, tmp_path, workers=2)
    d_entries = _entries(tmp_path)
    assert len(d_entries) == 32
    _same_effects(s_entries, d_entries)
    assert outcome.result.ranking == s_outcome.result.ranking
    assert outcome.document["attributes"] == s_outcome.document["attributes"]
    cluster = outcome.document["effects"]["cluster"]
    assert cluster["workers"] == 2 and cluster["retried"] == [] and cluster["started_cluster"]
    assert cluster["threads_per_worker"] == THREADS == s_outcome.document["effects"]["torch_threads"]
    assert len(cluster["images_per_worker"]) == 2, "both workers should have taken images"
    assert sum(cluster["images_per_worker"].values()) == 32
    _assert_clean(tmp_path)
    # negative control: the comparison sees a one-ulp change in one entry
    i = 5
    bumped = dict(d_entries)
    e = bumped[i][2].copy()
    e.flat[7] = np.nextafter(e.flat[7], np.float32(np.inf))
    bumped[i] = (bumped[i][0], bumped[i][1], e)
    with pytest.raises(AssertionError, match="image 5: effects differ"):
        _same_effects(s_entries, bumped)


def test_killed_worker_unit_is_retried(attfind_release, single, tmp_path):
    ref, weights = attfind_release
    _, s_outcome, s_entries = single
    killed = []

    def on_dispatch(state):
        if killed or state["done"] < 2:
            return
        pids = [p for p in state["in_flight"] if p is not None]
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append((pids[0], list(state["in_flight"][pids[0]])))

    logs = []
    outcome = _run(weights, ref, tmp_path, log=logs.append, workers=2, on_dispatch=on_dispatch)
    assert killed, "the test never killed a worker"
    retried = outcome.document["effects"]["cluster"]["retried"]
    assert retried and all(r["worker_pid"] == killed[0][0] for r in retried), retried
    # every image the killed worker held (one running, one queued) was retried, and only those
    # that had not come back before the kill landed
    held = set(killed[0][1])
    assert {r["image"] for r in retried} <= held and len(retried) >= 1
    assert any("retried on another worker" in m for m in logs), logs
    per_worker = outcome.document["effects"]["cluster"]["images_per_worker"]
    assert str(killed[0][0]) not in per_worker or per_worker[str(killed[0][0])] < 32
    assert sum(per_worker.values()) == 32       # each image computed (and cached) once
    worker_of = outcome.document["effects"]["cluster"]["worker_of_image"]
    for r in retried:                           # a retried image came from another, living worker
        assert worker_of[str(r["image"])] not in (None, killed[0][0]), (r, worker_of)
    assert len(set(worker_of.values())) >= 2
    d_entries = _entries(tmp_path)
    _same_effects(s_entries, d_entries)       # nothing lost, nothing torn
    assert outcome.result.ranking == s_outcome.result.ranking
    _assert_clean(tmp_path)


def test_resume_across_paths(attfind_release, single, tmp_path):
    """A cache half-filled by the single-process path is finished by the workers (and the
    Ctrl-C test below does the converse)."""
    ref, weights = attfind_release
    s_out, s_outcome, s_entries = single
    cache = tmp_path / "effects_cache"
    shutil.copytree(s_out / "effects_cache", cache)
    removed = [i for i in range(32) if i % 3 == 1]
    for i in removed:
        (cache / f"image_{i:05d}.npz").unlink()
    outcome = _run(weights, ref, tmp_path, workers=2)
    eff = outcome.document["effects"]
    assert eff["computed_images"] == len(removed) and eff["cached_images"] == 32 - len(removed)
    assert sum(outcome.document["effects"]["cluster"]["images_per_worker"].values()) == len(removed)
    _same_effects(s_entries, _entries(tmp_path))
    assert outcome.result.ranking == s_outcome.result.ranking


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_ctrl_c_stops_the_cluster_and_leaves_a_resumable_cache(attfind_release, single, tmp_path):
    ref, weights = attfind_release
    _, s_outcome, s_entries = single
    out = tmp_path / "run"
    err = tmp_path / "stderr.txt"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "attfind", "--weights", str(weights),
                                 "--dlatents", str(ref / "dlatents.pkl"), "--out", str(out), "--workers", "2",
                                 "--no-pictures", "--truth-images", "0", "--threads-per-worker", str(THREADS)],
                                stdout=subprocess.DEVNULL, stderr=f, env=env, cwd=ROOT,
                                # a suite started in the background (`make test &`) inherits SIGINT
                                # ignored, and so would the run, which then never sees the Ctrl-C
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            ready = "workers ready" in err.read_text()      # the line that names the workers' pids
            if ready and len(list((out / "effects_cache").glob("image_*.npz"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be interrupted:\n{err.read_text()}"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=90)
    text = err.read_text()
    assert rc == 130, text
    assert "interrupted:" in text and "resumes" in text, text
    pids = [int(p) for p in re.search(r"pids ([\d, ]+);", text).group(1).split(", ")]
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), f"workers {pids} still running after Ctrl-C"
    _assert_clean(out)
    partial = _entries(out)
    assert 2 <= len(partial) < 32, f"{len(partial)} entries"
    for i, entry in partial.items():                      # every entry whole and right
        assert entry[0] == s_entries[i][0] and np.array_equal(entry[2], s_entries[i][2])
    outcome = _run(weights, ref, out)                      # resumed by the single-process path
    assert outcome.document["effects"]["computed_images"] == 32 - len(partial)
    _same_effects(s_entries, _entries(out))
    assert outcome.result.ranking == s_outcome.result.ranking


def test_worker_that_cannot_load_the_weights_fails_with_one_line(attfind_release, tmp_path):
    ref, weights = attfind_release
    other = tmp_path / "copy"
    shutil.copytree(weights, other)
    gen = other / "generator.safetensors"
    data = bytearray(gen.read_bytes())
    data[-1] ^= 1                                              # a different file than the driver's
    gen.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "attfind", "--weights", str(weights),
                        "--dlatents", str(ref / "dlatents.pkl"), "--out", str(tmp_path / "run"), "--workers", "2",
                        "--no-pictures", "--truth-images", "0", "--worker-weights", str(other)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a Ray worker could not load the weights:"), r.stderr
    assert "generator.safetensors: sha256" in last and "on the driver" in last, last
    assert "Traceback" not in r.stderr


def test_worker_setup_reports_missing_files_in_one_line(attfind_release, tmp_path):
    """The worker's setup, called in this process: a folder without the weights gives one line."""
    from attfind.distributed import EffectsWorker

    _, weights = attfind_release
    msg = EffectsWorker().setup(str(tmp_path), {"generator": ("generator.safetensors", None),
                                                "mobilenet": ("mobilenet.safetensors", None)}, "cpu", 8, 1)
    assert isinstance(msg, str) and "\n" not in msg
    assert "generator.safetensors: no such file on this worker" in msg and "--worker-weights" in msg
    import torch

    threads = torch.get_num_threads()
    try:
        ok = EffectsWorker().setup(str(weights), {"generator": ("generator.safetensors", None),
                                                  "mobilenet": ("mobilenet.safetensors", None)}, "cpu", 8, 1)
    finally:
        torch.set_num_threads(threads)          # setup sets a worker's threads; not this process's
    assert isinstance(ok, dict) and ok["pid"] == os.getpid() and ok["threads"] == 1
