"""The one exception type the command line turns into a clear message and a non-zero exit."""


class FdrlError(Exception):
    """Bad input or configuration: the message names the problem and how to fix it."""
