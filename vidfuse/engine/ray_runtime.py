"""Starting or joining Ray, in one place, for `train`, `test`, `tune` and the tests.

Under `ray job submit` (or with `RAY_ADDRESS` set) vidfuse joins that cluster. Otherwise it starts a local Ray
with enough logical CPUs for the Train workers plus two for Ray Data's reads and decoders (RAY_NOTES: a
pipeline left without a free CPU hangs). A local Ray names its dashboard to all its processes
(`RAY_API_SERVER_ADDRESS`): Ray Train's placement-group cleaner otherwise finds the State API by scanning the
machine, which fails as soon as a second Ray runs there, and the CPUs of every stopped trial stay reserved.

Either way, the job's workers get `JOB_ENV_VARS` (a job-level runtime env, which Ray merges with the one `ray job
submit` was given): `pipeline.DECODER_ENV_VARS`, and Ray Train's print patch switched off. That patch sends each
`print` of a Train worker to Train's logger and, as Ray wraps a worker's stdout, to stdout as well: every
progress line reached the driver twice. Without it a worker's prints reach the driver once, like any task's.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
from typing import Any

import ray
import ray.data

from vidfuse.data.pipeline import DECODER_ENV_VARS

DATA_CPUS = 2  # logical CPUs kept free for Ray Data's Parquet reads and decoders
JOB_ENV_VARS = {**DECODER_ENV_VARS, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
_connected_here = False  # whether `ensure_ray` started or joined the Ray this process uses
# The level of Ray Train's own messages on the console (RunConfig's LoggingConfig): at INFO it prints the worker
# group's start-up, "Checkpoint successfully created ..." every checkpoint and, on a failure, a ~60-line report
# with tracebacks before vidfuse's one-line error. Its log files (<Ray session>/logs/train, by default
# /tmp/ray/session_latest/logs/train on the head node) still receive every level.
TRAIN_CONSOLE_LOG_LEVEL = "WARNING"
# Ray Train 2.60 logs "Reporting training result ..." (each worker, each epoch, the whole metrics dict) through a
# logger named after the file of this module, which the level above does not reach (it filters `ray.train.*`).
TRAIN_REPORT_LOGGER_MODULE = "ray.train.v2._internal.execution.context"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(num_cpus: int, **init_kwargs: Any) -> None:
    """`ray.init` a local Ray of `num_cpus` logical CPUs whose processes all know its dashboard address."""
    port = _free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_port=port,
             runtime_env={"env_vars": {**JOB_ENV_VARS, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
             **init_kwargs)


def ensure_ray(training_cpus: float) -> None:
    """Use the running Ray, join the one at RAY_ADDRESS, or start a local one with `training_cpus` + DATA_CPUS.

    Ray Data's per-execution banners and progress bars are switched off: every epoch re-executes the clip
    pipelines, and vidfuse prints its own progress lines."""
    global _connected_here
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env={"env_vars": JOB_ENV_VARS})
    else:
        start_local_ray(max(os.cpu_count() or 1, math.ceil(training_cpus + DATA_CPUS)))
    _connected_here = True


def release_ray() -> None:
    """Shut down (or leave) the Ray that `ensure_ray` started (or joined); a Ray started by the caller stays."""
    global _connected_here
    if _connected_here and ray.is_initialized():
        ray.shutdown()
    _connected_here = False


def quiet_train_reports() -> None:
    """On a Train worker: raise the logger of TRAIN_REPORT_LOGGER_MODULE to TRAIN_CONSOLE_LOG_LEVEL (a no-op where
    a later Ray no longer has that module)."""
    try:
        spec = importlib.util.find_spec(TRAIN_REPORT_LOGGER_MODULE)
    except ModuleNotFoundError:  # its package is gone too
        return
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(TRAIN_CONSOLE_LOG_LEVEL)
