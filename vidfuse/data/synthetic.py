"""A small synthetic action data set whose classes differ only by motion, in the UCF101 on-disk layout.

Each video shows one textured bar on a faintly textured background. The class is how the bar moves: up, down,
left, right, growing, shrinking, spinning clockwise, spinning anticlockwise. Size, position, angle, colours and
textures are drawn from the same distributions for every class, so a single frame does not tell the class; a
clip does. The bar is always clearly brighter or darker than the background, so it never hides.

Direction is the class, so train on this set with flips off (`data.hflip=false`): a flip turns MoveLeft into
MoveRight and a clockwise spin into an anticlockwise one.

The clips of group `gXX` share a background, and so do the groups with the same number across classes (a scene
shared by all actions), so the background tells nothing about the class. Output, readable by
`prepare --dataset ucf101 --frames`:

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

MOTIONS = ("MoveUp", "MoveDown", "MoveLeft", "MoveRight", "Grow", "Shrink", "SpinClockwise", "SpinAnticlockwise")
CLIPS_PER_GROUP = 2
MIN_LENGTH, MAX_LENGTH = 0.2, 0.5  # the bar's long side as a fraction of the frame size
BAR_ASPECT = 2.5  # long side / short side: a bar, so that a turn moves many pixels
TRAVEL = (0.7, 1.0)  # a move's path as a fraction of the room the frame leaves
SPIN_DEGREES = (5.0, 9.0)  # per frame: under 45 degrees a step even at stride 4 (a bar repeats every 180)
BACKGROUND_CONTRAST = (0.0, 10.0)  # texture amplitude around the base colour, 0-255 scale
OBJECT_CONTRAST = 40.0  # texture amplitude on the bar
OBJECT_LUMA_GAP = 80.0  # the bar's base colour is this much brighter or darker than the background's


@dataclass
class SyntheticSet:
    """Where `make_synthetic` wrote the frames and the split files, and the class names in label order."""

    frames_root: Path
    splits_dir: Path
    labels: list[str]


@dataclass
class ObjectTrack:
    """The bar's centre (x, y), long side and angle (degrees) in every frame, in pixels."""

    x: np.ndarray
    y: np.ndarray
    length: np.ndarray
    angle: np.ndarray


def luma(rgb: np.ndarray) -> float:
    """Brightness of an RGB colour (ITU-R BT.601 weights, 0-255)."""
    return float(np.dot(rgb, (0.299, 0.587, 0.114)))


def object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random base colour for the bar, OBJECT_LUMA_GAP darker than a bright background or brighter than a dark
    one, so the object never hides in the background."""
    background_luma = luma(background.reshape(-1, 3).mean(0))
    sign = 1.0 if background_luma > 127.5 else -1.0
    while True:
        colour = rng.uniform(20, 235, size=3)
        if sign * (background_luma - luma(colour)) >= OBJECT_LUMA_GAP:
            return colour


def texture(rng: np.random.Generator, size: int, contrast: float, base: np.ndarray | None = None) -> np.ndarray:
    """A random RGB texture (size x size, uint8): smooth colour noise, stripes or checks around `base` (default:
    a random colour)."""
    base = rng.uniform(40, 215, size=3) if base is None else base
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
    """The per-frame state of the bar for `motion`; other attributes stay constant over the video."""
    ramp = np.linspace(0.0, 1.0, n_frames)  # 0 -> 1 over the video
    length = np.full(n_frames, rng.uniform(MIN_LENGTH, MAX_LENGTH) * size)
    angle = np.full(n_frames, rng.uniform(0, 180))
    if motion in ("Grow", "Shrink"):
        length = (MIN_LENGTH + (MAX_LENGTH - MIN_LENGTH) * (ramp if motion == "Grow" else 1 - ramp)) * size
    if motion.startswith("Spin"):
        turn = rng.uniform(*SPIN_DEGREES) * np.arange(n_frames)
        angle = angle + (turn if motion == "SpinAnticlockwise" else -turn)  # PIL rotates anticlockwise
    margin = length.max() / 2  # the bar stays inside the frame at any angle
    x = np.full(n_frames, rng.uniform(margin, size - margin))
    y = np.full(n_frames, rng.uniform(margin, size - margin))
    if motion.startswith("Move"):
        travel = rng.uniform(*TRAVEL) * (size - 2 * margin)
        start = rng.uniform(margin, size - margin - travel)
        forward = start + travel * ramp  # increasing coordinate: right, or down (image rows grow downwards)
        path = forward if motion in ("MoveRight", "MoveDown") else forward[::-1].copy()
        if motion in ("MoveLeft", "MoveRight"):
            x = path
        else:
            y = path
    return ObjectTrack(x=x, y=y, length=length, angle=angle)


def render_video(background: np.ndarray, track: ObjectTrack, rng: np.random.Generator) -> list[Image.Image]:
    """Paste the rotated, scaled textured bar onto the background at each frame's position."""
    size = background.shape[0]
    patch = Image.fromarray(texture(rng, size, contrast=OBJECT_CONTRAST, base=object_colour(rng, background)))
    base = Image.fromarray(background)
    frames = []
    for x, y, length, angle in zip(track.x, track.y, track.length, track.angle):
        size_px = (max(2, round(length)), max(1, round(length / BAR_ASPECT)))
        bar = patch.resize(size_px, Image.BILINEAR).convert("RGBA")
        bar = bar.rotate(angle, resample=Image.BILINEAR, expand=True)
        frame = base.copy()
        frame.paste(bar, (int(round(x - bar.width / 2)), int(round(y - bar.height / 2))), bar)
        frames.append(frame)
    return frames


def video_name(label: str, group: int, clip: int) -> str:
    return f"v_{label}_g{group:02d}_c{clip:02d}"


def check_synthetic_sizes(*, num_classes: int, videos_per_class: int, n_frames: int = 32, size: int = 128) -> None:
    """Raise unless `make_synthetic` can render a set of these sizes (callers check before they change anything)."""
    if not 1 <= num_classes <= len(MOTIONS):
        raise VidfuseError(f"num_classes={num_classes} must be between 1 and {len(MOTIONS)}")
    if videos_per_class < 3 * CLIPS_PER_GROUP:
        raise VidfuseError(f"videos_per_class={videos_per_class} must be at least {3 * CLIPS_PER_GROUP} "
                           "(three groups, so every split has train and test groups)")
    if n_frames < 2 or size < 16:
        raise VidfuseError(f"n_frames={n_frames} must be at least 2 and size={size} at least 16")


def make_synthetic(
    root: Path, *, num_classes: int = 8, videos_per_class: int = 24, n_frames: int = 32, size: int = 128,
    seed: int = 0,
) -> SyntheticSet:
    """Render `num_classes` motion classes x `videos_per_class` videos of `n_frames` frames (size x size) under root."""
    check_synthetic_sizes(num_classes=num_classes, videos_per_class=videos_per_class, n_frames=n_frames, size=size)
    root = Path(root)
    frames_root, splits_dir = root / "frames", root / "splits"
    labels = list(MOTIONS[:num_classes])
    rng = np.random.default_rng(seed)
    listing: list[tuple[str, int, int]] = []  # (relative path, label number, group) per video
    backgrounds: dict[int, np.ndarray] = {}
    for label_number, label in enumerate(labels, start=1):
        for i in range(videos_per_class):
            group, clip = i // CLIPS_PER_GROUP + 1, i % CLIPS_PER_GROUP + 1
            if group not in backgrounds:
                backgrounds[group] = texture(rng, size, contrast=rng.uniform(*BACKGROUND_CONTRAST))
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
