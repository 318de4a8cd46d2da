"""dlatents.pkl: the restricted unpickler loads the real file and refuses code before it runs;
the writer reproduces the release's bytes exactly."""
from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
from pathlib import Path

import numpy as np
import pytest

from models_pt.dlatents import DlatentsError, dlatent_matrix, dumps_dlatents, load_dlatents
from porting.dlatents import save_dlatents
from conftest import needs_real_dlatents as needs_real
from models_pt.release_facts import RELEASED_DLATENTS


def test_an_array_is_written_with_the_release_names(tmp_path):
    w = np.random.default_rng(0).normal(size=(5, 514)).astype(np.float32)
    path = save_dlatents(tmp_path / "dlatents.pkl", w)
    items = load_dlatents(path)
    assert [n for n, _ in items] == ["0", "1", "2", "3", "4"]
    np.testing.assert_array_equal(dlatent_matrix(items), w)



@needs_real
def test_loads_the_real_released_dlatents():
    items = load_dlatents(RELEASED_DLATENTS)
    assert [n for n, _ in items] == [str(i) for i in range(250)]
    assert all(a.shape == (1, 514) and a.dtype == np.float32 for _, a in items)
    w = dlatent_matrix(items)
    np.testing.assert_allclose(w[:, 512:].sum(axis=1), 1, atol=1e-5)
    assert (w[:, 512:] >= 0).all()


@needs_real
def test_rewriting_the_real_file_gives_the_same_bytes(tmp_path):
    original = RELEASED_DLATENTS.read_bytes()
    assert next(pickletools.genops(original))[1] == 3  # protocol 3
    assert dumps_dlatents(load_dlatents(RELEASED_DLATENTS)) == original
    out = save_dlatents(tmp_path / "dlatents.pkl", load_dlatents(RELEASED_DLATENTS))
    assert out.read_bytes() == original


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    items = [(f"img{i}", rng.normal(size=(1, 7)).astype(np.float32)) for i in range(4)]
    items.append(("flat", np.arange(7, dtype=np.float64)))  # [D] float64 -> stored as float32 [1, D]
    path = tmp_path / "sub" / "dlatents.pkl"
    save_dlatents(path, items)
    back = load_dlatents(path)
    assert [n for n, _ in back] == [n for n, _ in items]
    for (_, a), (_, b) in zip(items, back):
        assert b.shape == (1, 7) and b.dtype == np.float32
        np.testing.assert_array_equal(b, np.asarray(a, np.float32).reshape(1, 7))
    assert [p.name for p in path.parent.iterdir()] == ["dlatents.pkl"]  # no temp files left


def _evil_pickles(marker: Path):
    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Eval:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').close()",))

    class Popen:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", str(marker)],))
    return {"system": (System, r"(posix|os)\.system"), "eval": (Eval, r"builtins\.eval"),
            "popen": (Popen, r"subprocess\.Popen")}


@pytest.mark.parametrize("kind", ["system", "eval", "popen"])
def test_refuses_a_pickle_that_would_run_code(tmp_path, kind):
    marker = tmp_path / "pwned"
    cls, pattern = _evil_pickles(marker)[kind]
    bad = tmp_path / "dlatents.pkl"
    bad.write_bytes(pickle.dumps([("0", np.zeros((1, 4), np.float32)), ("1", cls())], protocol=3))
    with pytest.raises(DlatentsError, match=rf"dlatents\.pkl: refusing to load: the pickle asks for {pattern}, "
                                            "which a dlatents file never contains"):
        load_dlatents(bad)
    assert not marker.exists()


@pytest.mark.parametrize("payload, message", [
    ({"0": np.zeros((1, 4), np.float32)}, r"expected a list of \(name, dlatent\) tuples, got dict"),
    ([], r"the list of dlatents is empty"),
    ([("0", np.zeros((1, 4), np.float32), 1)], r"entry 0 is not a \(str, ndarray\) tuple: got tuple of length 3"),
    ([(0, np.zeros((1, 4), np.float32))], r"entry 0 is not a \(str, ndarray\) tuple"),
    ([("0", np.zeros((2, 4), np.float32))], r"entry 0 \('0'\) should be a float32 ndarray \[1, D\], got float32 array of shape \[2, 4\]"),
    ([("0", np.zeros((1, 4), np.float64))], r"got float64 array"),
    ([("0", [0.0, 1.0])], r"got list"),
    ([("0", np.zeros((1, 4), np.float32)), ("1", np.zeros((1, 5), np.float32))], r"entry 1 \('1'\) has 5 values, entry 0 has 4"),
])
def test_wrong_structure_is_named(tmp_path, payload, message):
    bad = tmp_path / "d.pkl"
    bad.write_bytes(pickle.dumps(payload, protocol=3))
    with pytest.raises(DlatentsError, match=rf"d\.pkl: (.*, )?{message}"):
        load_dlatents(bad)


def test_truncated_or_missing_dlatents(tmp_path):
    bad = tmp_path / "dlatents.pkl"
    whole = dumps_dlatents([(str(i), np.ones((1, 514), np.float32)) for i in range(8)])
    bad.write_bytes(whole[:1000])
    with pytest.raises(DlatentsError, match=r"dlatents\.pkl: not a readable dlatents pickle"):
        load_dlatents(bad)
    with pytest.raises(DlatentsError, match="cannot read"):
        load_dlatents(tmp_path / "missing.pkl")


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "dlatents.pkl"
    save_dlatents(path, [("0", np.ones((1, 3), np.float32))])
    before = path.read_bytes()
    with pytest.raises(DlatentsError):
        save_dlatents(path, [(1, np.ones((1, 3), np.float32))])
    assert path.read_bytes() == before


