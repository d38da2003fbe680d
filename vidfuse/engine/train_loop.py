"""The per-worker training function that Ray Train runs on every worker (`train_loop_per_worker`).

Each worker builds the model (and loads `pretrain_path`), freezes `ft_begin_index`, wraps it with
`ray.train.torch.prepare_model` (DDP), then per epoch trains on its shard of the train stream, scores its share
of the validation videos, all-reduces the sums, steps the LR schedule and reports once to Ray (a barrier).
Rank 0 also writes the run folder: `metrics.jsonl`, `last.pt` and `best.pt`, and hands Ray a checkpoint every
`checkpoint_every` epochs and whenever the val video accuracy improves. A restarted or resumed worker group
continues from `ray.train.get_checkpoint()`. A run whose training loss diverges ends normally, on every worker at
once, with the reason in `RUN_DIR/diverged.txt` (not as a worker error, which Ray would retry); a run stopped by
vidfuse's own error (a damaged data set, a model too large for the worker's memory) is not retried either
(`train_loop_per_worker`).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

import vidfuse
from vidfuse import config as config_lib
from vidfuse.data.transforms import to_model_input
from vidfuse.data.worker_decode import clip_collate
from vidfuse.engine import metrics, rundir
from vidfuse.engine.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from vidfuse.engine.optim import build_optimizer, build_scheduler, current_lr, step_scheduler
from vidfuse.engine.precision import autocast
from vidfuse.engine.ray_console import quiet_train_worker_console
from vidfuse.errors import VidfuseError, first_line, own_error
from vidfuse.models import count_parameters, load_pretrained, model_from_config

CHECKPOINT_FILE = "checkpoint.pt"


class Diverged(VidfuseError):
    """The training loss is not finite: raised on every worker at the same batch, so that all stop together."""


@dataclass
class EpochStats:
    """Sums over every worker's clips, after all-reduce."""

    loss: float
    accuracy: float
    clips: int


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over all workers in place (through the GPU when the backend is NCCL)."""
    if dist.is_available() and dist.is_initialized():
        on_backend = tensor.cuda() if dist.get_backend() == "nccl" else tensor
        dist.all_reduce(on_backend, op=dist.ReduceOp.SUM)
        tensor.copy_(on_backend)
    return tensor


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _maybe_inject_fault(fault: dict | None, epoch: int, rank: int) -> None:
    """Test-only fault hook (`VIDFUSE_FAULT=epoch=E,rank=R,marker=PATH`): rank R dies once in epoch E, after
    its training batches. (Dying then, not at the very start of the epoch, leaves Ray's controller time to register
    the previous epoch's checkpoint, as it has in any real failure that is not right after a report.)"""
    if not fault or fault["epoch"] != epoch or fault["rank"] != rank:
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(f"worker {rank} killed in epoch {epoch}\n")
    os._exit(1)


def train_one_epoch(model, optimizer, scaler, batches, *, cfg: config_lib.Config, device, epoch: int,
                    total_batches: int, rank: int) -> EpochStats:
    """One epoch over `batches` (this worker's share); the loss and accuracy are summed over all workers.

    A loss that is not finite on any worker raises `Diverged` on every worker at that batch (as PySlowFast's NaN
    check stops a run): training on would only turn the weights into NaN and report epochs of chance accuracy.
    Each batch's loss is summed over the workers for this check (one scalar all-reduce a step), so that all of
    them stop together, and none waits in DDP's next all-reduce for one that stopped."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    sums = torch.zeros(3, dtype=torch.float64)  # loss * clips, correct clips, clips
    start, report_every = time.perf_counter(), max(1, total_batches // 10)
    for index, batch in enumerate(batches, start=1):
        clips = to_model_input(batch["clip"], norm=cfg.data.norm, device=device)  # (N, 3, T, H, W) float
        labels = batch["label"].to(device)
        with autocast(device, cfg.run.precision):
            logits = model(clips)  # (N, num_classes)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        n, loss_value = labels.numel(), loss.item()
        workers_loss_sum = _all_reduce_sum(torch.tensor([loss_value], dtype=torch.float64)).item()
        if not math.isfinite(workers_loss_sum):
            raise Diverged(f"epoch {epoch} batch {index}: the training loss is {workers_loss_sum}: the run "
                           f"diverged; start a new one with a lower optim.lr (this one: {cfg.optim.lr:g}) or with "
                           "optim.grad_clip")
        sums += torch.tensor([loss_value * n, (logits.argmax(1) == labels).sum().item(), n], dtype=torch.float64)
        if rank == 0 and (index % report_every == 0 or index == total_batches):
            rate = sums[2].item() / (time.perf_counter() - start)
            print(f"epoch {epoch} batch {index}/{total_batches} loss {loss_value:.4f} "
                  f"{rate:.1f} clips/s (rank 0)", flush=True)
    _all_reduce_sum(sums)
    clips = int(sums[2].item())
    return EpochStats(loss=sums[0].item() / max(1, clips), accuracy=sums[1].item() / max(1, clips), clips=clips)


@torch.no_grad()
def validate(model, batches, *, cfg: config_lib.Config, device, video_labels: torch.Tensor,
             num_classes: int) -> dict[str, float]:
    """Val loss, clip accuracy and video accuracy (mean clip softmax per video), summed over all workers.

    `video_labels[v]` is the label of video index v (-1 for videos outside the val subset). Workers may score
    different numbers of batches, so the forward pass bypasses DDP (whose forward is a collective).
    """
    model = _unwrap(model)
    model.eval()
    video_sums = torch.zeros(len(video_labels), num_classes, dtype=torch.float64)
    video_counts = torch.zeros(len(video_labels), dtype=torch.float64)
    sums = torch.zeros(3, dtype=torch.float64)  # loss * clips, correct clips, clips
    for batch in batches:
        clips = to_model_input(batch["clip"], norm=cfg.data.norm, device=device)  # (N, 3, T, H, W)
        labels = batch["label"].to(device)
        with autocast(device, cfg.run.precision):
            logits = model(clips).float()  # (N, num_classes)
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        sums += torch.tensor([loss.item(), (logits.argmax(1) == labels).sum().item(), labels.numel()],
                             dtype=torch.float64)
        metrics.accumulate_video_scores(video_sums, video_counts, batch["video_index"].long().cpu(),
                                logits.softmax(1).double().cpu())
    for tensor in (sums, video_sums, video_counts):
        _all_reduce_sum(tensor)
    scored = video_counts > 0
    clips = max(1.0, sums[2].item())
    return {
        "val_loss": sums[0].item() / clips,
        "val_clip_acc": sums[1].item() / clips,
        "val_video_acc": metrics.topk_accuracy(video_sums[scored], video_labels[scored]),
        "val_videos": int(scored.sum().item()),
    }


def _state(model, optimizer, scheduler, scaler, *, epoch: int, cfg: config_lib.Config, labels: list[str],
           metrics: dict[str, Any], best: float) -> dict[str, Any]:
    """A vidfuse checkpoint; `best` is the best `rundir.val_score` so far (what a resumed run must beat)."""
    return {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "config": cfg.to_dict(),
        "labels": labels,
        "metrics": metrics,
        "best_val_score": best,
        "vidfuse_version": vidfuse.__version__,
    }


def worker_batch_size(batch_size: int, world: int) -> int:
    """Clips per step on each of `world` workers for a `batch_size` across all of them."""
    return max(1, batch_size // world)


def steps_per_epoch(num_videos: int, batch_size: int, world: int) -> int:
    """Training steps per epoch: only full batches (one clip per train video per epoch). A last, partial batch
    is dropped, as PySlowFast's training loader does: a batch of one clip breaks BatchNorm on a 1 x 1 x 1 grid
    and gives its few clips a whole step's weight. Which clips are left out changes every epoch (shuffled)."""
    return num_videos // world // worker_batch_size(batch_size, world)


def shuffle_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a worker's local shuffle in an epoch: another order every epoch and worker, the same in every run
    with the same `run.seed` (and a resumed run's epochs shuffle as they would have without the stop)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def resumed_best_score(state: dict[str, Any]) -> float:
    """The best `rundir.val_score` a run resumed from checkpoint `state` must beat to replace `best.pt`.
    Checkpoints written before val_score kept the best val video accuracy alone: the same bar, without the
    loss tie-break."""
    return state.get("best_val_score", state.get("best_val_video_acc", -1.0))


CPU_OUT_OF_MEMORY = "can't allocate memory"  # torch's CPU allocator; a GPU raises torch.OutOfMemoryError


@contextlib.contextmanager
def explain_out_of_memory(cfg: config_lib.Config, *, where: str) -> Iterator[None]:
    """Inside the block, running out of memory (building the model, moving it to its device) is vidfuse's error
    naming the model's size and the keys that set it, such as a `model.fusion_dim` far too large: every retry
    would fail the same way, so it is one line and no retry (`train_loop_per_worker`), not a worker traceback."""
    try:
        yield
    except RuntimeError as exc:
        if not (isinstance(exc, torch.OutOfMemoryError) or CPU_OUT_OF_MEMORY in str(exc)):
            raise
        with torch.device("meta"):  # its size, without allocating it
            parameters = count_parameters(model_from_config(cfg.model, cfg.data))
        keys = ", ".join(f"model.{key}={getattr(cfg.model, key)}"
                         for key in ("arch", "depth", "fusion", "fusion_dim", "num_classes"))
        raise VidfuseError(f"the model does not fit in {where}: {parameters:,} parameters "
                           f"({parameters * 4 / 1e9:,.1f} GB as float32) with {keys}; choose a smaller one") from None


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker; `loop_config` comes from `driver.build_trainer`.

    vidfuse's own errors (a damaged data set, a checkpoint that does not fit) leave the worker as one VidfuseError
    with their one-line message alone, without the retry advice Ray Data adds: Ray Train logs a failed worker's
    traceback (to its log file: `ray_console`), and the one of an error met in Ray Data's iterator holds its frames
    and the remote traceback of Ray's wrapper (~100 lines for a damaged frame).

    A retry from the last checkpoint would meet such an error again (after training up to it again), so its message
    is kept in `RUN_DIR/failed.txt`, and the workers of Ray Train's retry (`run.max_failures`) return at once when
    they find it there: the run fails once, and `driver.train` reports the message."""
    run_dir = Path(loop_config["run_dir"])
    if rundir.stop_reason(run_dir, rundir.FAILED) is not None:
        return
    try:
        _train(loop_config)
    except Exception as exc:
        own = own_error(exc)
        if own is None:
            raise
        message = first_line(own)
        with contextlib.suppress(OSError):  # a run folder this worker's node cannot write: Ray retries as usual
            rundir.mark_stopped(run_dir, rundir.FAILED, message)
        raise VidfuseError(message) from None


def _train(loop_config: dict[str, Any]) -> None:
    """The worker's whole run: build, restore, then train and validate every epoch (see the module docstring)."""
    quiet_train_worker_console()
    cfg = config_lib.from_dict(loop_config["config"])
    labels: list[str] = loop_config["labels"]
    run_dir = Path(loop_config["run_dir"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    torch.manual_seed(cfg.run.seed)
    if cfg.run.deterministic:  # as MMAction2's `deterministic`: no autotuned, run-to-run varying cuDNN kernels
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with explain_out_of_memory(cfg, where=f"worker {rank}'s {device.type} memory"):
        model = model_from_config(cfg.model, cfg.data)
        if cfg.model.pretrain_path:
            load_pretrained(model, cfg.model.pretrain_path)
        if cfg.model.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = ray.train.torch.prepare_model(model)  # on the worker's device
    optimizer = build_optimizer(_unwrap(model), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, epochs=cfg.run.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.run.precision == "fp16")

    start_epoch, best = 1, -1.0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory) / CHECKPOINT_FILE)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best = state["epoch"] + 1, resumed_best_score(state)
        if rank == 0:
            print(f"resuming {run_dir.name} at epoch {start_epoch} from checkpoint of epoch {state['epoch']}",
                  flush=True)

    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    video_labels = torch.tensor(loop_config["val_video_labels"], dtype=torch.long)
    per_worker_batch = worker_batch_size(cfg.run.batch_size, world)
    collate = clip_collate(cfg.data.decode_on, size=cfg.data.sample_size, device=device)  # None: Ray Data decodes
    total_batches = steps_per_epoch(loop_config["num_train_videos"], cfg.run.batch_size, world)

    for epoch in range(start_epoch, cfg.run.epochs + 1):
        lr = current_lr(optimizer)
        started = time.perf_counter()
        train_batches = train_shard.iter_torch_batches(
            batch_size=per_worker_batch, local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
            local_shuffle_seed=shuffle_seed(cfg.run.seed, epoch, rank),
            prefetch_batches=2, collate_fn=collate, drop_last=True,  # see steps_per_epoch
        )
        try:
            train_stats = train_one_epoch(model, optimizer, scaler, train_batches, cfg=cfg, device=device,
                                          epoch=epoch, total_batches=total_batches, rank=rank)
        except Diverged as exc:  # every worker stops here; a retry from the last checkpoint would diverge again
            if rank == 0:
                rundir.mark_stopped(run_dir, rundir.DIVERGED, str(exc))
            return
        train_seconds = time.perf_counter() - started
        _maybe_inject_fault(loop_config.get("fault"), epoch, rank)
        val_batches = val_shard.iter_torch_batches(batch_size=per_worker_batch, prefetch_batches=2, collate_fn=collate)
        val = validate(model, val_batches, cfg=cfg, device=device, video_labels=video_labels,
                       num_classes=cfg.model.num_classes)
        step_scheduler(scheduler, val["val_loss"])
        record = {
            "epoch": epoch, "train_loss": train_stats.loss, "train_acc": train_stats.accuracy,
            "val_loss": val["val_loss"], "val_clip_acc": val["val_clip_acc"], "val_video_acc": val["val_video_acc"],
            "lr": lr, "clips_per_s": train_stats.clips / train_seconds,
            "epoch_seconds": time.perf_counter() - started, "val_videos": val["val_videos"],
        }
        score = rundir.val_score(record)  # val video accuracy, ties broken by lower val loss
        improved = score > best
        best = max(best, score)
        keep = improved or epoch % cfg.run.checkpoint_every == 0 or epoch == cfg.run.epochs
        with tempfile.TemporaryDirectory() as directory:
            ray_checkpoint = None
            if rank == 0:
                state = _state(model, optimizer, scheduler, scaler, epoch=epoch, cfg=cfg, labels=labels,
                               metrics=record, best=best)
                save_checkpoint(run_dir / "last.pt", state)  # serialised once, copied below
                if improved:
                    copy_checkpoint(run_dir / "last.pt", run_dir / "best.pt")
                rundir.append_metrics(run_dir, record)
                print("epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | val loss {val_loss:.4f} "
                      "clip acc {val_clip_acc:.3f} video acc {val_video_acc:.3f} | lr {lr:.2e} "
                      "{clips_per_s:.1f} clips/s".format(**record), flush=True)
                if keep:
                    copy_checkpoint(run_dir / "last.pt", Path(directory) / CHECKPOINT_FILE)
                    ray_checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report({**record, rundir.VAL_SCORE: score}, checkpoint=ray_checkpoint)
