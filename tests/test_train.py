"""Training on Ray Train with tiny models on the tiny synthetic set: learning, resume, a dead worker, bad input.

Each Train run costs ~15-20 s on 2 cores plus ~10 s an epoch, so the suite runs three: one straight 2-worker run
(shared by the learning and resume tests), one stopped-then-resumed run, and one with a worker killed mid-run.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vidfuse import config as config_lib
from vidfuse.cli import main
from vidfuse.data.pipeline import eval_clips, video_table
from vidfuse.data.transforms import to_model_input
from vidfuse.engine import rundir
from vidfuse.engine.checkpoint import load_checkpoint
from vidfuse.engine.driver import FAULT_ENV, build_trainer, failure_reason, train
from vidfuse.engine.ray_console import TRAIN_CONSOLE_LOG_LEVEL, quiet_train_worker_console
from vidfuse.engine.ray_runtime import ensure_ray, release_ray
from vidfuse.engine.train_loop import resumed_best_score
from vidfuse.errors import VidfuseError, root_cause
from vidfuse.models import build_model, model_from_config


def tiny_config(tiny_dataset, storage, name: str, **extra: object) -> config_lib.Config:
    overrides = {
        "model.arch": "resnet", "model.depth": 10, "model.shortcut": "A", "model.fusion": "factorized",
        "model.fusion_dim": 16, "data.path": str(tiny_dataset.parquet), "data.sample_duration": 8,
        "data.sample_size": 32, "data.n_val_clips": 1, "data.min_crop_scale": 1.0, "data.hflip": False,
        "model.dropout": 0.0, "optim.optimizer": "adamw", "optim.lr": 0.002, "optim.weight_decay": 0.0,
        "optim.scheduler": "cosine", "optim.warmup_epochs": 1, "run.epochs": 5, "run.batch_size": 8, "run.workers": 2,
        "run.storage": str(storage), "run.name": name, "run.max_failures": 0, **extra,
    }
    return config_lib.load(None, [f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def straight_run(ray_session, tiny_dataset, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    return train(tiny_config(tiny_dataset, storage, "straight", **{"run.deterministic": True}))


def _decode(frames: list[bytes]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in frames]


def _centre_clips(cfg: config_lib.Config, subset: str) -> tuple[list[torch.Tensor], list[int]]:
    """The val-mode clips of every video of `subset`, made without Ray: one (n, C, T, H, W) tensor per video."""
    labels = {v["video_index"]: v["label"] for v in video_table(cfg.data.path, split=cfg.data.split, subset=subset)}
    table = pq.read_table(cfg.data.path, columns=["video_index", "frames", "height", "width"]).to_pylist()
    clips, targets = [], []
    for row in table:
        if row["video_index"] in labels:
            video, _ = eval_clips(_decode(row["frames"]), sample_duration=cfg.data.sample_duration,
                                  sample_size=cfg.data.sample_size, short_side=min(row["height"], row["width"]),
                                  sample_stride=cfg.data.sample_stride, n_clips=cfg.data.n_val_clips)
            clips.append(to_model_input(torch.from_numpy(video), norm=cfg.data.norm))
            targets.append(labels[row["video_index"]])
    return clips, targets


def _val_video_accuracy(run_dir, cfg: config_lib.Config) -> float:
    """Recompute the val video accuracy of `last.pt` without Ray: score every val clip, average per video."""
    model = model_from_config(cfg.model, cfg.data)
    model.load_state_dict(load_checkpoint(run_dir / "last.pt")["model"])
    model.eval()
    clips, targets = _centre_clips(cfg, "val")
    with torch.no_grad():
        predicted = [model(video).softmax(1).mean(0).argmax().item() for video in clips]  # (n, classes) per video
    return float(np.mean(np.array(predicted) == np.array(targets)))


def _train_loss(model: torch.nn.Module, clips: list[torch.Tensor], targets: list[int]) -> float:
    """Cross-entropy on fixed centre clips of the training videos, with BatchNorm statistics recomputed on those
    clips first ("precise BN"), so that an initial and a trained model are compared as the same kind of function."""
    inputs = torch.cat(clips)  # (videos * n_val_clips, C, T, H, W)
    model = copy.deepcopy(model)
    for norm in model.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the forward passes below
    with torch.no_grad():
        model.train()(inputs)
        logits = model.eval()(inputs)  # (videos * n_val_clips, classes)
    repeats = torch.tensor([len(video) for video in clips])
    return torch.nn.functional.cross_entropy(logits, torch.tensor(targets).repeat_interleave(repeats)).item()


def test_two_workers_learn_and_log_every_metric(straight_run, tiny_dataset):
    records = rundir.read_metrics(straight_run)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    for record in records:
        assert set(rundir.METRIC_KEYS) <= set(record)
        assert 0 <= record["val_video_acc"] <= 1 and record["clips_per_s"] > 0
    cfg = rundir.read_config(straight_run)
    torch.manual_seed(cfg.run.seed)  # the workers' initial weights
    initial = model_from_config(cfg.model, cfg.data)
    trained = model_from_config(cfg.model, cfg.data)
    trained.load_state_dict(load_checkpoint(straight_run / "last.pt")["model"])
    train_clips = _centre_clips(cfg, "train")  # decoded once, scored by both models
    assert _train_loss(trained, *train_clips) < 0.9 * _train_loss(initial, *train_clips)  # 5 steps of 8: 0.6-0.8
    # cosine with one warm-up epoch over 5 epochs: lr/2, the full lr, then down the cosine over the last 4
    half_cosine = [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert [r["lr"] for r in records] == pytest.approx([0.001] + [0.002 * f for f in half_cosine])
    assert records[-1]["val_video_acc"] == pytest.approx(_val_video_accuracy(straight_run, cfg), abs=1e-9)
    assert records[-1]["val_videos"] == len(video_table(tiny_dataset.parquet, split=1, subset="val"))


def test_each_epoch_and_worker_shuffles_with_its_own_seed():
    from vidfuse.engine.train_loop import shuffle_seed

    seeds = {(epoch, rank): shuffle_seed(0, epoch, rank) for epoch in (1, 2, 3) for rank in (0, 1)}
    assert len(set(seeds.values())) == 6 and seeds[(2, 1)] == shuffle_seed(0, 2, 1) != shuffle_seed(1, 2, 1)


def test_checkpoints_hold_the_whole_state_and_load_weights_only(straight_run):
    last = torch.load(straight_run / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "config", "labels", "vidfuse_version"} <= set(last)
    assert last["epoch"] == 5 and last["config"]["run"]["name"] == "straight"
    best = load_checkpoint(straight_run / "best.pt")
    best_epoch = max(rundir.read_metrics(straight_run), key=lambda r: (r["val_video_acc"], -r["val_loss"]))["epoch"]
    assert best["epoch"] == best_epoch
    assert rundir.read_config(straight_run).model.num_classes == len(last["labels"])
    meta = json.loads((straight_run / rundir.META).read_text())
    model = build_model(arch="resnet", depth=10, shortcut="A", num_classes=len(last["labels"]), fusion="factorized",
                        fusion_dim=16)
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())


def test_a_stopped_run_resumes_to_the_straight_runs_every_digit(straight_run, tiny_dataset, tmp_path, monkeypatch):
    """The straight run's config (`run.deterministic`: the same clips to the same workers in the same order, as Ray
    Data keeps its tasks' order and each worker's local shuffle is seeded), trained again but stopped in epoch 2
    and resumed, ends exactly as the straight run: every metric of every epoch and every weight. So a run
    repeats, its checkpoint holds all the state training needs, and the resumed epochs draw the windows and crops
    the straight run drew (`pipeline.continue_draws`), not those of its first epochs again. A failed resume
    leaves the run's config as it was."""
    cfg = config_lib.apply_overrides(rundir.read_config(straight_run), [f"run.storage={tmp_path}", "run.name=stopped"])
    options = build_trainer(cfg).data_config._user_execution_options
    assert options["train"].preserve_order and options["val"].preserve_order
    monkeypatch.setenv(FAULT_ENV, f"epoch=2,rank=0,marker={tmp_path / 'killed'}")
    with pytest.raises(VidfuseError, match="failed"):
        train(cfg)
    assert [r["epoch"] for r in rundir.read_metrics(tmp_path / "stopped")] == [1]
    saved = (tmp_path / "stopped" / rundir.CONFIG).read_bytes()
    monkeypatch.setenv(FAULT_ENV, f"epoch=2,rank=0,marker={tmp_path / 'killed-again'}")
    retry = rundir.read_config(tmp_path / "stopped")
    retry.data.decode_workers = 2  # a setting that --resume may change ...
    with pytest.raises(VidfuseError, match="failed"):
        train(retry, resume=True)
    assert (tmp_path / "stopped" / rundir.CONFIG).read_bytes() == saved  # ... is not kept by a failed attempt
    monkeypatch.delenv(FAULT_ENV)
    run_dir = train(rundir.read_config(tmp_path / "stopped"), resume=True)
    timing = ("clips_per_s", "epoch_seconds")
    resumed, straight = ([{k: v for k, v in r.items() if k not in timing} for r in rundir.read_metrics(run)]
                         for run in (run_dir, straight_run))
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5] and resumed == straight
    weights = [load_checkpoint(run / "last.pt")["model"] for run in (run_dir, straight_run)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 5


def test_resumed_run_must_beat_the_best_score_so_far(straight_run):
    state = load_checkpoint(straight_run / "last.pt")
    best = max(rundir.val_score(r) for r in rundir.read_metrics(straight_run))
    assert resumed_best_score(state) == best
    # a checkpoint written before val_score kept the best val video accuracy alone: that is the bar
    old_format = {k: v for k, v in state.items() if k != "best_val_score"} | {"best_val_video_acc": 0.75}
    assert resumed_best_score(old_format) == 0.75
    assert resumed_best_score({"epoch": 1}) == -1.0  # no record of a best: any epoch beats it


def test_dead_worker_is_restarted_from_the_last_checkpoint(ray_session, tiny_dataset, tmp_path, monkeypatch):
    """Also the run with `data.decode_on=worker` (one run instead of two, for the suite's time): Ray Data only
    picks JPEGs, each Train worker decodes and crops its batches on its device (the CPU here), and validation
    still scores exactly the clips `eval_clips` makes."""
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"epoch=2,rank=1,marker={marker}")
    run_dir = train(tiny_config(tiny_dataset, tmp_path, "faulty", **{"run.max_failures": 1, "run.epochs": 2,
                                                                     "data.decode_on": "worker"}))
    assert marker.exists()  # the worker really died, in epoch 2
    records = rundir.read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]  # restarted from epoch 1's checkpoint: epoch 1 not trained again
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    cfg = rundir.read_config(run_dir)
    assert cfg.data.decode_on == "worker"
    assert records[-1]["val_video_acc"] == pytest.approx(_val_video_accuracy(run_dir, cfg), abs=1e-9)


