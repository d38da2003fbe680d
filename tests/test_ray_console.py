"""Which of Ray's log records reach the console: vidfuse's own errors (vidfuse reports them as one line) and Ray Data's
notices of each execution are hidden there, every other warning and error is not, and Ray's log files keep them
all."""

import json
import logging
import os
import subprocess
import sys
import textwrap
import traceback
import warnings

import pytest
from ray.data.exceptions import UserCodeException
from ray.exceptions import RayTaskError

from vidfuse.engine import ray_console
from vidfuse.engine.ray_console import (
    carries_own_error,
    quiet_ray_console,
    quiet_train_worker_console,
    ray_data_notice,
)
from vidfuse.errors import VidfuseError, own_error

DAMAGED = "video v_Foo_g01_c01: one of its frames 1-8 does not decode (bad JPEG): the data set is damaged"


def _record(level: int, message: str, error: BaseException | None = None, logger: str = "ray.data.x"
            ) -> logging.LogRecord:
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    return logging.LogRecord(logger, level, __file__, 1, message, None, exc_info)


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as exc:  # noqa: BLE001 - the test wants the raised object
        return exc


def _remote(error: BaseException) -> BaseException:
    """`error` as Ray hands over an error raised in a task: a RayTaskError that is also an instance of its class,
    whose text holds the task's traceback."""
    traceback_text = "".join(traceback.format_exception(error))
    return RayTaskError("decode_clips", traceback_text, error).as_instanceof_cause()


def _wrapped_in_user_code_exception() -> BaseException:
    try:
        try:
            raise VidfuseError(DAMAGED)
        except VidfuseError as exc:
            raise UserCodeException("UDF failed to process a data block.") from exc
    except UserCodeException as exc:
        return exc


def _formatted_traceback() -> str:
    try:
        raise VidfuseError(DAMAGED)
    except VidfuseError:
        return traceback.format_exc()


