"""What of Ray's own logging reaches the console of a vidfuse job.

vidfuse reports its own error (a `VidfuseError`, such as a damaged data set met by a decoder) as one line when the
run ends. On its way there Ray logs it in every process it passes through, each time with a traceback: Ray Data's
executor ("An exception was raised from a task of operator ..."), its split coordinator ("Split N epoch 0 get()
failed ..." with the decoder's remote traceback, once per Train worker) and Ray Train's worker ("Error in training
function"). That was ~130 lines before vidfuse's line, for one damaged frame.

Ray Data also prints its own notices of each execution: "Dataset val_... execution finished in 1.31 seconds" for
every dataset every epoch (a 30-epoch demo: 31 lines among the epoch lines), and once per process "Progress bars
disabled", about the bars vidfuse itself switches off (`ray_runtime.ensure_ray`), as vidfuse prints its own
progress lines.

`quiet_ray_console` marks all those log records `hide`, the attribute that Ray Data's console handler already
honours (its `HiddenRecordFilter`): the record stays in Ray's log files and leaves the console. Ray core's console
handler (Ray Tune's "Trial task failed" and its traceback) gets the same filter. It runs in every Ray worker process
of the job (the job's `worker_process_setup_hook`, JOB_SETUP_HOOK) and in the driver, where `test`'s pipeline and
Tune's trial loop execute. `quiet_train_worker_console` gives Ray Train's console handler on a Train worker the same
filter. Any other error or warning keeps its place (and traceback) on the console.

Ray core's "E" line that an actor "has constructor arguments in the object store and max_restarts > 0" (Ray
Train's PreemptionWatcher, at every run's start: ray-project/ray#53727) is no Python log record: a worker process
writes it, and the driver prints it with the process's other output. `skip_ray_worker_lines` gives it to Ray's
RAY_DEDUP_LOGS_SKIP_REGEX, the lines the driver drops from that stream; Ray reads it when it is imported, so the
command line calls it first.

When a search is interrupted, Ray Tune logs how to resume it in Python ("Resume experiment with:
Tuner.restore(...)"); `tune` says how to resume it on the command line, so that record is hidden too.

Ray Train's own data setup sets the deprecated `ExecutionOptions.exclude_resources` (DataConfig's default ingest
options, ray/train/_internal/data_config.py), which warns with its source line in every run's DatasetManager:
`quiet_ray_console` ignores that one warning (RAY_INTERNAL_DEPRECATION), which no vidfuse user can act on.

This module is the setup hook, imported by every worker process: it imports nothing heavy.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from typing import Any

from vidfuse.errors import FAILED_SHARD_READ, VidfuseError, own_error

JOB_SETUP_HOOK = f"{__name__}.quiet_ray_console"
HIDDEN = "hide"  # the LogRecord attribute Ray Data's console filter drops a record by
OWN_ERROR_NAME = f"{VidfuseError.__module__}.{VidfuseError.__qualname__}"  # how a traceback's last line names it
# The level of Ray Train's own messages on the console (RunConfig's LoggingConfig): at INFO it prints the worker
# group's start-up, "Checkpoint successfully created ..." every checkpoint and, on a failure, a ~60-line report
# with tracebacks before vidfuse's one-line error. Its log files (<Ray session>/logs/train, by default
# /tmp/ray/session_latest/logs/train on the head node) still receive every level.
TRAIN_CONSOLE_LOG_LEVEL = "WARNING"
# Ray Train 2.60 logs "Reporting training result ..." (each worker, each epoch, the whole metrics dict) through a
# logger named after the file of this module, which the level above does not reach (it filters `ray.train.*`).
TRAIN_REPORT_LOGGER_MODULE = "ray.train.v2._internal.execution.context"
TRAIN_CONSOLE_HANDLER = "console"  # the name of Ray Train's console handler in its logging config
RAY_DATA_LOGGER = "ray.data"  # Ray Data logs through this logger and its children
SKIPPED_WORKER_LINES = r"has constructor arguments in the object store and max_restarts > 0"  # see the docstring
RAY_INTERNAL_DEPRECATION = r"`ExecutionOptions\.exclude_resources` is deprecated"  # see the docstring
TUNE_LOGGER, TUNE_INTERRUPTED = "ray.tune.tune", "Experiment has been interrupted"  # see tune_restore_hint
PROGRESS_BARS_OFF = "Progress bars disabled"  # how Ray Data's warning about switched-off progress bars begins


def carries_own_error(record: logging.LogRecord) -> bool:
    """Whether a warning or error record is about vidfuse's own error (`errors.own_error`: a VidfuseError, or a shard
    Ray Data could not read): its exception, or else the one being handled where it is logged (Ray Data's
    "Exception occurred in Ray Data or Ray Core internal code ... open an issue"), is one (Ray's RayTaskError of a
    VidfuseError is an instance too) or wraps one; or its message holds the traceback or remote error text of one
    (Ray Data's split coordinator, Ray Train's worker)."""
    if record.levelno < logging.WARNING:
        return False
    error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
    if error is not None and own_error(error) is not None:
        return True
    message = str(record.msg)
    return OWN_ERROR_NAME in message or FAILED_SHARD_READ.search(message) is not None


def ray_data_notice(record: logging.LogRecord) -> bool:
    """Whether a record is one of Ray Data's notices that vidfuse's own lines replace: below WARNING (each
    execution's "Dataset ... execution finished in ..." and, where switched on, its start and statistics), or the
    warning that progress bars are disabled."""
    if record.name != RAY_DATA_LOGGER and not record.name.startswith(f"{RAY_DATA_LOGGER}."):
        return False
    return record.levelno < logging.WARNING or str(record.msg).startswith(PROGRESS_BARS_OFF)


def tune_restore_hint(record: logging.LogRecord) -> bool:
    """Whether a record is Ray Tune's "Experiment has been interrupted ... Resume experiment with: Tuner.restore(
    path=..., trainable=...)", Python that a command-line user cannot run: `tune` prints its own line instead
    (continue with the same command and --resume)."""
    return record.name == TUNE_LOGGER and str(record.msg).startswith(TUNE_INTERRUPTED)


def quiet_ray_console() -> None:
    """From now on in this process, mark every log record that `carries_own_error`, is a `ray_data_notice` or is
    the `tune_restore_hint` hidden, and let Ray core's console handler (the `ray` logger's, which prints Ray Tune's
    messages) drop hidden records, as Ray Data's does; and ignore Ray Train's RAY_INTERNAL_DEPRECATION warning."""
    make_record = logging.getLogRecordFactory()
    if not getattr(make_record, "quiets_ray_console", False):

        def make_record_quieting_ray(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            if carries_own_error(record) or ray_data_notice(record) or tune_restore_hint(record):
                setattr(record, HIDDEN, True)
            return record

        make_record_quieting_ray.quiets_ray_console = True
        logging.setLogRecordFactory(make_record_quieting_ray)
    for handler in logging.getLogger("ray").handlers:
        _drop_hidden(handler)
    warnings.filterwarnings("ignore", message=RAY_INTERNAL_DEPRECATION)


def not_hidden(record: logging.LogRecord) -> bool:
    """A handler filter: pass every record but those marked hidden."""
    return not getattr(record, HIDDEN, False)


def _drop_hidden(handler: logging.Handler) -> None:
    if not_hidden not in handler.filters:
        handler.addFilter(not_hidden)


def skip_ray_worker_lines() -> None:
    """Make the Ray imported after this call drop SKIPPED_WORKER_LINES from its workers' output on the driver's
    console (their log files keep them), unless RAY_DEDUP_LOGS_SKIP_REGEX is already set."""
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", SKIPPED_WORKER_LINES)


def quiet_train_worker_console() -> None:
    """On a Train worker, after Ray Train configured its logging: its console handler drops hidden records, and the
    logger of TRAIN_REPORT_LOGGER_MODULE is raised to TRAIN_CONSOLE_LOG_LEVEL (a no-op where a later Ray no longer
    has that module)."""
    for handler in logging.getLogger("ray.train").handlers:
        if handler.name == TRAIN_CONSOLE_HANDLER:
            _drop_hidden(handler)
    try:
        spec = importlib.util.find_spec(TRAIN_REPORT_LOGGER_MODULE)
    except ModuleNotFoundError:  # its package is gone too
        return
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(TRAIN_CONSOLE_LOG_LEVEL)
