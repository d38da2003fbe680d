"""A small synthetic action data set whose classes differ only by motion, in the UCF101 on-disk layout.

Each video shows one textured square on a textured background. The class is how the square moves: up, down,
growing, shrinking, sideways (left or right), spinning (either way), shaking sideways, shaking up and down. Size,
position, angle, colours and textures are drawn from the same distributions for every class, so a single frame
does not tell the class; a clip does. Every class is symmetric under a horizontal flip (sideways and spin
motions take either direction at random), because training augments with flips: "move left" vs "move right"
would be relabelled by the augmentation.

The two clips of a group `gXX` share a background (as UCF101 clips cut from one video share a scene), so the
whole-group validation carve-out matters here too. Output, readable by `prepare --dataset ucf101 --frames`:

    ROOT/frames/<Class>/v_<Class>_gXX_cYY/image_00001.jpg ... + n_frames
    ROOT/splits/classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt   (CRLF, as the official files)

Split k puts groups with (XX - 1) % 3 == k - 1 in test and the rest in train. Seeded and deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vidfuse.errors import VidfuseError

MOTIONS = ("MoveUp", "MoveDown", "Grow", "Shrink", "MoveSideways", "Spin", "ShakeSideways", "ShakeUpDown")
CLIPS_PER_GROUP = 2
MIN_SIDE, MAX_SIDE = 0.22, 0.44  # object side as a fraction of the frame size
SPIN_DEGREES = (9.0, 15.0)  # per frame
SHAKE_PERIOD = (6.0, 10.0)  # frames
SHAKE_AMPLITUDE = 0.12  # fraction of the frame size


@dataclass
class SyntheticSet:
    """Where `make_synthetic` wrote the frames and the split files, and the class names in label order."""

    frames_root: Path
    splits_dir: Path
    labels: list[str]


@dataclass
class ObjectTrack:
    """The square's centre (x, y), side and angle (degrees) in every frame, in pixels."""

    x: np.ndarray
    y: np.ndarray
    side: np.ndarray
    angle: np.ndarray