@pytest.fixture
def record_factory():
    """Restore the process's log record factory after the test."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_records_that_carry_a_vidfuse_error_are_recognised():
    own_error = _raised(VidfuseError(DAMAGED))
    remote = _remote(own_error)
    assert carries_own_error(_record(logging.ERROR, "An exception was raised", own_error))
    assert carries_own_error(_record(logging.ERROR, "An exception was raised", remote))  # Ray Data's executor
    assert carries_own_error(_record(logging.ERROR, "failed", _wrapped_in_user_code_exception()))
    # the split coordinator's "Split 0 epoch 0 get() failed after 0 rows: {remote error}", Train's worker
    assert carries_own_error(_record(logging.WARNING, f"Split 0 epoch 0 get() failed after 0 rows: {remote}"))
    assert carries_own_error(_record(logging.ERROR, f"Error in training function:\n{_formatted_traceback()}"))

    assert not carries_own_error(_record(logging.ERROR, "An exception was raised", _raised(ValueError("bug"))))
    assert not carries_own_error(_record(logging.ERROR, "Split 0 epoch 0 get() failed after 0 rows: ValueError"))
    assert not carries_own_error(_record(logging.INFO, f"Error in training function:\n{_formatted_traceback()}"))


def test_ray_datas_notices_of_each_execution_are_recognised():
    executor = "ray.data._internal.execution.streaming_executor"
    assert ray_data_notice(_record(logging.INFO, "Dataset val_1 execution finished in 1.31 seconds", logger=executor))
    assert ray_data_notice(_record(logging.DEBUG, "Execution plan of Dataset val_1: ...", logger=executor))
    assert ray_data_notice(_record(logging.WARNING, "Progress bars disabled. To enable, set `ray.data.DataContext."
                                                    "get_current().enable_progress_bars = True`.",
                                   logger="ray.data._internal.progress"))
    assert ray_data_notice(_record(logging.INFO, "a notice", logger="ray.data"))

    assert not ray_data_notice(_record(logging.WARNING, "Operator is falling behind", logger=executor))
    assert not ray_data_notice(_record(logging.ERROR, "An exception was raised", logger=executor))
    assert not ray_data_notice(_record(logging.INFO, "Checkpoint successfully created", logger="ray.train.v2"))
    assert not ray_data_notice(_record(logging.INFO, "a notice", logger="ray.database"))


def test_a_shard_ray_data_could_not_read_is_vidfuses_own_error(failed_shard_read):
    """A shard whose footer reads but one of whose pages does not (pipeline.video_table reads the footer and the
    small columns only): Ray Data's reader fails in the decoders' task, and the error reaches a Train worker as the
    split coordinator's RayTaskError of the read task's RayTaskError(OSError). It is vidfuse's own error, naming
    the shard, when Ray gave up after one attempt (not an I/O fault it retries)."""
    shard = "/data/ucf101.parquet/part-00003.parquet"
    in_task = _raised(failed_shard_read(shard, "1/10"))
    read_task = _remote(in_task)
    coordinator = RayTaskError("SplitCoordinator.get", "".join(traceback.format_exception(read_task)), read_task)
    expected = (f"{shard}: not a readable Parquet shard (Couldn't deserialize thrift: don't know what type:): the "
                "data set is damaged; prepare it again")
    for error in (in_task, read_task, coordinator):
        assert str(own_error(error)) == expected
        assert carries_own_error(_record(logging.ERROR, "An exception was raised", error))
    assert carries_own_error(_record(logging.WARNING, f"Split 0 epoch 0 get() failed after 0 rows: {read_task}"))

    passing_fault = _raised(failed_shard_read(shard, "10/10"))  # one Ray retried: not called a damaged data set
    assert own_error(passing_fault) is None
    assert not carries_own_error(_record(logging.ERROR, "An exception was raised", passing_fault))
    assert own_error(_raised(OSError("disk full"))) is None
    own = _raised(VidfuseError(DAMAGED))
    assert own_error(_remote(own)) is own


def test_ray_datas_console_drops_own_errors_and_notices_and_its_log_file_keeps_them(record_factory, ray_data_console,
                                                                                  ray_data_logged):
    """Through the `ray.data` logger as Ray configured it: its console handler and its file handler (the session's
    ray-data.log)."""
    logger = logging.getLogger("ray.data._internal.execution.streaming_executor_state")
    quiet_ray_console()
    quiet_ray_console()  # a second call adds nothing
    own_error = _remote(_raised(VidfuseError(DAMAGED)))
    logger.error("An exception was raised from a task (own error)", exc_info=own_error)
    logger.warning(f"Split 1 epoch 0 get() failed after 0 rows: {own_error}")
    logger.error("An exception was raised from a task (a bug)", exc_info=_raised(ValueError("bug")))
    logger.warning("Operator is falling behind")
    logger.info("Dataset val_7 execution finished in 1.31 seconds")
    logging.getLogger("ray.data._internal.progress").warning("Progress bars disabled. To enable, ...")

    console = ray_data_console.getvalue()
    assert "(a bug)" in console and "ValueError: bug" in console and "Operator is falling behind" in console
    assert "own error" not in console and "Split 1 epoch 0" not in console and "VidfuseError" not in console
    assert "execution finished" not in console and "Progress bars disabled" not in console
    kept = ray_data_logged()
    assert "(own error)" in kept and "Split 1 epoch 0 get() failed" in kept and "(a bug)" in kept
    assert "val_7 execution finished" in kept and "Progress bars disabled" in kept


def test_ray_cores_console_drops_own_errors_for_tune(record_factory):
    """Tune logs "Trial task failed for trial ..." with the trial's error through the `ray` logger's console
    handler (Ray core's), in the driver."""
    quiet_ray_console()
    tune_logger = logging.getLogger("ray.tune.execution.tune_controller")
    handlers = logging.getLogger("ray").handlers
    assert handlers

    def shown(error: BaseException) -> bool:
        record = tune_logger.makeRecord(tune_logger.name, logging.ERROR, __file__, 1, "Trial task failed for trial "
                                        "t_00000", None, (type(error), error, error.__traceback__))
        return all(handler.filter(record) for handler in handlers)

    assert not shown(_remote(_raised(VidfuseError(DAMAGED))))
    assert shown(_remote(_raised(ValueError("bug"))))

    tune_tune = logging.getLogger("ray.tune.tune")  # Python a command-line user cannot run; vidfuse says --resume
    restore_hint = tune_tune.makeRecord(tune_tune.name, logging.WARNING, __file__, 1, "Experiment has been "
                                        "interrupted, but the most recent state was saved.\nResume experiment with: "
                                        "Tuner.restore(path=\"/x/smoke\", trainable=...)", None, None)
    assert not all(handler.filter(restore_hint) for handler in handlers)
    other = tune_tune.makeRecord(tune_tune.name, logging.WARNING, __file__, 1, "Trial t_00001 failed", None, None)
    assert all(handler.filter(other) for handler in handlers)


def test_ray_trains_own_deprecated_data_option_warns_no_more(record_factory):
    """Ray Train's default ingest options set `exclude_resources` in every run's DatasetManager: two lines of a
    RayDeprecationWarning with its source line, on the console of every run. Other warnings stay."""
    from ray.train import DataConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DataConfig.default_ingest_options()
        assert [str(w.message) for w in caught if "exclude_resources" in str(w.message)]  # what it does without
        caught.clear()
        quiet_ray_console()
        DataConfig.default_ingest_options()
        warnings.warn("another deprecation", DeprecationWarning)
    assert [str(w.message) for w in caught] == ["another deprecation"]


def test_train_workers_console_drops_own_errors(record_factory):
    """Ray Train configures a handler named "console" on its `ray.train` logger (here a stand-in, writing to a
    list); `quiet_train_worker_console` makes it drop hidden records, once, and leaves other handlers alone."""
    shown, filed = [], []

    class ListHandler(logging.Handler):
        def __init__(self, name: str, into: list) -> None:
            super().__init__()
            self.name, self.into = name, into

        def emit(self, record: logging.LogRecord) -> None:
            self.into.append(record.getMessage())

    train_logger = logging.getLogger("ray.train")
    handlers = [ListHandler(ray_console.TRAIN_CONSOLE_HANDLER, shown), ListHandler("file_train_app_worker", filed)]
    for handler in handlers:
        train_logger.addHandler(handler)
    try:
        quiet_ray_console()
        quiet_train_worker_console()
        quiet_train_worker_console()
        util = logging.getLogger("ray.train.v2._internal.util")
        util.error(f"Error in training function:\n{_formatted_traceback()}")
        util.error("Error in training function:\nTraceback ...\nValueError: bug")
    finally:
        for handler in handlers:
            train_logger.removeHandler(handler)
    assert shown == ["Error in training function:\nTraceback ...\nValueError: bug"]
    assert len(filed) == 2 and "VidfuseError" in filed[0]
    assert handlers[0].filters == [ray_console.not_hidden] and handlers[1].filters == []


PREEMPTION_WATCHER_LINE = (
    "[2026-11-29 18:34:59,191 E 2369 2396] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and ID: "
    "'58b26acf2bd450c2df36f77f01000000' has constructor arguments in the object store and max_restarts > 0. If the "
    "arguments in the object store go out of scope or are lost, the actor restart will fail. See "
    "https://github.com/ray-project/ray/issues/53727 for more details."
)


def test_the_command_line_makes_ray_drop_its_actor_restart_note_from_worker_output():
    """Ray Train's controller writes PREEMPTION_WATCHER_LINE at every run's start; the driver prints what its workers
    write through Ray's deduplicator. In a fresh interpreter, as `launch.py` runs: the command line (here its
    `--help`, which imports the command and so Ray) leaves that deduplicator dropping the line and passing others."""
    code = textwrap.dedent(f"""
        import json
        from vidfuse.cli import main
        try:
            main(["train", "--help"])
        except SystemExit:
            pass
        from ray._private.ray_logging import stdout_deduplicator
        batches = stdout_deduplicator.deduplicate({{"ip": "10.0.0.1", "pid": 2369,
                                                   "lines": [{PREEMPTION_WATCHER_LINE!r}, "epoch 1 batch 2/21"]}})
        print(json.dumps([line for batch in batches for line in batch["lines"]]))
    """)
    env = {key: value for key, value in os.environ.items() if key != "RAY_DEDUP_LOGS_SKIP_REGEX"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["epoch 1 batch 2/21"]
