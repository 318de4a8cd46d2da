"""``dlatents.pkl`` without trusting it: a restricted unpickler, a structure check, the format's bytes.

NumPy only, part of the base install: reading the release's latents needs no TensorFlow.

The release's file is a pickle (protocol 3) of a list of ``(name: str, dlatent: float32 ndarray
[1, D])`` tuples (250 of them, ``D = 514``). Unpickling can call any importable callable the
file names, so a file from the internet may only name the globals that array reconstruction
needs; we refuse everything else *before* it is imported, let alone called:

- ``numpy.core.multiarray._reconstruct`` (the release, written with NumPy 1) and its NumPy 2
  name ``numpy._core.multiarray._reconstruct``;
- ``numpy.ndarray`` and ``numpy.dtype``.

(``numpy.core.multiarray.scalar`` would only be needed for pickled NumPy scalars, which the
file does not contain, so it is refused too.) Strings, tuples and lists are pickle opcodes, not
globals, and need no admission.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


PROTOCOL = 3  # the release's ``PROTO 3`` opcode

_RECONSTRUCT_NUMPY1 = "numpy.core.multiarray"
_RECONSTRUCT_NUMPY2 = "numpy._core.multiarray"

ADMITTED = frozenset({
    (_RECONSTRUCT_NUMPY1, "_reconstruct"),
    (_RECONSTRUCT_NUMPY2, "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class DlatentsError(ValueError):
    """A dlatents pickle that is unsafe, unreadable or not shaped like the release's."""


def _numpy_callable(module: str, name: str):
    """Resolve an admitted global directly from the NumPy objects (no import by name)."""
    if name == "_reconstruct":
        return np.ndarray.__reduce__(np.zeros(1))[0]  # NumPy's own reconstructor, whichever name it has
    return {"ndarray": np.ndarray, "dtype": np.dtype}[name]


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in ADMITTED:
            raise DlatentsError(f"{self._source}: refusing to load: the pickle asks for {module}.{name}, "
                                "which a dlatents file never contains")
        return _numpy_callable(module, name)

    def persistent_load(self, pid):
        raise DlatentsError(f"{self._source}: refusing to load: the pickle uses a persistent id, "
                            "which a dlatents file never contains")


def _check_items(items, source: str) -> list[tuple[str, np.ndarray]]:
    if not isinstance(items, list):
        raise DlatentsError(f"{source}: expected a list of (name, dlatent) tuples, got {type(items).__name__}")
    if not items:
        raise DlatentsError(f"{source}: the list of dlatents is empty")
    dim = None
    for i, item in enumerate(items):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise DlatentsError(f"{source}: entry {i} is not a (str, ndarray) tuple: got {type(item).__name__}"
                                + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))
        name, arr = item
        if not (isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[0] == 1):
            what = (f"{arr.dtype} array of shape {list(arr.shape)}" if isinstance(arr, np.ndarray)
                    else type(arr).__name__)
            raise DlatentsError(f"{source}: entry {i} ({name!r}) should be a float32 ndarray [1, D], got {what}")
        if dim is not None and arr.shape[1] != dim:
            raise DlatentsError(f"{source}: entry {i} ({name!r}) has {arr.shape[1]} values, entry 0 has {dim}")
        dim = arr.shape[1]
    return items


def loads_dlatents(data: bytes, source: str = "dlatents.pkl") -> list[tuple[str, np.ndarray]]:
    """``load_dlatents`` on bytes; ``source`` names them in errors."""
    try:
        items = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except DlatentsError:
        raise
    except Exception as e:  # truncated, not a pickle, bad array state, ...
        raise DlatentsError(f"{source}: not a readable dlatents pickle ({type(e).__name__}: {e})") from None
    return _check_items(items, source)


def load_dlatents(path) -> list[tuple[str, np.ndarray]]:
    """Load ``dlatents.pkl`` safely: ``[(name, float32 ndarray [1, D])]`` in file order.

    Raises ``DlatentsError`` naming the file if the pickle asks for any global other than
    NumPy's array reconstruction, or if its content is not a non-empty list of
    ``(str, float32 [1, D])`` tuples with one ``D``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DlatentsError(f"{path}: cannot read: {e.strerror or e}") from None
    return loads_dlatents(data, str(path))


def dumps_dlatents(items: Iterable[tuple[str, np.ndarray]]) -> bytes:
    """The bytes of a dlatents pickle in the release's exact format (see ``save_dlatents``)."""
    items = [(n, a) for n, a in items]
    for i, (name, arr) in enumerate(items):
        if not isinstance(name, str):
            raise DlatentsError(f"dlatents to write: entry {i} has a {type(name).__name__} name, expected str")
    items = [(name, np.ascontiguousarray(arr, dtype=np.float32).reshape(1, -1)) for name, arr in items]
    _check_items(items, "dlatents to write")
    data = pickle.dumps(items, protocol=PROTOCOL)
    # NumPy 2 pickles its reconstructor as numpy._core.multiarray._reconstruct; the release (and
    # NumPy 1, which has no numpy._core) says numpy.core.multiarray, which NumPy 2 still resolves.
    # Protocol 3 names a global once, as the GLOBAL opcode b"c<module>\n<name>\n" (later uses are
    # memo references), so exchanging that one opcode's text gives the release's bytes.
    new = f"c{_RECONSTRUCT_NUMPY2}\n_reconstruct\n".encode()
    old = f"c{_RECONSTRUCT_NUMPY1}\n_reconstruct\n".encode()
    if data.count(new) == 1:
        data = data.replace(new, old)
    if data.count(old) != 1:
        raise DlatentsError("dlatents to write: unexpected pickle layout for NumPy arrays "
                            f"(NumPy {np.__version__}); cannot write the release's format")
    return data


def dlatent_matrix(items: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """``[(name, [1, D])]`` -> ``[N, D]`` float32."""
    return np.concatenate([a.reshape(1, -1) for _, a in items], axis=0).astype(np.float32, copy=False)
