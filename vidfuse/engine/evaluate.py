"""Scoring a trained run: loading its model, and test-set inference with Ray Data.

`test` and `predict` load a run's model through one function, `load_run_model`, and turn uint8 clips into
softmax probabilities through one function, `clip_probabilities`. The test set is scored by Ray Data batch
inference: the clip stream of the official test list (every window, or N evenly spaced ones per video) goes
through an autoscaling pool of `ClipScorer` actors, one model copy each, on GPUs when the cluster has them.
The clip probabilities are then averaged per video (mean softmax) with the shared metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from torch import nn

from vidfuse import config as config_lib
from vidfuse.data.pipeline import clip_dataset, plan_windows, video_table
from vidfuse.data.transforms import to_model_input
from vidfuse.data.worker_decode import batch_clips
from vidfuse.engine import metrics, rundir
from vidfuse.engine.checkpoint import load_checkpoint, resolve_checkpoint
from vidfuse.engine.precision import autocast
from vidfuse.errors import VidfuseError, first_line
from vidfuse.models import model_from_config
from vidfuse.progress import Progress


def load_run_model(
    run_dir: str | os.PathLike, checkpoint: str = "best"
) -> tuple[nn.Module, config_lib.Config, list[str], Path]:
    """The run's model with the checkpoint's weights, in eval mode on the CPU.

    `checkpoint` is `best`, `last` or a path. Returns (model, config, class names, checkpoint path). Weights that
    do not fit the run's architecture or are not finite, and class names that are no list of names, are one clear
    error naming the checkpoint.
    """
    run_dir = rundir.require_run_dir(run_dir)
    config = rundir.read_config(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path)
    _check_trained_config(path, config, state.get("config"))
    labels = state.get("labels") or rundir.read_meta(run_dir).get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise VidfuseError(f"{path}: its class names are no list of names ({type(labels).__name__})")
    if config.model.num_classes == 0:  # "from the data": the checkpoint knows how many
        config.model.num_classes = len(labels)
    if len(labels) != config.model.num_classes:
        raise VidfuseError(f"{path}: {len(labels)} class names for a {config.model.num_classes}-class model")
    model = model_from_config(config.model, config.data)
    try:
        model.load_state_dict(state["model"] if "model" in state else state)
    except (RuntimeError, TypeError) as exc:  # TypeError: `model` is no dict of weights
        model_name = f"{config.model.arch}-{config.model.depth} with the {config.model.fusion} head"
        raise VidfuseError(f"{path}: weights do not fit the run's model ({model_name}): "
                           f"{_load_error_detail(exc)}") from None
    not_finite = [name for name, tensor in model.state_dict().items()
                  if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if not_finite:  # scores of such a model are NaN or meaningless
        raise VidfuseError(f"{path}: {len(not_finite)} of its weight tensors are not finite (e.g. {not_finite[0]}): "
                           "a run that diverged?")
    return model.eval(), config, labels, path


# What shapes a model and the clips it scores: a run's config.yaml that differs from its checkpoint's config here (a
# hand edit) would score other clips, or another normalisation, with no error from the weights
SCORING_KEYS = (
    "model.arch", "model.depth", "model.shortcut", "model.cardinality", "model.fusion", "model.fusion_layers",
    "model.fusion_dim", "model.fusion_align", "data.sample_duration", "data.sample_stride", "data.sample_size",
    "data.norm",
)


def _check_trained_config(path: Path, config: config_lib.Config, trained: Any) -> None:
    """Raise unless the config the checkpoint at `path` was trained with (vidfuse's checkpoints hold it; other
    weights files do not) agrees with the run's `config` on every SCORING_KEYS key."""
    if trained is None:
        return
    try:
        trained_keys = config_lib.flat(config_lib.from_dict(trained))
    except VidfuseError as error:
        raise VidfuseError(f"{path}: the config it holds is not vidfuse's ({error})") from None
    ours = config_lib.flat(config)
    differing = next((key for key in SCORING_KEYS if ours[key] != trained_keys[key]), None)
    if differing is not None:
        raise VidfuseError(f"{path} was trained with {differing}={trained_keys[differing]!r}, but the run's "
                           f"{rundir.CONFIG} says {ours[differing]!r}: score with the config it was trained with")


