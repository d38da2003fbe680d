"""Temporal sampling: which frame indices make up each clip of a video.

A window starts at frame `start` and spans `duration * stride` frames, of which every `stride`-th is taken.
A window that runs past the end of the video is loop-padded as in 3D-ResNets-PyTorch: the frames it does have
are repeated in order until it holds `duration` (so a video shorter than one window loops over itself).

- train: one random window per video (a new draw every epoch);
- val:   `n_clips` evenly spaced windows (duplicates dropped for videos shorter than a window);
- test:  all non-overlapping windows covering the video; the last one is loop-padded if the video length is not
         a multiple of the window span.
"""

from __future__ import annotations

from itertools import cycle, islice

import numpy as np

MODES = ("train", "val", "test")


def window_indices(start: int, n_frames: int, *, duration: int, stride: int = 1) -> list[int]:
    """The `duration` frame indices of the window starting at `start`, loop-padded past the end."""
    taken = list(range(start, min(start + duration * stride, n_frames), stride))
    if not taken:
        raise ValueError(f"window start {start} is outside a video of {n_frames} frames")
    return list(islice(cycle(taken), duration))


def random_start(n_frames: int, span: int, rng: np.random.Generator) -> int:
    """A uniformly random start such that the window fits (0 when the video is shorter than the span)."""
    return int(rng.integers(0, max(n_frames - span, 0) + 1))


def even_starts(n_frames: int, span: int, n_clips: int) -> list[int]:
    """`n_clips` starts spread evenly from the first to the last full window, without duplicates."""
    last = max(n_frames - span, 0)
    return sorted({int(round(s)) for s in np.linspace(0, last, n_clips)})


def tiling_starts(n_frames: int, span: int) -> list[int]:
    """Starts of the non-overlapping windows that cover the whole video."""
    return list(range(0, n_frames, span))


def clip_starts(
    mode: str, n_frames: int, *, duration: int, stride: int = 1, n_val_clips: int = 3,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Window starts for one video in `mode` (train needs `rng`)."""
    span = duration * stride
    if mode == "train":
        if rng is None:
            raise ValueError("train sampling needs a random generator")
        return [random_start(n_frames, span, rng)]
    if mode == "val":
        return even_starts(n_frames, span, n_val_clips)
    if mode == "test":
        return tiling_starts(n_frames, span)
    raise ValueError(f"unknown sampling mode {mode!r}; choose one of {MODES}")
