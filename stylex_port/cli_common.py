"""What every command shares: one-line errors with exit code 2, paths that must exist, the
progress bar and log lines on stderr."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def user_errors(fn):
    """Turn the errors a user can act on into one line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from models_pt import WeightsError
        from porting.errors import USER_ERRORS

        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, WeightsError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    return wrapper


def existing(path: str) -> Path:
    p = Path(path)
    if not p.exists() and not Path(path + ".index").exists():
        from porting.errors import ReaderError
        raise ReaderError(f"{path}: no such file or folder")
    return p


def progress_bar(total: int, label: str):
    """A tqdm bar on stderr (quiet when stderr is not a terminal, except for its final line)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="it", file=sys.stderr, mininterval=1.0,
                disable=None if not os.environ.get("STYLEX_PROGRESS") else False)


def log_line(msg: str):
    """A message on stderr that does not tear an active progress bar."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)
