"""``dlatents.pkl``: a restricted unpickler for the file from the internet, and its writer.

The released file is a pickle (protocol 3) of a list of 250 ``(name, float32 ndarray [1, 514])``
tuples. Its only globals are ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
``numpy.dtype``. A pickle can name any callable and have it run while loading, so we admit
exactly those (and NumPy 2's spelling of the first) and refuse everything else before it runs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from porting.atomic import atomic_path
from porting.errors import PortError

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, f, source: Path):
        super().__init__(f)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise PortError(f"{self.source}: refusing to load: the pickle asks for {module}.{name}, "
                            "which a dlatents file never contains")
        if module == "numpy.core.multiarray":  # the release was written before NumPy 2
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def load_dlatents(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """Load a dlatents pickle safely and check its structure: [(str, float32 [1, D]), ...]."""
    path = Path(path)
    if not path.exists():
        raise PortError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            items = _SafeUnpickler(f, path).load()
    except PortError:
        raise
    except Exception as e:
        raise PortError(f"{path}: not a readable dlatents pickle: {e}") from None
    if not isinstance(items, list) or not items:
        raise PortError(f"{path}: expected a non-empty list of (name, dlatent) tuples, got {type(items).__name__}")
    dim = None
    for i, item in enumerate(items):
        ok = (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], np.ndarray) and item[1].dtype == np.float32
              and item[1].ndim == 2 and item[1].shape[0] == 1)
        if not ok:
            raise PortError(f"{path}: entry {i} is not a (str, float32 ndarray [1, D]) tuple")
        if dim is not None and item[1].shape[1] != dim:
            raise PortError(f"{path}: entry {i} has {item[1].shape[1]} values, entry 0 has {dim}")
        dim = item[1].shape[1]
    return items


def dlatent_array(items) -> np.ndarray:
    """[(name, [1, D]), ...] -> [N, D]."""
    return np.concatenate([a for _, a in items], axis=0)


def save_dlatents(path: str | Path, dlatents: np.ndarray, names=None) -> None:
    """Write [N, D] dlatents in the release's format (protocol 3, names '0'..), atomically."""
    names = names or [str(i) for i in range(len(dlatents))]
    items = [(n, np.asarray(d, np.float32).reshape(1, -1)) for n, d in zip(names, dlatents)]
    data = pickle.dumps(items, protocol=3)
    # NumPy 2 names its array constructor numpy._core.multiarray; the release (and NumPy 1, which
    # cannot import numpy._core) uses numpy.core.multiarray, which NumPy 2 still resolves. Protocol
    # 3 writes each global as one GLOBAL opcode, "c<module>\n<name>\n", so the swap is exact.
    data = data.replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