def _load_error_detail(error: Exception, limit: int = 200) -> str:
    """The part of a `load_state_dict` error that says what differs: its first detail line ("Missing key(s) in
    state_dict: ...", "size mismatch for ..."), not its heading, cut to `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict") else first_line(error)
    return detail if len(detail) <= limit else detail[:limit] + " ..."


@torch.inference_mode()
def clip_probabilities(
    model: nn.Module, clips: torch.Tensor, *, norm: str, device: torch.device, precision: str = "fp32"
) -> torch.Tensor:
    """uint8 clips (N, T, H, W, C) -> softmax probabilities (N, classes), float32 on the CPU."""
    inputs = to_model_input(clips, norm=norm, device=device)  # (N, 3, T, H, W) float
    with autocast(device, precision):
        logits = model(inputs)  # (N, classes)
    return logits.float().softmax(dim=1).cpu()


class ClipScorer:
    """Ray Data actor: a batch of clip rows -> their video and clip indices with their softmax probabilities."""

    def __init__(self, model: nn.Module, norm: str, precision: str, sample_size: int) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.norm = norm
        self.precision = precision
        self.sample_size = sample_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips = batch_clips(batch, size=self.sample_size, device=self.device)  # (B, T, H, W, C) uint8
        probs = clip_probabilities(self.model, clips, norm=self.norm, device=self.device, precision=self.precision)
        return {
            "probs": probs.numpy(),
            "video_index": batch["video_index"],
            "clip_index": batch["clip_index"],
        }


@dataclass
class VideoScores:
    """Test scores of every scored video, aligned by position."""

    video_ids: list[str]
    labels: torch.Tensor  # (V,) long, true class
    probs: torch.Tensor  # (V, C) float64, mean clip softmax
    windows: list[list[int]]  # clip indices scored per video
    clip_correct: torch.Tensor  # (N,) bool, top-1 of every scored clip
    unscored: list[str]  # test videos that yielded no clip

    def confusion(self) -> torch.Tensor:
        """(C, C) video counts of the top-1 predictions: row = true class, column = predicted."""
        return metrics.confusion_matrix(self.probs.argmax(dim=1), self.labels, self.probs.shape[1])

    def summary(self) -> dict[str, Any]:
        """Video-level top-1 / top-5 accuracy and error, clip accuracy, mean class accuracy, counts."""
        top1 = metrics.topk_accuracy(self.probs, self.labels, 1)
        top5 = metrics.topk_accuracy(self.probs, self.labels, 5)
        return {
            "videos": len(self.video_ids),
            "clips": int(self.clip_correct.numel()),
            "top1_acc": top1,
            "top1_error": 1 - top1,
            "top5_acc": top5,
            "top5_error": 1 - top5,
            "clip_acc": self.clip_correct.float().mean().item() if self.clip_correct.numel() else 0.0,
            "mean_class_acc": metrics.mean_class_accuracy(self.confusion()),
            "unscored_videos": self.unscored,
        }


def video_scores_from_clips(
    videos: list[dict[str, Any]],
    video_index: np.ndarray,
    clip_index: np.ndarray,
    probs: np.ndarray,
) -> VideoScores:
    """Average clip probabilities (N, C) per video; `videos` is the test list (`pipeline.video_table` rows)."""
    position = {int(v["video_index"]): i for i, v in enumerate(videos)}
    unknown = set(np.unique(video_index).tolist()) - set(position)
    if unknown:
        raise ValueError(f"clips of videos missing from the test list: {sorted(unknown)[:5]}")
    clip_video = torch.tensor([position[int(i)] for i in video_index], dtype=torch.long)  # (N,)
    probs_t = torch.from_numpy(np.asarray(probs, dtype=np.float32))  # (N, C)
    sums = torch.zeros(len(videos), probs_t.shape[1], dtype=torch.float64)
    counts = torch.zeros(len(videos), dtype=torch.long)
    metrics.accumulate_video_scores(sums, counts, clip_video, probs_t)
    labels = torch.tensor([int(v["label"]) for v in videos], dtype=torch.long)
    windows: list[list[int]] = [[] for _ in videos]
    for video, clip in zip(clip_video.tolist(), np.asarray(clip_index).tolist()):
        windows[video].append(int(clip))
    scored = (counts > 0).nonzero().flatten().tolist()
    return VideoScores(
        video_ids=[str(videos[i]["video_id"]) for i in scored],
        labels=labels[scored],
        probs=metrics.video_scores(sums, counts)[scored],
        windows=[sorted(windows[i]) for i in scored],
        clip_correct=metrics.topk_correct(probs_t, labels[clip_video], 1),
        unscored=[str(v["video_id"]) for i, v in enumerate(videos) if counts[i] == 0],
    )


def _actor_resources(workers: int | None, decode_workers: int) -> tuple[int, dict[str, float]]:
    """Scorer pool size and per-actor resources: one GPU each when the cluster has GPUs, else one CPU each,
    leaving CPUs free for the Parquet reads and the decoders (a pool that takes every CPU deadlocks the stream)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return workers or gpus, {"num_gpus": 1}
    cpus = int(resources.get("CPU", 1))
    return workers or max(1, cpus - decode_workers - 1), {"num_cpus": 1}


def score_test_set(
    model: nn.Module,
    config: config_lib.Config,
    *,
    clips: int | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> VideoScores:
    """Score the official test list of the run's split: every window per video (`clips=None`) or N evenly
    spaced ones, on a pool of up to `workers` scorer actors (default: every GPU, or the CPUs left over), in
    batches of `batch_size` clips (default: the run's `run.batch_size`). With `progress`, a line on stderr counts
    the clips scored out of all the windows the test list has."""
    data = config.data
    videos = video_table(data.path, split=data.split, subset="test")  # clear error when the split has none
    windows = dict(mode="test" if clips is None else "val", sample_duration=data.sample_duration,
                   sample_stride=data.sample_stride, n_val_clips=clips or data.n_val_clips)
    dataset = clip_dataset(
        data.path, split=data.split, subset="test", sample_size=data.sample_size, seed=config.run.seed,
        decode_workers=data.decode_workers, decode_on=data.decode_on, **windows,
    )
    pool, resources = _actor_resources(workers, data.decode_workers)
    scored = dataset.map_batches(
        ClipScorer,
        fn_constructor_kwargs={"model": model, "norm": data.norm, "precision": config.run.precision,
                               "sample_size": data.sample_size},
        batch_size=batch_size or config.run.batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool),
        **resources,
    )
    total = sum(len(plan_windows(video["n_frames"], **windows)) for video in videos)  # the windows the pipeline cuts
    parts: dict[str, list[np.ndarray]] = {"probs": [], "video_index": [], "clip_index": []}
    scored_clips = 0
    with Progress(total, label="test", unit="clips", enabled=progress) as meter:
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            for key, values in parts.items():
                values.append(batch[key])
            scored_clips += len(batch["probs"])
            meter.update(scored_clips)
    if not parts["probs"]:
        raise VidfuseError(f"{data.path}: no clip could be cut from the test videos of split {data.split}")
    return video_scores_from_clips(videos, *(np.concatenate(parts[k]) for k in ("video_index", "clip_index", "probs")))
