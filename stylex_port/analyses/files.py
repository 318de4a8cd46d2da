"""What the analyses' commands share for their files: a JSON input read with one-line errors,
and a matplotlib figure saved as PNG through a temporary file."""
from __future__ import annotations

import json
from pathlib import Path

from attfind.errors import AttFindInputError


def read_json(path: Path, absent_hint: str, what: str):
    """The JSON document at ``path``; absent: one line with ``absent_hint`` (what to run or pass);
    not JSON: one line saying it is not ``what``."""
    path = Path(path)
    if not path.is_file():
        raise AttFindInputError(f"{path}: no such file; {absent_hint}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AttFindInputError(f"{path}: not {what} ({e})") from None


def figure(size=(6, 4)):
    """A new matplotlib figure and axes on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=120)


def save_figure(fig, path: Path) -> Path:
    """``fig`` laid out and written to ``path`` as PNG (temporary file, then renamed), then closed."""
    import matplotlib.pyplot as plt

    from porting.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