def test_resume_refuses_to_change_what_the_run_trains(straight_run, capsys):
    saved = (straight_run / rundir.CONFIG).read_bytes()
    code = main(["train", "--storage", str(straight_run.parent), "--name", straight_run.name, "--resume",
                 "--epochs", "6", "--set", "model.depth=18"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--resume cannot change model.depth (10 in" in err[0] and "18 asked" in err[0]
    assert (straight_run / rundir.CONFIG).read_bytes() == saved  # the run folder is untouched
    resumed = config_lib.resume_config(rundir.read_config(straight_run), ["run.epochs=6", "data.decode_workers=2"],
                                       source="config.yaml")
    assert (resumed.run.epochs, resumed.data.decode_workers) == (6, 2)  # how it runs may change


def test_existing_run_is_not_overwritten(straight_run, tiny_dataset, tmp_path, capsys):
    code = main(["train", "--data", str(tiny_dataset.parquet), "--storage", str(straight_run.parent),
                 "--name", straight_run.name])
    assert code == 2 and "--resume" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()  # any folder that is not a run left at its start (e.g. a Tune experiment)
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    code = main(["train", "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path), "--name", "mine",
                 "--set", "run.batch_size=8"])
    assert code == 2 and "run folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_resume_refuses_a_data_set_with_other_classes(straight_run, tiny_dataset, tmp_path, capsys):
    """The checkpoint's classifier rows are the run's classes: other data would train on the wrong labels."""
    from vidfuse.data.prepare import shard_paths

    other = tmp_path / "other.parquet"  # the same videos under other class names, in the shards and _meta.json
    shutil.copytree(tiny_dataset.parquet, other)
    meta = json.loads((other / "_meta.json").read_text())
    meta["labels"] = [f"other {name}" for name in meta["labels"]]
    (other / "_meta.json").write_text(json.dumps(meta))
    for shard in shard_paths(other):
        table = pq.read_table(shard)
        names = [meta["labels"][label] for label in table["label"].to_pylist()]
        pq.write_table(table.set_column(table.schema.get_field_index("label_name"), "label_name",
                                        pa.array(names, type=table.schema.field("label_name").type)), shard)
    saved = (straight_run / rundir.CONFIG).read_bytes()
    code = main(["train", "--storage", str(straight_run.parent), "--name", straight_run.name, "--resume",
                 "--epochs", "6", "--data", str(other)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{other} does not hold the classes the run was trained on" in err[0]
    assert (straight_run / rundir.CONFIG).read_bytes() == saved


@pytest.mark.parametrize("args, fragment", [
    (["--data", "/nonexistent/data.parquet"], "/nonexistent/data.parquet"),
    (["--split", "4"], "data.split=4"),
    (["--set", "model.shortcut=B", "--set", "model.pretrain_path={ckpt}"], "{ckpt}"),
    (["--set", "run.batch_size=32"], "split 1 has 8 train videos, not one full batch for each of run.workers=2"),
    (["--set", "model.pretrain_path=/nowhere/r.pth"], "checkpoint not found: /nowhere/r.pth (model.pretrain_path"),
    (["--set", "run.batch_size=3"], "run.batch_size=3 gives each of run.workers=2 fewer than 2 clips per step"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment, tiny_dataset, tmp_path, capsys):
    source = build_model(arch="resnet", depth=10, shortcut="A", num_classes=400)
    ckpt = tmp_path / "resnet-10-kinetics.pth"
    torch.save({"epoch": 200, "arch": "resnet-10", "optimizer": {},
                "state_dict": {f"module.{k}": v for k, v in source.backbone.state_dict().items()}}, ckpt)
    args = [a.format(ckpt=ckpt) for a in args]
    base = ["train", "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path), "--name", "bad",
            "--set", "model.depth=10", "--set", "data.sample_size=32", "--set", "data.sample_duration=8",
            "--set", "run.batch_size=8"]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment.format(ckpt=ckpt) in err[0]
    assert not (tmp_path / "bad" / rundir.CONFIG).exists()


def test_gpus_the_local_ray_lacks_fail_before_the_run_folder(ray_session, tiny_dataset, tmp_path, capsys):
    """Ray would wait forever to place workers on GPUs that a local machine does not have."""
    code = main(["train", "--data", str(tiny_dataset.parquet), "--storage", str(tmp_path), "--name", "gpu",
                 "--workers", "2", "--gpus-per-worker", "1", "--set", "run.batch_size=8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "run.workers=2 x run.gpus_per_worker=1 needs 2 GPUs but the local Ray has 0" in err[0]
    assert not (tmp_path / "gpu").exists()


def test_a_cluster_that_lacks_a_runs_cpus_or_gpus_now_gets_a_warning(ray_session, capsys, monkeypatch):
    """A joined cluster may add nodes, so it is no error; but on one of fixed size a `tune` trial waited for ever
    for its decoder's CPU (0.25 driver + 1 worker + 1 decoder on a 2-CPU head), with one Ray Data log line."""
    from vidfuse.engine.driver import check_resources

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # as under `ray job submit`: the session's Ray has 4 CPUs
    config = config_lib.load(overrides=["run.workers=3", "run.gpus_per_worker=0"])
    check_resources(config)  # 3 workers + 1 decoder
    assert capsys.readouterr().err == ""
    check_resources(config, driver_cpus=0.25)
    assert capsys.readouterr().err.strip() == (
        "warning: a run of run.workers=3 and one decoder needs 4.25 CPUs (it has 4) of the cluster: it waits until "
        "the cluster adds nodes, for ever on a cluster of fixed size")
    config_lib.set_value(config, "run.gpus_per_worker", 1)
    check_resources(config)
    assert "needs 3 GPUs (it has 0) of the cluster" in capsys.readouterr().err


def test_a_relative_storage_in_a_ray_job_is_refused(tiny_dataset, tmp_path, capsys, monkeypatch):
    """In a job the working directory is Ray's temporary copy of --working-dir: the run folder went there."""
    from vidfuse.engine.ray_runtime import RAY_JOB_ENV

    monkeypatch.setenv(RAY_JOB_ENV, "{}")
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--data", str(tiny_dataset.parquet), "--storage", "runs", "--name", "job"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["vidfuse: error: run.storage=runs is a relative path, which in a Ray job is inside "
                                 "the job's temporary copy of --working-dir: pass --storage an absolute path on a "
                                 "file system every node mounts (NFS)"]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_names_the_workers_own_error():
    from ray.exceptions import RayTaskError
    from ray.train import ControllerError, WorkerGroupError

    inner = ValueError("Expected more than 1 value per channel when training\nsecond line")
    wrapped = RayTaskError("train_fn", "Traceback (most recent call last): ...", inner)
    error = WorkerGroupError("rank 1 failed\nTraceback ...", {1: wrapped, 3: RuntimeError("later")})
    assert failure_reason(error) == "worker 1: ValueError: Expected more than 1 value per channel when training"
    assert failure_reason(ControllerError(TimeoutError("no placement"))) == "TimeoutError: no placement"
    try:  # Ray Data raises its UserCodeException from the error of the code it ran
        try:
            raise ValueError("expected non-negative integer")
        except ValueError as cause:
            raise RuntimeError("UDF failed to process a data block.") from cause
    except RuntimeError as chained:
        assert failure_reason(WorkerGroupError("x", {0: chained})) == \
            "worker 0: ValueError: expected non-negative integer"
    own = VidfuseError("video v_a_g01_c01: one of its frames 1-8 does not decode\n(more)")
    assert failure_reason(WorkerGroupError("x", {2: own})) == "worker 2: video v_a_g01_c01: one of its frames 1-8 " \
                                                              "does not decode"  # vidfuse's own words, no type


def test_a_workers_own_error_leaves_it_as_its_message_alone(monkeypatch, tmp_path):
    """A damaged frame reaches a Train worker as Ray's RayTaskError(VidfuseError), whose text carries the decoder
    task's remote traceback; the worker re-raises vidfuse's own message alone, so Ray Train's log of the failed
    worker is a few lines (measured with a damaged data set: the workers' part of the console fell from ~200 lines
    to 12). It keeps the message in failed.txt, where the workers of a retry find it and return at once."""
    import traceback

    from ray.exceptions import RayTaskError

    from vidfuse.engine import train_loop

    message = "video v_a_g01_c01: one of its frames 1-8 does not decode (...): the data set is damaged"
    own = VidfuseError(f"{message}\nFailed to apply UDF transform after 1/1 attempts\nTo change retry attempts, ...")
    remote = RayTaskError("MapBatches(decode_clips)", "Traceback (most recent call last):\n" + "  File ...\n" * 30,
                          cause=own).as_instanceof_cause()
    assert isinstance(remote, VidfuseError) and len(str(remote).splitlines()) > 30

    attempts = []

    def meets_a_damaged_frame(_: dict) -> None:
        attempts.append(1)
        raise remote

    monkeypatch.setattr(train_loop, "_train", meets_a_damaged_frame)
    with pytest.raises(VidfuseError) as error:
        train_loop.train_loop_per_worker({"run_dir": str(tmp_path)})
    assert str(error.value) == message and error.value.__cause__ is None and error.value.__suppress_context__
    assert len("".join(traceback.format_exception(error.value)).splitlines()) <= 8
    assert rundir.stop_reason(tmp_path, rundir.FAILED) == message
    train_loop.train_loop_per_worker({"run_dir": str(tmp_path)})  # a retry's worker: returns, trains nothing
    assert len(attempts) == 1
    try:  # vidfuse's own error raised from another one: its own message, not the one under it
        raise VidfuseError("a.pth: not a checkpoint of resnet-10") from OSError("read error")
    except VidfuseError as chained:
        assert root_cause(chained) is chained


def test_a_shard_ray_data_could_not_read_fails_the_worker_once_naming_it(monkeypatch, tmp_path, failed_shard_read):
    """A page of a shard that does not parse fails in Ray Data's reader, as an OSError (not a VidfuseError): the run
    was retried, each time with ~120 lines of tracebacks. The worker now ends on vidfuse's line naming the shard,
    kept in failed.txt, so a retry returns at once (measured: 493 console lines -> 8)."""
    from ray.exceptions import RayTaskError

    from vidfuse.engine import train_loop

    shard = tmp_path / "data.parquet" / "part-00000.parquet"
    unreadable = failed_shard_read(shard, "1/10")

    def meets_a_damaged_page(_: dict) -> None:
        raise RayTaskError("SplitCoordinator.get", "Traceback ...", unreadable).as_instanceof_cause()

    monkeypatch.setattr(train_loop, "_train", meets_a_damaged_page)
    message = (f"{shard}: not a readable Parquet shard (Couldn't deserialize thrift: don't know what type:): the data "
               "set is damaged; prepare it again")
    with pytest.raises(VidfuseError) as error:
        train_loop.train_loop_per_worker({"run_dir": str(tmp_path)})
    assert str(error.value) == message
    assert rundir.stop_reason(tmp_path, rundir.FAILED) == message


def test_a_model_too_large_for_memory_is_one_line_naming_its_size(tiny_dataset, tmp_path):
    """`model.fusion_dim=100000000` failed in each worker with a 50-line allocator traceback, twice (Ray Train
    retried it), before the run's line. Running out of memory while the model is built or moved is now vidfuse's
    own error, which `train_loop_per_worker` ends the run on without a retry. A dimension of 10**12 needs ~1 PB,
    past any machine's address space, so the allocation fails at once everywhere."""
    from vidfuse.engine.train_loop import explain_out_of_memory
    from vidfuse.models import count_parameters

    cfg = tiny_config(tiny_dataset, tmp_path, "huge", **{"model.fusion": "hbp", "model.fusion_dim": 10**12,
                                                        "model.num_classes": 4})
    with torch.device("meta"):
        parameters = count_parameters(model_from_config(cfg.model, cfg.data))
    assert parameters > 10**14  # the projections alone: 10**12 x the channels of two stages
    with pytest.raises(VidfuseError) as error:
        with explain_out_of_memory(cfg, where="worker 0's cpu memory"):
            model_from_config(cfg.model, cfg.data)
    assert str(error.value) == (
        f"the model does not fit in worker 0's cpu memory: {parameters:,} parameters ({parameters * 4 / 1e9:,.1f} "
        "GB as float32) with model.arch=resnet, model.depth=10, model.fusion=hbp, model.fusion_dim=1000000000000, "
        "model.num_classes=4; choose a smaller one")
    assert error.value.__cause__ is None and error.value.__suppress_context__
    with pytest.raises(VidfuseError, match="worker 1's cuda memory"):  # a GPU's own out-of-memory error
        with explain_out_of_memory(cfg, where="worker 1's cuda memory"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 PiB")
    with pytest.raises(RuntimeError, match="^Expected more than 1 value per channel$"):  # any other error: as is
        with explain_out_of_memory(cfg, where="worker 0's cpu memory"):
            raise RuntimeError("Expected more than 1 value per channel")


def test_ray_console_shows_train_warnings_only_and_a_callers_ray_outlives_errors(ray_session, tiny_dataset,
                                                                               tmp_path):
    """Ray Train's INFO lines (its start-up, every checkpoint, two dicts of metrics an epoch) stay in its log
    files; `release_ray` (run before the CLI prints an error) shuts down only a Ray that vidfuse itself started or
    joined, not the caller's (here the tests')."""
    trainer = build_trainer(tiny_config(tiny_dataset, tmp_path, "quiet"))
    assert trainer.run_config.logging_config.log_level == TRAIN_CONSOLE_LOG_LEVEL == "WARNING"
    import logging

    from ray.train.v2._internal.execution import context  # logs "Reporting training result" under its file name

    reports = logging.getLogger(context.__file__)
    reports.setLevel(logging.NOTSET)
    quiet_train_worker_console()
    assert not reports.isEnabledFor(logging.INFO) and reports.isEnabledFor(logging.WARNING)
    ensure_ray(1)
    release_ray()
    assert ray_session.is_initialized()


def _diverging_epoch(**kwargs) -> None:
    """`train_one_epoch` of a linear model at an absurd learning rate (the weights overflow after the first step)."""
    from vidfuse.engine.train_loop import train_one_epoch

    torch.manual_seed(0)
    cfg = config_lib.load(None, ["optim.lr=1e38", "data.norm=imagenet", "run.precision=fp32"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 8 * 8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=kwargs.pop("lr", cfg.optim.lr))
    batches = [{"clip": torch.randint(0, 256, (4, 4, 8, 8, 3), dtype=torch.uint8),
                "label": torch.tensor([0, 1, 2, 0])} for _ in range(5)]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_one_epoch(model, optimizer, scaler, batches, cfg=cfg, device=torch.device("cpu"), epoch=3,
                    total_batches=len(batches), rank=0)


def test_a_diverged_loss_stops_the_epoch_with_one_clear_line(torch_one_thread):
    """The NaN loss of a later batch stops training with the epoch, batch and learning rate, instead of epochs at
    chance accuracy."""
    from vidfuse.engine.train_loop import Diverged

    with pytest.raises(Diverged) as error:
        _diverging_epoch()
    assert re.fullmatch(r"epoch 3 batch [2-5]: the training loss is nan: the run diverged; start a new one with a "
                        r"lower optim.lr \(this one: 1e\+38\) or with optim.grad_clip", str(error.value))


def test_every_worker_stops_at_the_batch_where_any_workers_loss_diverged(torch_one_thread, monkeypatch):
    """Each batch's loss is summed over the workers before the check, so a worker whose own loss is finite stops at
    the same batch as the one whose loss is not (instead of waiting for it in DDP's next all-reduce)."""
    from vidfuse.engine import train_loop

    summed = []

    def other_worker_diverges_at_batch_2(tensor: torch.Tensor) -> torch.Tensor:
        summed.append(tensor.clone())
        if tensor.numel() == 1 and len(summed) == 2:
            tensor += float("inf")  # the other worker's loss
        return tensor

    monkeypatch.setattr(train_loop, "_all_reduce_sum", other_worker_diverges_at_batch_2)
    with pytest.raises(train_loop.Diverged, match=r"^epoch 3 batch 2: the training loss is inf: "):
        _diverging_epoch(lr=1e-3)  # this worker's own loss stays finite
    assert [t.numel() for t in summed] == [1, 1] and all(torch.isfinite(t).all() for t in summed)


def test_a_diverged_run_ends_on_one_line_and_is_not_retried(ray_session, tiny_dataset, tmp_path):
    """Two workers at an absurd learning rate: both stop at the same batch, the run ends normally for Ray (so its
    `max_failures` retries do not train it again from the last checkpoint), and `train` fails with the reason
    that `diverged.txt` keeps (which a resume clears first)."""
    cfg = tiny_config(tiny_dataset, tmp_path, "diverged", **{"optim.optimizer": "sgd", "optim.lr": 1e38,
                                                              "optim.warmup_epochs": 0, "run.epochs": 3,
                                                              "run.max_failures": 1})
    with pytest.raises(VidfuseError) as error:
        train(cfg)
    run_dir = tmp_path / "diverged"
    reason = rundir.stop_reason(run_dir, rundir.DIVERGED)
    match = re.fullmatch(r"epoch (\d) batch \d+: the training loss is (nan|inf): the run diverged; start a new one "
                         r"with a lower optim.lr \(this one: 1e\+38\) or with optim.grad_clip", reason)
    assert match, reason
    assert str(error.value) == f"training run {run_dir} stopped: {reason}"  # not "failed": Ray saw no error
    assert [r["epoch"] for r in rundir.read_metrics(run_dir)] == list(range(1, int(match[1])))
    rundir.clear_stop_reasons(run_dir)
    assert rundir.stop_reason(run_dir, rundir.DIVERGED) is None


def test_a_damaged_data_set_fails_the_run_once_without_a_retry(ray_session, tiny_dataset, damaged_dataset, tmp_path,
                                                                 monkeypatch):
    """A retry from the last checkpoint would meet the damage again: with `max_failures=1` the retry's worker finds
    failed.txt and returns, so Ray's fit() ends without an error (a retry that trained would have failed again),
    and `train` fails with the message the first worker kept."""
    from vidfuse.engine import driver

    fits = []

    def recording_trainer(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        fit = trainer.fit

        def recorded_fit():
            fits.append("fit")
            result = fit()
            fits.append("returned")
            return result

        trainer.fit = recorded_fit
        return trainer

    monkeypatch.setattr(driver, "build_trainer", recording_trainer)
    cfg = tiny_config(tiny_dataset, tmp_path, "damaged", **{"data.path": damaged_dataset("train"),
                                                            "run.workers": 1, "run.epochs": 2, "run.max_failures": 1})
    logs = _ray_logs_dir()
    console_before = _sizes(logs.glob("worker-*.*"))
    with pytest.raises(VidfuseError) as error:
        train(cfg)
    run_dir = tmp_path / "damaged"
    reason = rundir.stop_reason(run_dir, rundir.FAILED)
    assert re.fullmatch(r"video v_\w+: one of its frames \d+-\d+ does not decode \(.+\): the data set is damaged; "
                        r"prepare it again", reason), reason
    assert fits == ["fit", "returned"]
    assert str(error.value) == f"training run {run_dir} failed: {reason} (no epoch finished)"
    # Ray's processes logged the error (Ray Data's log file has it) but not to their console (the worker-*.out and
    # .err files that Ray streams to the driver): vidfuse's line above is the only one
    console = _appended_text(logs.glob("worker-*.*"), console_before)
    assert reason in _appended_text((logs / "ray-data").glob("*.log"), {})
    assert "VidfuseError" not in console and "does not decode" not in console


def _ray_logs_dir() -> Path:
    import ray._private.worker

    return Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"


def _sizes(paths) -> dict[Path, int]:
    return {path: path.stat().st_size for path in paths}


def _appended_text(paths, sizes_before: dict[Path, int]) -> str:
    """What the files `paths` gained since `sizes_before` (all of a file that was not there)."""
    texts = []
    for path in paths:
        with open(path, "rb") as f:
            f.seek(sizes_before.get(path, 0))
            texts.append(f.read().decode(errors="replace"))
    return "".join(texts)
