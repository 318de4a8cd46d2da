"""AttFind's user-facing error: the CLI prints it on one line and exits with code 2."""
from porting.errors import PortError


class AttFindInputError(PortError):
    """Weights or inputs AttFind cannot use."""
