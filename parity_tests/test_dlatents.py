"""dlatents.pkl: the safe unpickler loads the real file, refuses code, writes the release's format."""
from __future__ import annotations

import os
import pickle
import pickletools

import numpy as np
import pytest

from porting.dlatents import load_dlatents, save_dlatents
from porting.errors import PortError
from porting.verify_generator import RELEASED_DLATENTS


def globals_of(path) -> set:
    return {arg for op, arg, _ in pickletools.genops(open(path, "rb").read()) if op.name == "GLOBAL"}


def test_loads_the_real_released_file():
    items = load_dlatents(RELEASED_DLATENTS)
    assert len(items) == 250 and [n for n, _ in items] == [str(i) for i in range(250)]
    w = np.concatenate([a for _, a in items])
    assert w.shape == (250, 514) and w.dtype == np.float32
    np.testing.assert_allclose(w[:, 512:].sum(axis=1), 1, atol=1e-5)  # classifier probabilities


def test_refuses_a_pickle_that_would_run_a_command(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    bad = tmp_path / "dlatents.pkl"
    bad.write_bytes(pickle.dumps([("0", Evil())], protocol=3))
    with pytest.raises(PortError, match=r"dlatents.pkl: refusing to load: the pickle asks for (posix|os)\.system"):
        load_dlatents(bad)
    assert not marker.exists()


def test_wrong_structure_is_named(tmp_path):
    bad = tmp_path / "d.pkl"
    bad.write_bytes(pickle.dumps([("0", np.zeros((2, 514), np.float32))], protocol=3))
    with pytest.raises(PortError, match=r"entry 0 is not a \(str, float32 ndarray \[1, D\]\) tuple"):
        load_dlatents(bad)


def test_written_in_the_release_format(tmp_path):
    w = np.random.default_rng(0).normal(size=(5, 514)).astype(np.float32)
    path = tmp_path / "dlatents.pkl"
    save_dlatents(path, w)
    assert globals_of(path) == globals_of(RELEASED_DLATENTS)
    items = load_dlatents(path)
    assert [n for n, _ in items] == ["0", "1", "2", "3", "4"]
    np.testing.assert_array_equal(np.concatenate([a for _, a in items]), w)
