"""The synthetic motion set: layout, determinism, and that one frame does not tell the class while the motion
does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vidfuse.data.splits import read_splits
from vidfuse.data.synthetic import MOTIONS, make_synthetic
from vidfuse.errors import VidfuseError

N_FRAMES, SIZE = 16, 32


@pytest.fixture(scope="module")
def motion_set(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("motion"), num_classes=8, videos_per_class=12,
                          n_frames=N_FRAMES, size=SIZE, seed=0)


def test_layout_is_ucf101_frames_and_split_files(motion_set):
    assert motion_set.labels == list(MOTIONS)
    folder = motion_set.frames_root / "SpinClockwise" / "v_SpinClockwise_g03_c02"
    assert (folder / "n_frames").read_text() == str(N_FRAMES)
    assert Image.open(folder / f"image_{N_FRAMES:05d}.jpg").size == (SIZE, SIZE)
    assert (motion_set.splits_dir / "classInd.txt").read_bytes().startswith(b"1 MoveUp\r\n2 MoveDown\r\n3 MoveLeft\r\n")
    splits = read_splits("ucf101", motion_set.splits_dir, val_fraction=0.1)
    for split in (1, 2, 3):  # 6 groups per class: 2 test, 3 train, 1 val (whole group)
        assert splits.counts()[f"split{split}"] == {"train": 48, "val": 16, "test": 32, "unused": 0}


def test_seeded_and_deterministic(tmp_path):
    frame = "frames/MoveLeft/v_MoveLeft_g01_c01/image_00003.jpg"
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        make_synthetic(tmp_path / name, num_classes=3, videos_per_class=6, n_frames=4, size=SIZE, seed=seed)
    a, b, c = ((tmp_path / name / frame).read_bytes() for name in "abc")
    assert a == b and a != c
    with pytest.raises(VidfuseError, match="num_classes"):
        make_synthetic(tmp_path / "d", num_classes=len(MOTIONS) + 1)


def _frames(motion_set, video) -> np.ndarray:
    folder = motion_set.frames_root / video.label_name / video.video_id
    return np.stack([np.asarray(Image.open(folder / f"image_{i:05d}.jpg"), dtype=np.float32)
                     for i in range(1, N_FRAMES + 1)])  # (N_FRAMES, SIZE, SIZE, 3)


def _frame_features(frames: np.ndarray) -> np.ndarray:
    """Per frame: the RGB image average-pooled to 8 x 8 -> (N_FRAMES, 192)."""
    return frames.reshape(N_FRAMES, 8, SIZE // 8, 8, SIZE // 8, 3).mean(axis=(2, 4)).reshape(N_FRAMES, -1)


def _trajectory_features(frames: np.ndarray) -> np.ndarray:
    """The whole video as one vector: per frame, the centroid (x, y) and area of the pixels whose brightness is
    far from the frame border's median (the object) -> (1, N_FRAMES * 3)."""
    luma = frames @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (N_FRAMES, SIZE, SIZE)
    border = np.concatenate([luma[:, 0], luma[:, -1], luma[:, :, 0], luma[:, :, -1]], axis=1)
    mask = np.abs(luma - np.median(border, axis=1)[:, None, None]) > 40
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    area = mask.sum(axis=(1, 2)).clip(min=1)
    return np.stack([(mask * xx).sum(axis=(1, 2)) / area, (mask * yy).sum(axis=(1, 2)) / area, area / SIZE],
                    axis=1).reshape(1, -1).astype(np.float32)


def _linear_accuracy(features, labels, train, test) -> tuple[float, float]:
    """Logistic regression on the rows of `features[video]` (each row labelled with its video's class):
    (train, test) row accuracy."""
    torch.manual_seed(0)
    x_train = torch.tensor(np.concatenate([features[v] for v in train]))
    y_train = torch.tensor(np.concatenate([[labels[v]] * len(features[v]) for v in train]))
    x_test = torch.tensor(np.concatenate([features[v] for v in test]))
    y_test = torch.tensor(np.concatenate([[labels[v]] * len(features[v]) for v in test]))
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    model = torch.nn.Linear(x_train.shape[1], len(MOTIONS))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model((x_train - mean) / std), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return tuple(float((model((x - mean) / std).argmax(1) == y).float().mean())
                     for x, y in ((x_train, y_train), (x_test, y_test)))


def test_a_single_frame_does_not_tell_the_class_but_the_motion_does(motion_set, torch_one_thread):
    splits = read_splits("ucf101", motion_set.splits_dir, val_fraction=0.0)
    frames = {v.video_id: _frames(motion_set, v) for v in splits.videos}
    labels = {v.video_id: motion_set.labels.index(v.label_name) for v in splits.videos}
    train = [v.video_id for v in splits.videos if v.subsets[1] == "train"]
    test = [v.video_id for v in splits.videos if v.subsets[1] == "test"]  # groups never seen in training
    chance = 1 / len(MOTIONS)

    # a classifier of single frames fits the training frames, but nothing in a frame carries over to new videos
    single = {video: _frame_features(f) for video, f in frames.items()}
    fit, held_out = _linear_accuracy(single, labels, train, test)
    assert fit > 0.9 and held_out < chance + 0.1

    # the same classifier on the object's trajectory (where it is and how big, frame after frame) tells the moves,
    # growing and shrinking apart on new videos; only the two spins need the object's orientation
    trajectory = {video: _trajectory_features(f) for video, f in frames.items()}
    _, motion = _linear_accuracy(trajectory, labels, train, test)
    assert motion > chance + 0.5
