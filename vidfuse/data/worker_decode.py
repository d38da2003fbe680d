"""`data.decode_on: worker`: clips decoded where they are consumed, on the consumer's device.

The Ray Data tasks then only read the Parquet rows and pick each clip's JPEGs (`pipeline.pick_window_jpegs`);
the Train worker (or test scorer) decodes a whole batch of them with one call of torchvision's decoder — on a
GPU, nvjpeg's batched decode — and crops, resizes and flips each clip there with the same `crop_clip` as the CPU
decoders. For GPU nodes whose CPUs cannot decode as fast as the GPUs train. On a CPU device the same code runs
with libjpeg-turbo, and gives the CPU decoders' clips exactly (tests/test_pipeline.py).
"""

from __future__ import annotations

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from vidfuse.data.pipeline import DECODE_ERRORS, decode_jpegs, undecodable
from vidfuse.data.transforms import Crop, crop_clip
from vidfuse.errors import VidfuseError

INDEX_COLUMNS = ("label", "video_index", "clip_index")


def decode_windows(batch: dict[str, np.ndarray], *, size: int, device: torch.device | str) -> torch.Tensor:
    """Rows of `pipeline.pick_window_jpegs` -> uint8 clips (N, T, size, size, C) on `device`."""
    windows = [list(jpegs) for jpegs in batch["jpegs"]]  # N windows of T JPEGs (bytes)
    try:
        frames = decode_jpegs([jpeg for window in windows for jpeg in window], device=device)  # N * T (3, H, W)
    except DECODE_ERRORS:
        raise _first_undecodable(batch, windows, device) from None
    clips, first = [], 0
    for window, scale, position, flip in zip(windows, batch["crop_scale"], batch["crop_position"],
                                             batch["crop_flip"]):
        crop = Crop(scale=float(scale), position=str(position), flip=bool(flip))
        clips.append(crop_clip(frames[first:first + len(window)], crop, size))  # (T, size, size, C)
        first += len(window)
    return torch.stack(clips)


def _first_undecodable(batch: dict[str, np.ndarray], windows: list[list[bytes]], device) -> VidfuseError:
    """The error naming the first window of `batch` that does not decode (one batched decode failed: each window
    is decoded again on its own to find it)."""
    for row, window in enumerate(windows):
        try:
            decode_jpegs(window, device=device)
        except DECODE_ERRORS as exc:
            return undecodable(str(batch["video_id"][row]), int(batch["first_frame"][row]),
                               int(batch["last_frame"][row]), exc)
    return VidfuseError("a batch of clip windows does not decode, though each of its windows does")


def batch_clips(batch: dict[str, np.ndarray], *, size: int, device: torch.device | str) -> torch.Tensor:
    """The uint8 clips (N, T, size, size, C) of a NumPy batch of either kind of clip row, on `device`."""
    if "jpegs" in batch:
        return decode_windows(batch, size=size, device=device)
    return torch.tensor(batch["clip"]).to(device)  # a copy: Ray hands read-only arrays


class WindowDecodeCollate(NumpyBatchCollateFn):
    """`iter_torch_batches(collate_fn=...)` for `decode_on: worker`: a batch of window rows -> {clip: uint8
    (N, T, size, size, C) on `device`, label, video_index, clip_index}. Ray calls it in its prefetch thread, so
    decoding overlaps the training step."""

    def __init__(self, *, size: int, device: torch.device | str) -> None:
        self.size = size
        self.device = device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        clips = decode_windows(batch, size=self.size, device=self.device)
        return {"clip": clips, **{name: torch.as_tensor(batch[name]) for name in INDEX_COLUMNS}}


def clip_collate(decode_on: str, *, size: int, device: torch.device | str) -> WindowDecodeCollate | None:
    """The `collate_fn` for `iter_torch_batches` of clip rows made with `decode_on` (None: Ray's default)."""
    return WindowDecodeCollate(size=size, device=device) if decode_on == "worker" else None
