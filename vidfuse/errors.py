"""The one exception type for bad input.

Anything a user can get wrong (a missing file, an unknown key, a checkpoint of another architecture) raises
`VidfuseError` with one line that names the file or the value; `vidfuse.cli.main` prints that line and exits
non-zero instead of showing a traceback.
"""


class VidfuseError(Exception):
    """Bad input from the user: the message is one line that names the offending file or value."""
