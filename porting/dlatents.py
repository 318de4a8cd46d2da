"""Writing ``dlatents.pkl`` in the release's format, atomically. Reading it (safely) and its
bytes are ``models_pt.dlatents``, in the base install."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models_pt.dlatents import DlatentsError, dumps_dlatents  # noqa: F401  (DlatentsError: callers catch it here)
from porting.atomic import atomic_path


def save_dlatents(path, items) -> Path:
    """Write ``[(name, dlatent)]`` (or an ``[N, D]`` array, named ``"0"``, ``"1"``, ...) as the release's ``dlatents.pkl``: pickle protocol 3 of a list
    of ``(str, float32 ndarray [1, D])`` tuples naming ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``; a ``[D]`` dlatent is stored as ``[1, D]``. Atomic:
    written to a temporary file beside ``path`` and renamed over it."""
    if isinstance(items, np.ndarray):
        items = [(str(i), row) for i, row in enumerate(items)]
    data = dumps_dlatents(items)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
