"""Starting or joining Ray, in one place, for `train`, `test`, `tune` and the tests.

Under `ray job submit` (or with `RAY_ADDRESS` set) vidfuse joins that cluster. Otherwise it starts a local Ray
with enough logical CPUs for the Train workers plus two for Ray Data's reads and decoders (RAY_NOTES: a
pipeline left without a free CPU hangs). A local Ray names its dashboard to all its processes
(`RAY_API_SERVER_ADDRESS`): Ray Train's placement-group cleaner otherwise finds the State API by scanning the
machine, which fails as soon as a second Ray runs there, and the CPUs of every stopped trial stay reserved.

Either way, the job's workers get `JOB_RUNTIME_ENV` (a job-level runtime env, which Ray merges with the one `ray
job submit` was given, refusing one that sets the same fields or env vars: `join_cluster`):
- the env vars `pipeline.DECODER_ENV_VARS`, and Ray Train's print patch switched off. That patch sends each `print`
  of a Train worker to Train's logger and, as Ray wraps a worker's stdout, to stdout as well: every progress line
  reached the driver twice. Without it a worker's prints reach the driver once, like any task's;
- `ray_console.quiet_ray_console` as the setup hook of every worker process: vidfuse's own error reaches the console
  as vidfuse's one line, not also as Ray's tracebacks, and Ray Data's notices of each execution stay in its log
  file. The driver runs it too.

A local Ray's workers also get `LOCAL_ENV_VARS`: Ray Train's controller checks on its workers every 0.5 s instead
of 2 s, so a run's end (or a dead worker) is seen sooner. Measured on a 5-epoch tiny run (2 cores): 46.3-46.7 s
-> 43.2-43.5 s, ~10 % off `tests/test_train.py` and `test_tune.py`'s interrupted search; the extra polls are a
few RPCs a second. A cluster keeps Ray's default.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any

import ray
import ray.data

from vidfuse.data.pipeline import DECODER_ENV_VARS
from vidfuse.engine.ray_console import JOB_SETUP_HOOK, quiet_ray_console
from vidfuse.errors import VidfuseError

DATA_CPUS = 2  # logical CPUs kept free for Ray Data's Parquet reads and decoders
JOB_ENV_VARS = {**DECODER_ENV_VARS, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
JOB_RUNTIME_ENV = {"env_vars": JOB_ENV_VARS, "worker_process_setup_hook": JOB_SETUP_HOOK}
LOCAL_ENV_VARS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}  # see the module docstring
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for a job's entrypoint command
_connected_here = False  # whether `ensure_ray` started or joined the Ray this process uses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(num_cpus: int, **init_kwargs: Any) -> None:
    """`ray.init` a local Ray of `num_cpus` logical CPUs whose processes all know its dashboard address."""
    port = _free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_port=port,
             runtime_env={**JOB_RUNTIME_ENV,
                          "env_vars": {**JOB_ENV_VARS, **LOCAL_ENV_VARS,
                                       "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
             **init_kwargs)


RUNTIME_ENV_CONFLICT = "Failed to merge the Job's runtime env"  # ray.init's ValueError


def join_cluster() -> None:
    """`ray.init` the cluster at RAY_ADDRESS with JOB_RUNTIME_ENV. A runtime env given to `ray job submit` that sets
    one of its fields or env vars makes Ray refuse the job: one line naming them, not `ray.init`'s traceback."""
    try:
        ray.init(runtime_env=JOB_RUNTIME_ENV)
    except ValueError as exc:
        if RUNTIME_ENV_CONFLICT not in str(exc):
            raise
        own = ", ".join([key for key in JOB_RUNTIME_ENV if key != "env_vars"] + sorted(JOB_ENV_VARS))
        raise VidfuseError(f"the job's runtime env (ray job submit --runtime-env-json) sets what vidfuse sets for its "
                           f"workers ({own}): leave those out, or set RAY_OVERRIDE_JOB_RUNTIME_ENV=1 to keep "
                           "vidfuse's (docs/cluster.md)") from None


def check_storage_in_job(storage: str) -> None:
    """Raise if this process is a `ray job submit` entrypoint (Ray sets RAY_JOB_ENV for it) and `storage` is
    relative: the job runs in Ray's temporary copy of the submitted --working-dir, so the run folder would land
    there and go with the cluster's session (the job still SUCCEEDED)."""
    if RAY_JOB_ENV in os.environ and not os.path.isabs(storage):
        raise VidfuseError(f"run.storage={storage} is a relative path, which in a Ray job is inside the job's "
                           "temporary copy of --working-dir: pass --storage an absolute path on a file system "
                           "every node mounts (NFS)")


def ensure_ray(training_cpus: float) -> None:
    """Use the running Ray, join the one at RAY_ADDRESS, or start a local one with `training_cpus` + DATA_CPUS.

    Ray Data's progress bars are switched off and its notices of each execution kept off the console (they stay in
    its log file): every epoch re-executes the clip pipelines, and vidfuse prints its own progress lines. This
    process quiets Ray's console logging as its workers do (JOB_RUNTIME_ENV, `ray_console`): `test`'s pipeline
    executes here."""
    global _connected_here
    quiet_ray_console()
    ray.data.DataContext.get_current().enable_progress_bars = False
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        join_cluster()
    else:
        start_local_ray(max(os.cpu_count() or 1, math.ceil(training_cpus + DATA_CPUS)))
    _connected_here = True


def release_ray() -> None:
    """Shut down (or leave) the Ray that `ensure_ray` started (or joined); a Ray started by the caller stays."""
    global _connected_here
    if _connected_here and ray.is_initialized():
        ray.shutdown()
    _connected_here = False

