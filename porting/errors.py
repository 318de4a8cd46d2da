"""Errors a user can act on. The CLI prints them on one line and exits with code 2."""
from porting.mapping import MappingError


class PortError(Exception):
    """Bad input: the message names the file, the variable and what was expected."""


class ReaderError(PortError):
    """A checkpoint that cannot be read (missing, not a checkpoint, unsafe, corrupted)."""


from models_pt.dlatents import DlatentsError  # noqa: E402  (the base install's dlatents reader)

USER_ERRORS = (PortError, MappingError, DlatentsError)
