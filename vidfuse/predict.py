"""Top-k labels for single videos or frame folders with a trained run (`launch.py predict`).

Each input is cut into the same windows `test` scores (every non-overlapping window, centre crop), the clip
softmax is averaged, and the k most likely classes come out. An input that does not decode is reported and
skipped; the others are still predicted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vidfuse import config as config_lib
from vidfuse.data.pipeline import eval_clips
from vidfuse.data.prepare import read_meta
from vidfuse.data.video import read_frames
from vidfuse.engine.evaluate import clip_probabilities
from vidfuse.errors import VidfuseError

DEFAULT_SHORT_SIDE = 128  # `prepare --short-side` default, used when the run's data set is not at hand


@dataclass
class Prediction:
    """The k most likely classes of one input, most likely first; `error` is set instead when it did not decode."""

    input: str
    windows: int = 0
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""

    def to_dict(self) -> dict:
        if self.error:
            return {"input": self.input, "error": self.error}
        return {"input": self.input, "windows": self.windows,
                "top5": [{"label": name, "prob": round(prob, 6)} for name, prob in self.top]}


def short_side_of(config: config_lib.Config) -> int:
    """The short side the run's training frames were stored at, so inputs are resized the same way."""
    try:
        return int(read_meta(Path(config.data.path))["options"]["short_side"])
    except (VidfuseError, KeyError, TypeError):
        return DEFAULT_SHORT_SIDE


def predict_video(
    model: nn.Module,
    config: config_lib.Config,
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    short_side: int,
    top_k: int = 5,
    device: torch.device | None = None,
) -> Prediction:
    """Average the softmax over every window of one video file or frame folder (VidfuseError if it does not decode)."""
    device = device or torch.device("cpu")
    data = config.data
    frames = read_frames(Path(path))
    if not frames:
        raise VidfuseError(f"{path}: no frames (give a video file, or a folder of image_00001.jpg ...)")
    clips, _ = eval_clips(frames, sample_duration=data.sample_duration, sample_size=data.sample_size,
                          short_side=short_side, sample_stride=data.sample_stride)  # (n, T, H, W, C) uint8
    clips_t = torch.from_numpy(clips)
    probs = torch.cat([
        clip_probabilities(model, batch, norm=data.norm, device=device, precision=config.run.precision)
        for batch in clips_t.split(config.run.batch_size)
    ]).mean(dim=0)  # (C,)
    top_probs, top_classes = probs.topk(min(top_k, probs.numel()))
    return Prediction(input=str(path), windows=len(clips),
                      top=[(labels[int(c)], float(p)) for p, c in zip(top_probs, top_classes)])


def predict_inputs(
    model: nn.Module, config: config_lib.Config, labels: Sequence[str], inputs: Iterable[str | os.PathLike],
    *, top_k: int = 5,
) -> Iterable[Prediction]:
    """Predict each input in turn; one that does not decode yields a Prediction carrying its error line."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    short_side = short_side_of(config)
    for path in inputs:
        try:
            yield predict_video(model, config, labels, path, short_side=short_side, top_k=top_k, device=device)
        except VidfuseError as exc:
            yield Prediction(input=str(path), error=str(exc))