def texture(rng: np.random.Generator, size: int, contrast: float) -> np.ndarray:
    """A random RGB texture (size x size, uint8): smooth colour noise, stripes or checks around a random colour."""
    base = rng.uniform(40, 215, size=3)
    kind = rng.integers(3)
    if kind == 0:
        coarse = rng.uniform(-1, 1, size=(rng.integers(3, 8),) * 2 + (3,))
        pattern = np.asarray(Image.fromarray(((coarse + 1) * 127.5).astype(np.uint8)).resize((size, size),
                             Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    else:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        theta, period = rng.uniform(0, math.pi), rng.uniform(0.12, 0.3) * size
        u = xx * math.cos(theta) + yy * math.sin(theta)
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        wave = np.sign(np.sin(2 * math.pi * u / period))
        if kind == 2:
            wave = wave * np.sign(np.sin(2 * math.pi * v / period))
        pattern = wave[..., None] * rng.uniform(-1, 1, size=3)
    return np.clip(base + contrast * pattern, 0, 255).astype(np.uint8)


def object_track(motion: str, n_frames: int, size: int, rng: np.random.Generator) -> ObjectTrack:
    """The per-frame state of the square for `motion`; other attributes stay constant over the video."""
    t = np.arange(n_frames, dtype=np.float64)
    ramp = t / max(n_frames - 1, 1)  # 0 -> 1 over the video
    side = np.full(n_frames, rng.uniform(MIN_SIDE, MAX_SIDE) * size)
    angle = np.full(n_frames, rng.uniform(0, 90))
    if motion in ("Grow", "Shrink"):
        side = (MIN_SIDE + (MAX_SIDE - MIN_SIDE) * (ramp if motion == "Grow" else 1 - ramp)) * size
    if motion == "Spin":
        angle = angle + rng.choice([-1, 1]) * rng.uniform(*SPIN_DEGREES) * t
    margin = side.max() / 2
    x = np.full(n_frames, rng.uniform(margin, size - margin))
    y = np.full(n_frames, rng.uniform(margin, size - margin))
    if motion in ("MoveUp", "MoveDown", "MoveSideways"):
        travel = rng.uniform(0.6, 0.9) * (size - 2 * margin)
        start = rng.uniform(margin, size - margin - travel)
        path = start + travel * ramp
        if motion == "MoveUp":
            y = path[::-1].copy()
        elif motion == "MoveDown":
            y = path
        else:
            x = path if rng.integers(2) else path[::-1].copy()
    if motion in ("ShakeSideways", "ShakeUpDown"):
        amplitude = SHAKE_AMPLITUDE * size
        wave = amplitude * np.sin(2 * math.pi * t / rng.uniform(*SHAKE_PERIOD) + rng.uniform(0, 2 * math.pi))
        if motion == "ShakeSideways":
            x = np.clip(x, margin + amplitude, size - margin - amplitude) + wave
        else:
            y = np.clip(y, margin + amplitude, size - margin - amplitude) + wave
    return ObjectTrack(x=x, y=y, side=side, angle=angle)


def render_video(background: np.ndarray, track: ObjectTrack, rng: np.random.Generator) -> list[Image.Image]:
    """Paste the rotated, scaled textured square onto the background at each frame's position."""
    size = background.shape[0]
    patch = Image.fromarray(texture(rng, size, contrast=110.0))
    base = Image.fromarray(background)
    frames = []
    for x, y, side, angle in zip(track.x, track.y, track.side, track.angle):
        side_px = max(2, int(round(side)))
        square = patch.resize((side_px, side_px), Image.BILINEAR).convert("RGBA")
        square = square.rotate(angle, resample=Image.BILINEAR, expand=True)
        frame = base.copy()
        frame.paste(square, (int(round(x - square.width / 2)), int(round(y - square.height / 2))), square)
        frames.append(frame)
    return frames


def video_name(label: str, group: int, clip: int) -> str:
    return f"v_{label}_g{group:02d}_c{clip:02d}"


def make_synthetic(
    root: Path, *, num_classes: int = 8, videos_per_class: int = 24, n_frames: int = 32, size: int = 128,
    seed: int = 0,
) -> SyntheticSet:
    """Render `num_classes` motion classes x `videos_per_class` videos of `n_frames` frames (size x size) under root."""
    if not 1 <= num_classes <= len(MOTIONS):
        raise VidfuseError(f"num_classes={num_classes} must be between 1 and {len(MOTIONS)}")
    if videos_per_class < 3 * CLIPS_PER_GROUP:
        raise VidfuseError(f"videos_per_class={videos_per_class} must be at least {3 * CLIPS_PER_GROUP} "
                           "(three groups, so every split has train and test groups)")
    if n_frames < 2 or size < 16:
        raise VidfuseError(f"n_frames={n_frames} must be at least 2 and size={size} at least 16")
    root = Path(root)
    frames_root, splits_dir = root / "frames", root / "splits"
    labels = list(MOTIONS[:num_classes])
    rng = np.random.default_rng(seed)
    listing: list[tuple[str, int, int]] = []  # (relative path, label number, group) per video
    for label_number, label in enumerate(labels, start=1):
        backgrounds: dict[int, np.ndarray] = {}
        for i in range(videos_per_class):
            group, clip = i // CLIPS_PER_GROUP + 1, i % CLIPS_PER_GROUP + 1
            if group not in backgrounds:
                backgrounds[group] = texture(rng, size, contrast=rng.uniform(20, 50))
            name = video_name(label, group, clip)
            track = object_track(label, n_frames, size, rng)
            write_frames(frames_root / label / name, render_video(backgrounds[group], track, rng))
            listing.append((f"{label}/{name}.avi", label_number, group))
    write_ucf101_splits(splits_dir, labels, listing)
    return SyntheticSet(frames_root=frames_root, splits_dir=splits_dir, labels=labels)


def write_frames(folder: Path, frames: list[Image.Image]) -> None:
    """`image_00001.jpg ...` plus the `n_frames` count file, as 3D-ResNets-PyTorch's frame extraction writes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        frame.save(folder / f"image_{i:05d}.jpg", quality=95)
    (folder / "n_frames").write_text(str(len(frames)))


def write_ucf101_splits(splits_dir: Path, labels: list[str], listing: list[tuple[str, int, int]]) -> None:
    """classInd.txt and the three train/test lists, CRLF; split k tests the groups with (g - 1) % 3 == k - 1."""
    splits_dir.mkdir(parents=True, exist_ok=True)

    def write(name: str, lines: list[str]) -> None:
        (splits_dir / name).write_bytes("".join(f"{line}\r\n" for line in lines).encode())

    write("classInd.txt", [f"{i} {label}" for i, label in enumerate(labels, start=1)])
    for split in (1, 2, 3):
        is_test = [(group - 1) % 3 == split - 1 for _, _, group in listing]
        write(f"trainlist0{split}.txt", [f"{rel} {n}" for (rel, n, _), t in zip(listing, is_test) if not t])
        write(f"testlist0{split}.txt", [rel for (rel, _, _), t in zip(listing, is_test) if t])
