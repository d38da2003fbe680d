"""Read the frames of one video: a video file decoded with PyAV, or a 3D-ResNets-PyTorch frame folder.

A frame folder holds `image_00001.jpg, image_00002.jpg, ...` and optionally a file `n_frames` with their count
(written by 3D-ResNets-PyTorch's `n_frames_ucf101_hmdb51.py`). Anything that does not decode is a
`VidfuseError` naming the file. Frames come out one by one (`iter_frames`) so that `prepare` can resize a long,
high-resolution video without holding it in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from vidfuse.errors import VidfuseError

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")
FRAME_PATTERN = "image_{:05d}.jpg"
TRUNCATION_RATIO = 0.9  # a file decoding to fewer than this share of its declared frames is truncated


def frame_paths(folder: Path) -> list[Path]:
    """The frame files of a frame folder in order, checked to run image_00001 .. image_N without gaps."""
    count_file = folder / "n_frames"
    if count_file.is_file():
        try:
            count = int(count_file.read_text().strip())
        except ValueError:
            raise VidfuseError(f"{count_file}: not an integer frame count") from None
    else:
        count = sum(1 for _ in folder.glob("image_*.jpg"))
    paths = [folder / FRAME_PATTERN.format(i) for i in range(1, count + 1)]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise VidfuseError(f"{folder}: frame {missing.name} is missing ({count} frames expected)")
    return paths


def iter_frames(path: Path) -> Iterator[Image.Image]:
    """RGB frames of a video file or frame folder, in order; a file that does not decode raises VidfuseError."""
    path = Path(path)
    if path.is_dir():
        for frame_path in frame_paths(path):
            try:
                with Image.open(frame_path) as image:
                    yield image.convert("RGB")
            except OSError as exc:
                raise VidfuseError(f"{frame_path}: not a readable image ({exc})") from None
        return
    if not path.is_file():
        raise VidfuseError(f"video not found: {path}")
    decoded = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise VidfuseError(f"{path}: no video stream")
            stream = container.streams.video[0]
            declared = stream.frames
            for frame in container.decode(stream):
                decoded += 1
                yield frame.to_image()
    except av.FFmpegError as exc:
        raise VidfuseError(f"{path}: does not decode ({exc.strerror or exc})") from None
    if declared and decoded < TRUNCATION_RATIO * declared:
        raise VidfuseError(f"{path}: decoded {decoded} of the {declared} frames it declares (truncated?)")


def read_frames(path: Path) -> list[np.ndarray]:
    """All frames of a video file or frame folder as HWC uint8 RGB arrays."""
    return [np.asarray(image) for image in iter_frames(path)]
