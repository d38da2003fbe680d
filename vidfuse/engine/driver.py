"""The training driver: checks the inputs, sets up the run folder, and runs a Ray Train `TorchTrainer`.

The same code runs on a laptop (a local Ray is started when none is running and `RAY_ADDRESS` is unset) and on
a cluster (`ray job submit -- python launch.py train ...` joins it through `RAY_ADDRESS`). Bad input (no data
set, an empty split, a pretrained file of another architecture) fails here, before any worker starts, with one
line naming the file or value. `build_trainer` is also what each Tune trial runs (see `vidfuse.tuning`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

import ray
import ray.train
import torch
from ray.train.torch import TorchConfig, TorchTrainer

from vidfuse import config as config_lib
from vidfuse.data.pipeline import DECODER_CPUS, clip_dataset, continue_draws, video_table
from vidfuse.data.prepare import check_same_classes, read_meta
from vidfuse.data.transforms import Augment
from vidfuse.engine import rundir
from vidfuse.engine.ray_console import TRAIN_CONSOLE_LOG_LEVEL
from vidfuse.engine.ray_runtime import check_storage_in_job, ensure_ray
from vidfuse.engine.train_loop import steps_per_epoch, train_loop_per_worker, worker_batch_size
from vidfuse.errors import VidfuseError, first_line, root_cause
from vidfuse.files import read_text, write_json, write_text
from vidfuse.models import count_gflops, count_parameters, load_pretrained, model_from_config

FAULT_ENV = "VIDFUSE_FAULT"  # test-only: "epoch=E,rank=R,marker=PATH" kills worker R once in epoch E
SUBCLUSTER_LABEL = "ray-subcluster"  # node label of cluster.yaml: "training" (GPU) or "data" (CPU decoding)


class ValSplitDataConfig(ray.train.DataConfig):
    """Train's default sharding for `train` (`equal=True`: DDP needs the same number of steps on every worker),
    and an `equal=False` split of `val`, so that every validation clip is scored exactly once by some worker.
    One val pipeline (one decoder pool) serves all workers instead of one per worker.

    Each start of the workers (a new run, `--resume`, a restart after a failure) continues `train`'s random draws
    after the epochs the run has recorded (`pipeline.continue_draws`), so that the epochs after a stop draw the
    clips they would have drawn without it: the workers continue from the checkpoint of the last recorded epoch
    (`run.checkpoint_every` 1, the default; with more, a restart from an older checkpoint draws new clips)."""

    def __init__(self, *, run_dir: Path, execution_options: dict[str, Any] | None = None) -> None:
        super().__init__(execution_options=execution_options)
        self.run_dir = run_dir

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        if "train" in datasets:  # this actor's own copy of the dataset
            continue_draws(datasets["train"], executions_done=len(rundir.read_metrics(self.run_dir)))
        others = {name: ds for name, ds in datasets.items() if name != "val"}
        output = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
        if "val" not in datasets:  # Train V2 configures one dataset at a time
            return output
        val = datasets["val"].copy(datasets["val"])
        val.set_name("val")
        val.context.execution_options = self._resolve_execution_options("val")
        for rank, split in enumerate(val.streaming_split(world_size, equal=False)):
            output[rank]["val"] = split
        return output


def check_data(config: config_lib.Config) -> dict[str, Any]:
    """Read the data set's meta data and the videos of the split; clear errors for what is missing."""
    path = Path(config.data.path)
    if not config.data.path:
        raise VidfuseError("no data set given: pass --data DATA.parquet (made by `launch.py prepare`)")
    if not path.exists():
        raise VidfuseError(f"data set not found: {path}")
    meta = read_meta(path)
    labels = list(meta["labels"])
    val_subset = "test" if config.data.val_from_test else "val"
    # video_table raises one clear line for a split the data set lacks or an empty subset
    train_videos = video_table(path, split=config.data.split, subset="train")
    val_videos = video_table(path, split=config.data.split, subset=val_subset)
    if worker_batch_size(config.run.batch_size, config.run.workers) < 2:
        raise VidfuseError(f"run.batch_size={config.run.batch_size} gives each of run.workers={config.run.workers} "
                           "fewer than 2 clips per step, too few for BatchNorm: raise run.batch_size")
    if steps_per_epoch(len(train_videos), config.run.batch_size, config.run.workers) == 0:
        raise VidfuseError(f"{path}: split {config.data.split} has {len(train_videos)} train videos, not one full "
                           f"batch for each of run.workers={config.run.workers} (run.batch_size="
                           f"{config.run.batch_size}): lower run.batch_size")
    if config.model.num_classes == 0:
        config.model.num_classes = len(labels)
    elif config.model.num_classes != len(labels):
        raise VidfuseError(
            f"model.num_classes={config.model.num_classes} but {path} has {len(labels)} classes")
    num_videos = 1 + max(v["video_index"] for v in train_videos + val_videos)
    val_video_labels = [-1] * num_videos
    for video in val_videos:
        val_video_labels[video["video_index"]] = int(video["label"])
    return {
        "labels": labels, "val_subset": val_subset, "num_train_videos": len(train_videos),
        "val_video_labels": val_video_labels,
    }


