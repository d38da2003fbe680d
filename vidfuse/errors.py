"""The one exception type for bad input.

Anything a user can get wrong (a missing file, an unknown key, a checkpoint of another architecture) raises
`VidfuseError` with one line that names the file or the value; `vidfuse.cli.main` prints that line and exits
non-zero instead of showing a traceback. Raised in a Ray task or worker, it reaches the caller inside Ray's
wrappers: `own_error` finds it there, and also takes a shard that Ray Data's reader could not read as one.
"""

import re

DAMAGED_DATA_SET = "the data set is damaged; prepare it again"  # how every error of a damaged data set ends
# Ray Data's note on a file its Parquet reader could not read, added to the reader's error. "after 1/N attempts": Ray
# did not count the error as a passing I/O fault (DataContext.retried_io_errors), such as a page that does not parse.
FAILED_SHARD_READ = re.compile(r"Failed to read fragment (?P<path>\S+) after 1/\d+ attempts")


class VidfuseError(Exception):
    """Bad input from the user: the message is one line that names the offending file or value."""


def root_cause(error: BaseException) -> BaseException:
    """The exception under Ray's wrappers: a RayTaskError's `cause` (the remote exception, itself maybe a
    RayTaskError of another task's), then down its `__cause__` chain (Ray Data's UserCodeException wraps the error
    raised in vidfuse's code) to the first VidfuseError, whose message names the problem, or else to the last
    exception."""
    cause = error
    while True:
        inner = getattr(cause, "cause", None)
        if not isinstance(inner, BaseException):  # not a RayTaskError
            inner = None
        if inner is None and not isinstance(cause, VidfuseError):
            inner = cause.__cause__
        if inner is None:
            return cause
        cause = inner


def damaged_shard(shard: object, reason: str) -> VidfuseError:
    """The error for a Parquet shard of a prepared data set that does not read: one line naming the shard."""
    return VidfuseError(f"{shard}: not a readable Parquet shard ({reason}): {DAMAGED_DATA_SET}")


def own_error(error: BaseException) -> VidfuseError | None:
    """vidfuse's own error under `error` (`root_cause`), or None for any other. A shard that Ray Data's reader could
    not read counts as one (`damaged_shard`): its footer reads, so `pipeline.video_table` took it, but a page
    inside it does not (a damaged copy), and no retry would read it."""
    cause = root_cause(error)
    if isinstance(cause, VidfuseError):
        return cause
    failed_read = FAILED_SHARD_READ.search(str(cause))
    return damaged_shard(failed_read["path"], first_line(cause)) if failed_read else None


def first_line(error: BaseException) -> str:
    """The first line of an error's message ("" if it has none): vidfuse's own message is one line, to which Ray
    Data adds its retry advice when the error was raised in one of its tasks."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip() if lines else ""
