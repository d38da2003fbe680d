"""Crops (box geometry, one crop for all frames, flip), short-side resize and normalisation presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vidfuse.data.transforms import (
    CENTRE_CROP,
    POSITIONS,
    SCALES,
    Augment,
    Crop,
    crop_clip,
    random_crop,
    resize_short_side,
    to_model_input,
)
from vidfuse.errors import VidfuseError


def test_crop_boxes_on_a_landscape_frame():
    assert CENTRE_CROP.box(170, 128) == (0, 21, 128)
    assert Crop(0.5, "bottom_right").box(170, 128) == (64, 106, 64)
    assert Crop(0.5, "top_right").box(170, 128) == (0, 106, 64)
    assert Crop(2**-0.5, "bottom_left").box(170, 128) == (37, 0, 91)
    assert Crop(0.5).min_short_side(112) == 224


def _column_clip(frames: int = 3, height: int = 8, width: int = 12) -> np.ndarray:
    """Pixel value = 10 * column + frame, so crops and flips are readable from the values."""
    cols = np.arange(width)[None, None, :, None] * 10 + np.arange(frames)[:, None, None, None]
    return np.broadcast_to(cols, (frames, height, width, 3)).astype(np.uint8).copy()


def test_crop_clip_cuts_the_same_box_from_every_frame_and_flips():
    clip = _column_clip()
    out = crop_clip(torch.from_numpy(clip), Crop(1.0, "top_right"), size=8).numpy()  # side 8 = no resize
    assert out.shape == (3, 8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, clip[:, :, 4:12])
    flipped = crop_clip(torch.from_numpy(clip), Crop(1.0, "top_right", flip=True), size=8).numpy()
    np.testing.assert_array_equal(flipped, clip[:, :, 4:12][:, :, ::-1])


def test_crop_clip_resizes_to_the_requested_size():
    out = crop_clip(torch.from_numpy(_column_clip()), CENTRE_CROP, size=4).numpy()
    assert out.shape == (3, 4, 4, 3)
    assert np.all(np.diff(out[0, 0, :, 0].astype(int)) > 0)  # columns still increase left to right


def test_random_crop_draws_every_scale_position_and_flip():
    rng = np.random.default_rng(0)
    crops = [random_crop(rng) for _ in range(400)]
    assert {c.scale for c in crops} == set(SCALES)
    assert {c.position for c in crops} == set(POSITIONS)
    assert {c.flip for c in crops} == {True, False}


def test_augment_limits_the_crop_scales_and_turns_flips_off():
    rng = np.random.default_rng(0)
    crops = [random_crop(rng, Augment(min_crop_scale=2**-0.5, hflip=False)) for _ in range(400)]
    assert {c.scale for c in crops} == {1.0, 2**-0.25, 2**-0.5}
    assert {c.flip for c in crops} == {False}
    assert {c.scale for c in (random_crop(rng, Augment(min_crop_scale=1.0)) for _ in range(50))} == {1.0}
    with pytest.raises(VidfuseError, match="min_crop_scale=0.3"):
        Augment(min_crop_scale=0.3)


def test_resize_short_side_keeps_the_aspect_ratio():
    assert resize_short_side(Image.new("RGB", (320, 240)), 128).size == (171, 128)
    assert resize_short_side(Image.new("RGB", (240, 320)), 128).size == (128, 171)


def test_to_model_input_layout_and_presets():
    clips = torch.zeros(2, 4, 5, 6, 3, dtype=torch.uint8)
    clips[1, 2, 3, 4] = torch.tensor([255, 128, 0], dtype=torch.uint8)
    kinetics = to_model_input(clips, norm="kinetics")
    assert kinetics.shape == (2, 3, 4, 5, 6) and kinetics.dtype == torch.float32
    torch.testing.assert_close(kinetics[1, :, 2, 3, 4],
                               torch.tensor([255 - 110.63666788, 128 - 103.16065604, 0 - 96.29023126]))
    imagenet = to_model_input(clips, norm="imagenet", device="cpu")
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    torch.testing.assert_close(imagenet[1, :, 2, 3, 4], expected)
    with pytest.raises(VidfuseError, match="bogus"):
        to_model_input(clips, norm="bogus")
