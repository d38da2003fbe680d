"""`data.decode_on: worker`: clips decoded where they are consumed, on the consumer's device.

The Ray Data tasks then only read the Parquet rows and pick each clip's JPEGs (`pipeline.pick_window_jpegs`);
the Train worker (or test scorer) decodes a batch of them and crops, resizes and flips each clip there with the
same `crop_clip` as the CPU decoders. On a GPU, all the batch's JPEGs go to nvjpeg in one batched decode
(torchvision's); for GPU nodes whose CPUs cannot decode as fast as the GPUs train. On a CPU device each window is
decoded by the CPU decoders' own `decode_frames`, draft reduction included, so the clips are exactly theirs
(tests/test_pipeline.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn
from torchvision.io import ImageReadMode, decode_jpeg

from vidfuse.data.pipeline import DECODE_ERRORS, decode_frames, undecodable
from vidfuse.data.transforms import Crop, crop_clip
from vidfuse.errors import VidfuseError

INDEX_COLUMNS = ("label", "video_index", "clip_index")


def decode_window_frames(windows: Sequence[Sequence[bytes]], min_short_sides: Sequence[int],
                         device: torch.device | str) -> list[torch.Tensor]:
    """Each window's JPEGs -> its frames, uint8 (T, H, W, C) on `device`: one batched nvjpeg call for all of them on
    a GPU (at full size), `pipeline.decode_frames` per window on the CPU (at the draft reduction that keeps its
    short side >= `min_short_sides[i]`, as the CPU decoders do)."""
    if torch.device(device).type == "cpu":
        return [decode_frames(window, min_short_side=least) for window, least in zip(windows, min_short_sides)]
    data = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for window in windows for jpeg in window]
    frames = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)  # N * T (3, H, W), stored (H, W, 3)
    starts = np.cumsum([0, *map(len, windows)])
    return [torch.stack([frame.permute(1, 2, 0) for frame in frames[start:end]])
            for start, end in zip(starts[:-1], starts[1:])]


def decode_windows(batch: dict[str, np.ndarray], *, size: int, device: torch.device | str) -> torch.Tensor:
    """Rows of `pipeline.pick_window_jpegs` -> uint8 clips (N, T, size, size, C) on `device`."""
    windows = [list(jpegs) for jpegs in batch["jpegs"]]  # N windows of T JPEGs (bytes)
    crops = [Crop(scale=float(scale), position=str(position), flip=bool(flip))
             for scale, position, flip in zip(batch["crop_scale"], batch["crop_position"], batch["crop_flip"])]
    min_short_sides = [crop.min_short_side(size) for crop in crops]
    try:
        frames = decode_window_frames(windows, min_short_sides, device)  # N (T, H, W, C)
    except DECODE_ERRORS:
        raise _first_undecodable(batch, windows, min_short_sides, device) from None
    return torch.stack([crop_clip(clip, crop, size) for clip, crop in zip(frames, crops)])


def _first_undecodable(batch: dict[str, np.ndarray], windows: list[list[bytes]], min_short_sides: list[int],
                       device: torch.device | str) -> VidfuseError:
    """The error naming the first window of `batch` that does not decode (decoding the batch failed: each window
    is decoded again on its own to find it)."""
    for row, (window, least) in enumerate(zip(windows, min_short_sides)):
        try:
            decode_window_frames([window], [least], device)
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
