"""The one exception type for bad input.

Anything a user can get wrong (a missing file, an unknown key, a checkpoint of another architecture) raises
`VidfuseError` with one line that names the file or the value; `vidfuse.cli.main` prints that line and exits
non-zero instead of showing a traceback.
"""


class VidfuseError(Exception):
    """Bad input from the user: the message is one line that names the offending file or value."""


def root_cause(error: BaseException) -> BaseException:
    """The exception under Ray's wrappers: a RayTaskError's `cause` (the worker's own exception), then down its
    `__cause__` chain (Ray Data's UserCodeException wraps the error raised in vidfuse's code) to the first
    VidfuseError, whose message names the problem, or else to the last exception."""
    cause = getattr(error, "cause", None) or error
    while cause.__cause__ is not None and not isinstance(cause, VidfuseError):
        cause = cause.__cause__
    return cause


def first_line(error: BaseException) -> str:
    """The first line of an error's message ("" if it has none): vidfuse's own message is one line, to which Ray
    Data adds its retry advice when the error was raised in one of its tasks."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
