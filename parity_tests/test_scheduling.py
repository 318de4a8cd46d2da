"""``make test``'s scheduling: a group's files run in one worker, so a fixture they share is built
once. Checked on a toy suite run by pytest-xdist exactly as ``make test`` runs the real one; the
control is xdist's plain ``load``, which splits the same files across the workers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

xdist = pytest.importorskip("xdist")

from parity_tests.scheduling import CostliestFirst, GroupScheduling, group_of  # noqa: E402 (needs xdist)

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFTEST = '''
import pytest
from parity_tests.scheduling import GroupScheduling

GROUPS = {"shared": {"test_a", "test_b"}}

def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadgroup":
        return GroupScheduling(config, log, groups=GROUPS, minutes={"shared": 5})

@pytest.fixture(scope="session")
def built():
    import os
    with open("builds.log", "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''
TOY_TEST = '''
import time
def test_{i}(built): time.sleep(0.05)
'''


def _run_toy(tmp_path: Path, dist: str) -> list[str]:
    (tmp_path / "conftest.py").write_text(TOY_CONFTEST)
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text("".join(TOY_TEST.format(i=i) for i in range(6)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", dist, "-p", "no:cacheprovider",
                           "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path / "test_a.py"),
                           str(tmp_path / "test_b.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "12 passed" in proc.stdout, proc.stdout[-2000:]
    return (tmp_path / "builds.log").read_text().split()


def test_a_group_runs_in_one_worker_and_its_fixture_is_built_once(tmp_path):
    assert len(_run_toy(tmp_path, "loadgroup")) == 1


def test_control_plain_load_splits_the_group_and_builds_twice(tmp_path):
    assert sorted(set(_run_toy(tmp_path, "load"))) == ["gw0", "gw1"]


def test_the_suite_s_hook_installs_the_scheduler_for_loadgroup_only():
    from parity_tests import conftest

    class Config:
        def __init__(self, dist):
            self.dist = dist
            self.option = type("Option", (), {"loadscopereorder": True, "maxschedchunk": None})()

        def getvalue(self, name):
            return self.dist

    assert isinstance(conftest.pytest_xdist_make_scheduler(Config("loadgroup"), None), GroupScheduling)
    assert conftest.pytest_xdist_make_scheduler(Config("load"), None) is None


def test_costliest_group_goes_out_first():
    groups = {"releases": {"test_verdict", "test_training"}}
    assert group_of("parity_tests/test_training.py::test_x[7-encoder]", groups) == "releases"
    assert group_of("parity_tests/test_padding.py::test_y", groups) == "test_padding"
    split = {"releases": {"7", "11"}}
    assert group_of("parity_tests/test_training.py::test_x[7-encoder]", groups, split) == "releases[7]"
    assert group_of("parity_tests/test_verdict.py::test_y[11]", groups, split) == "releases[11]"
    assert group_of("parity_tests/test_verdict.py::test_z", groups, split) == "releases"
    assert group_of("parity_tests/test_verdict.py::test_w[encoder-7]", groups, split) == "releases"
    queue = CostliestFirst(lambda scope, tests: {"big": 9}.get(scope, 0.01 * len(tests)))
    queue["small"], queue["big"], queue["many"] = {"t": False}, {"t": False}, {f"t{i}": False for i in range(50)}
    assert [queue.popitem(last=False)[0] for _ in range(3)] == ["big", "many", "small"]
    with pytest.raises(KeyError):
        queue.popitem(last=False)


def test_the_suite_runs_under_tcmalloc_where_ci_requires_it():
    """``make test`` preloads tcmalloc where the system has it (Makefile): glibc hands large freed
    blocks back to the kernel and faults them in again, about a fifth of the suite's time.
    ``.ci/run`` installs it and sets ``STYLEX_REQUIRE_TCMALLOC=1``, so a preload lost on the way
    (a Makefile edit, a library moved) fails CI instead of slowing it silently."""
    maps = Path("/proc/self/maps")
    loaded = maps.exists() and "libtcmalloc" in maps.read_text()
    if not loaded and os.environ.get("STYLEX_REQUIRE_TCMALLOC") != "1":
        pytest.skip("tcmalloc is not preloaded (make test does it where libtcmalloc_minimal.so.4 is installed)")
    assert loaded, ("STYLEX_REQUIRE_TCMALLOC=1 but tcmalloc is not loaded in this process: `make -s tcmalloc-path` "
                    "names the library make test preloads (empty: none where the Makefile looks)")