def resolve_pretrained(config: config_lib.Config) -> None:
    """Make `model.pretrain_path` absolute (the workers run elsewhere), raising if the file is missing."""
    if not config.model.pretrain_path:
        return
    path = Path(config.model.pretrain_path)
    if not path.is_file():
        raise VidfuseError(f"pretrained checkpoint not found: {path} (model.pretrain_path: download it, see "
                           "README, or --set model.pretrain_path= to train from scratch)")
    config.model.pretrain_path = str(path.resolve())


def _describe_model(config: config_lib.Config) -> dict[str, Any]:
    """Parameters and GFLOPs per clip (on the meta device: no compute); a bad pretrained file fails here."""
    if config.model.pretrain_path:
        load_pretrained(model_from_config(config.model, config.data), config.model.pretrain_path)
    with torch.device("meta"):
        model = model_from_config(config.model, config.data)
    return {
        "parameters": count_parameters(model),
        "gflops": count_gflops(model, frames=config.data.sample_duration, size=config.data.sample_size),
    }


def check_resources(config: config_lib.Config, *, driver_cpus: float = 0.0) -> None:
    """What the run's workers (plus `driver_cpus`, a Tune trial's own) and one decoder ask of Ray, against what it
    has now. A local Ray (no RAY_ADDRESS) has all it will ever have: asking for more would wait forever for the
    workers to be placed, so it is an error. A cluster may add nodes on demand, so there it is a warning: on one
    of fixed size the run would wait without end (Ray Data's only word on it is a log line)."""
    run, available = config.run, ray.cluster_resources()
    if not os.environ.get("RAY_ADDRESS"):
        for resource, key, per_worker in (("GPU", "run.gpus_per_worker", run.gpus_per_worker),
                                          ("CPU", "run.cpus_per_worker", run.cpus_per_worker)):
            need, have = run.workers * per_worker, available.get(resource, 0)
            if need > have:
                raise VidfuseError(
                    f"run.workers={run.workers} x {key}={per_worker:g} needs {need:g} {resource}s but the local "
                    f"Ray has {have:g}: ask for fewer, or submit to a cluster (ray job submit, see docs/cluster.md)")
        return
    cpus = run.workers * run.cpus_per_worker + driver_cpus + DECODER_CPUS
    gpus = run.workers * run.gpus_per_worker
    short = [f"{need:g} {name}s (it has {available.get(name, 0):g})"
             for name, need in (("CPU", cpus), ("GPU", gpus)) if need > available.get(name, 0)]
    if short:
        print(f"warning: a run of run.workers={run.workers} and one decoder needs {' and '.join(short)} of the "
              "cluster: it waits until the cluster adds nodes, for ever on a cluster of fixed size",
              file=sys.stderr)


def failure_reason(error: Exception) -> str:
    """One line for a failed `trainer.fit()`: the first worker's (or the controller's) own error, not Ray's
    multi-line wrapper around it."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, cause = min(failures.items())
        where = f"worker {rank}: "
    else:
        cause, where = getattr(error, "controller_failure", None) or error, ""
    cause = root_cause(cause)
    line = first_line(cause)
    if isinstance(cause, VidfuseError) and line:  # vidfuse's own message names the problem
        return f"{where}{line}"
    return f"{where}{type(cause).__name__}" + (f": {line}" if line else "")


def _fault_from_env() -> dict[str, Any] | None:
    text = os.environ.get(FAULT_ENV)
    if not text:
        return None
    fields = dict(item.split("=", 1) for item in text.split(","))
    return {"epoch": int(fields["epoch"]), "rank": int(fields.get("rank", 0)), "marker": fields["marker"]}


def _free_for_a_new_run(run_dir: Path) -> bool:
    """Whether a new run may use `run_dir`: it does not exist, is empty, or was left by a run that never finished
    an epoch (a config and no metrics: it failed at the start and holds nothing to keep)."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return True
    return (run_dir / rundir.CONFIG).is_file() and not (run_dir / rundir.METRICS).exists()


