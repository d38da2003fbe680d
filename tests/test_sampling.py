"""Temporal sampling edge cases: shorter than a window, exact multiples, stride > 1."""

from __future__ import annotations

import numpy as np
import pytest

from vidfuse.data.sampling import clip_starts, even_starts, random_start, tiling_starts, window_indices


def test_video_shorter_than_a_window_loops_over_itself():
    assert window_indices(0, 5, duration=8) == [0, 1, 2, 3, 4, 0, 1, 2]
    assert clip_starts("test", 5, duration=8) == [0]
    assert clip_starts("val", 5, duration=8, n_val_clips=3) == [0]
    assert clip_starts("train", 5, duration=8, rng=np.random.default_rng(0)) == [0]


def test_exact_multiple_tiles_without_padding():
    assert tiling_starts(32, 16) == [0, 16]
    assert [window_indices(s, 32, duration=16) for s in (0, 16)] == [list(range(16)), list(range(16, 32))]


def test_one_frame_past_a_multiple_adds_a_loop_padded_window():
    assert tiling_starts(33, 16) == [0, 16, 32]
    assert window_indices(32, 33, duration=16) == [32] * 16


def test_stride_two_takes_every_other_frame_and_pads_the_tail():
    assert clip_starts("test", 40, duration=8, stride=2) == [0, 16, 32]
    assert window_indices(0, 40, duration=8, stride=2) == list(range(0, 16, 2))
    assert window_indices(32, 40, duration=8, stride=2) == [32, 34, 36, 38, 32, 34, 36, 38]


def test_random_start_covers_every_valid_start_and_only_those():
    rng = np.random.default_rng(0)
    draws = {random_start(20, 16, rng) for _ in range(500)}
    assert draws == {0, 1, 2, 3, 4}


def test_val_windows_are_evenly_spaced_from_first_to_last():
    assert even_starts(100, 16, 3) == [0, 42, 84]
    assert even_starts(100, 16, 1) == [0]


def test_bad_calls_raise():
    with pytest.raises(ValueError, match="mode"):
        clip_starts("bogus", 10, duration=4)
    with pytest.raises(ValueError, match="random generator"):
        clip_starts("train", 10, duration=4)
    with pytest.raises(ValueError, match="outside"):
        window_indices(10, 10, duration=4)
