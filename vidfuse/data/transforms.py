"""Spatial transforms of a clip, and the uint8 -> normalised float conversion on the training device.

One `Crop` is drawn per clip and applied to all its frames, so the motion inside the clip is untouched:
- train: multi-scale corner crop as in 3D-ResNets-PyTorch: a square of side `scale * short side` with scale in
  {1, 2^-1/4, 2^-1/2, 2^-3/4, 1/2} (those at least `Augment.min_crop_scale`), at one of the four corners or the
  centre, resized to `size`, flipped horizontally with probability 1/2 (unless `Augment.hflip` is off: classes
  whose direction matters, such as "move left" / "move right", must not be flipped);
- eval: the centre square of side `short side`, resized to `size` (= resize short side + centre crop).

Crop and resize run on the whole clip at once with `torchvision.transforms.v2.functional`, on a uint8 (T, H, W, C)
clip tensor. A crop is described relative to the frame, so frames may be decoded at a reduced size first
(libjpeg's DCT scaling, Pillow's `draft`) when the crop still gets at least `size` pixels from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from vidfuse.errors import VidfuseError

SCALES = (1.0, 2**-0.25, 2**-0.5, 2**-0.75, 0.5)
POSITIONS = ("centre", "top_left", "top_right", "bottom_left", "bottom_right")

# Per-channel (mean, std) on the 0-255 scale. kinetics: 3D-ResNets-PyTorch's Kinetics mean with std 1 (its
# default `--norm_value 1`, no std normalisation); imagenet: torchvision's ImageNet mean / std.
NORMS = {
    "kinetics": ((110.63666788, 103.16065604, 96.29023126), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}


@dataclass(frozen=True)
class Crop:
    """A square crop relative to the frame: side = `scale` * short side, placed at `position`."""

    scale: float = 1.0
    position: str = "centre"
    flip: bool = False

    def box(self, width: int, height: int) -> tuple[int, int, int]:
        """(top, left, side) in pixels for a frame of `width` x `height`."""
        side = max(1, int(round(self.scale * min(width, height))))
        top, left = {
            "centre": ((height - side) // 2, (width - side) // 2),
            "top_left": (0, 0),
            "top_right": (0, width - side),
            "bottom_left": (height - side, 0),
            "bottom_right": (height - side, width - side),
        }[self.position]
        return top, left, side

    def min_short_side(self, size: int) -> int:
        """The smallest frame short side from which this crop still yields `size` pixels without upscaling."""
        return math.ceil(size / self.scale)


CENTRE_CROP = Crop()


@dataclass(frozen=True)
class Augment:
    """The training augmentation's settings: the smallest crop scale kept, and whether to flip."""

    min_crop_scale: float = SCALES[-1]
    hflip: bool = True

    def __post_init__(self) -> None:
        if not SCALES[-1] <= self.min_crop_scale <= 1:
            raise VidfuseError(f"min_crop_scale={self.min_crop_scale} must be between {SCALES[-1]} and 1")


def random_crop(rng: np.random.Generator, augment: Augment = Augment()) -> Crop:
    """One multi-scale corner crop + flip draw (train)."""
    scales = [s for s in SCALES if s >= augment.min_crop_scale]
    return Crop(
        scale=scales[rng.integers(len(scales))],
        position=POSITIONS[rng.integers(len(POSITIONS))],
        flip=bool(rng.integers(2)) and augment.hflip,
    )


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Resize so that the shorter side is `short_side`, keeping the aspect ratio."""
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.BILINEAR, reducing_gap=3.0)


def crop_clip(clip: torch.Tensor, crop: Crop, size: int) -> torch.Tensor:
    """Apply `crop` to every frame of a uint8 (T, H, W, C) clip and resize to `size` x `size`: uint8 (T, size,
    size, C), on the clip's device (the CPU decoders' or, with `data.decode_on: worker`, the training worker's)."""
    # (T, C, H, W) stored as (T, H, W, C): the antialiased resize of uint8 has a fast path for that layout on the
    # CPU (measured 3x the planar one here)
    frames = clip.permute(0, 3, 1, 2)
    top, left, side = crop.box(frames.shape[-1], frames.shape[-2])
    frames = F.resized_crop(frames, top, left, side, side, [size, size], antialias=True)
    if crop.flip:
        frames = F.horizontal_flip(frames)
    return frames.permute(0, 2, 3, 1).contiguous()  # (T, size, size, C)


def to_model_input(clips: torch.Tensor, *, norm: str, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (N, T, H, W, C) -> normalised float32 (N, C, T, H, W), converted on `device` (moved there first)."""
    if norm not in NORMS:
        raise VidfuseError(f"unknown normalisation {norm!r}; choose one of: {', '.join(NORMS)}")
    clips = clips.to(device) if device is not None else clips
    mean, std = (torch.tensor(v, dtype=torch.float32, device=clips.device).view(1, 3, 1, 1, 1) for v in NORMS[norm])
    x = clips.permute(0, 4, 1, 2, 3).float()  # (N, C, T, H, W)
    return (x - mean) / std