def build_trainer(config: config_lib.Config, *, callbacks: Sequence[Any] = (), resume: bool = False) -> TorchTrainer:
    """Check the inputs, write `config.yaml` / `meta.json` into the run folder and return the trainer.

    With `resume=False` an existing run folder is an error (nothing is overwritten; see `_free_for_a_new_run`).
    With `resume=True` the trainer continues from the run's latest checkpoint when there is one (Train V2 resumes
    a run by name), on a data set with the run's classes.
    """
    check_storage_in_job(config.run.storage)
    run_dir = rundir.run_dir_of(config)
    if not resume and not _free_for_a_new_run(run_dir):
        raise VidfuseError(f"run folder {run_dir} already exists: pass --resume to continue it, or another --name")
    config.data.path = str(Path(config.data.path).resolve()) if config.data.path else ""
    resolve_pretrained(config)
    data = check_data(config)
    trained_labels = rundir.read_meta(run_dir).get("labels") if resume else None
    if trained_labels:  # the checkpoint's classifier rows: the data must have the same classes
        check_same_classes(config.data.path, trained_labels)
    model_info = _describe_model(config)
    ensure_ray(config.run.workers * config.run.cpus_per_worker)  # after the checks: bad input starts no Ray
    check_resources(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, run_dir / rundir.CONFIG)
    write_json(run_dir / rundir.META, {
        "labels": data["labels"], "data": config.data.path, "split": config.data.split,
        "val_subset": data["val_subset"], **model_info,
    })
    if config.data.val_from_test:
        print("warning: validating on the official TEST list (data.val_from_test): choosing epochs or "
              "hyperparameters on it is selection on the test set, and its accuracy is no longer an honest estimate")
    if config.model.ft_begin_index > 0 and not config.model.pretrain_path:
        print(f"warning: model.ft_begin_index={config.model.ft_begin_index} freezes the first blocks of a randomly "
              "initialised backbone (no model.pretrain_path)")

    use_gpu = config.run.gpus_per_worker > 0
    resources = {"CPU": config.run.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = config.run.gpus_per_worker
    clip_options = dict(sample_duration=config.data.sample_duration, sample_size=config.data.sample_size,
                        sample_stride=config.data.sample_stride, n_val_clips=config.data.n_val_clips,
                        seed=config.run.seed, decode_workers=config.data.decode_workers,
                        decode_on=config.data.decode_on)
    augment = Augment(min_crop_scale=config.data.min_crop_scale, hflip=config.data.hflip)
    datasets = {
        "train": clip_dataset(config.data.path, split=config.data.split, subset="train", mode="train",
                              augment=augment, **clip_options),
        "val": clip_dataset(config.data.path, split=config.data.split, subset=data["val_subset"], mode="val",
                            **clip_options),
    }
    data_options = None
    if config.run.use_subclusters or config.run.deterministic:
        from ray.data import ExecutionOptions

        options = ExecutionOptions(
            # decode on the CPU nodes, train on the GPU nodes of cluster.yaml
            label_selector={SUBCLUSTER_LABEL: "data"} if config.run.use_subclusters else None,
            # blocks leave in the order of their tasks, so each worker gets the same clips every run
            preserve_order=config.run.deterministic,
        )
        data_options = {"train": options, "val": options}
    scaling = ray.train.ScalingConfig(
        num_workers=config.run.workers, use_gpu=use_gpu, resources_per_worker=resources,
        label_selector={SUBCLUSTER_LABEL: "training"} if config.run.use_subclusters else None,
    )
    loop_config = {
        "config": config.to_dict(), "run_dir": str(run_dir), "labels": data["labels"],
        "num_train_videos": data["num_train_videos"],
        "val_video_labels": data["val_video_labels"], "fault": _fault_from_env(),
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        datasets=datasets,
        dataset_config=ValSplitDataConfig(run_dir=run_dir, execution_options=data_options),
        run_config=ray.train.RunConfig(
            name=config.run.name,
            storage_path=str(run_dir.parent),
            callbacks=list(callbacks),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=config.run.keep_checkpoints,
                checkpoint_score_attribute=rundir.VAL_SCORE,
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=config.run.max_failures),
            logging_config=ray.train.LoggingConfig(log_level=TRAIN_CONSOLE_LOG_LEVEL),
        ),
    )


def train(config: config_lib.Config, *, resume: bool = False) -> Path:
    """Run (or with `resume`, continue) a training run; returns its run folder.

    A run whose training loss diverged ends with that reason (`RUN_DIR/diverged.txt`), and one that met vidfuse's own
    error with its message (`RUN_DIR/failed.txt`); neither is retried (`train_loop`). A resume that fails or
    diverges before it finishes an epoch puts the run's config.yaml back as it was, so that a plain `--resume`
    afterwards does not repeat the settings of the failed attempt (e.g. `--workers 3`)."""
    run_dir = rundir.run_dir_of(config)
    if resume and not (run_dir / rundir.CONFIG).exists():
        raise VidfuseError(f"nothing to resume: {run_dir} holds no run")
    saved_config = read_text(run_dir / rundir.CONFIG) if resume else None
    epochs_before = len(rundir.read_metrics(run_dir)) if resume else 0
    trainer = build_trainer(config, resume=resume)
    rundir.clear_stop_reasons(run_dir)  # a resumed run trains again from its last checkpoint
    try:
        trainer.fit()
        ray_error = None
    except ray.train.TrainingFailedError as exc:
        ray_error = failure_reason(exc)
    # vidfuse's own error as the first worker to meet it kept it (after which Ray's retries return at once)
    if error := rundir.stop_reason(run_dir, rundir.FAILED) or ray_error:
        hint = "continue it with --resume" if (run_dir / "last.pt").exists() else "no epoch finished"
        failure = f"failed: {error} ({hint})"
    elif diverged := rundir.stop_reason(run_dir, rundir.DIVERGED):
        failure = f"stopped: {diverged}"
    else:
        return run_dir
    if resume and len(rundir.read_metrics(run_dir)) == epochs_before:
        write_text(run_dir / rundir.CONFIG, saved_config)
    raise VidfuseError(f"training run {run_dir} {failure}") from None
