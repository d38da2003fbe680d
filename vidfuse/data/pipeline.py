"""From a prepared Parquet data set to clips: the Ray Data pipeline for training / evaluation, and the same
clip making for `predict` without Ray.

    read_parquet (only the needed columns, from memory-mapped shards: MAPPED_FILES)
      -> [train] a per-row random draw, new every execution (epoch), reproducible from `seed`
      -> map_batches(decode_clips): the rows of split N's subset -> window starts -> decode only those JPEGs
         (libjpeg-turbo, through simplejpeg, into one (T, H, W, C) array; a 2x-8x smaller "draft" decode when the
         crop allows) -> one crop / flip per clip
      -> rows {clip: uint8 (T, H, W, C), label: int64, video_index: int64, clip_index: int64}

The three steps run fused, as one task in one task pool (they ask for the same compute and CPUs, and the map
takes whole blocks): a task decodes the row groups it has just read, so whole videos (every frame, ~1 MB each
at short side 128) never travel through the object store; only the clips do. Measured against separate read
tasks feeding the decoders: ~10 % more clips/s per decoder and faster epochs (benchmarks/data_pipeline.py).
The map calls `decode_clips` (or `pick_window_jpegs`) through `ray_tasks`, so that Ray Data's executor unpickles
the plan without importing torch.
Ray's Parquet reader packs row groups into read units of 128 MiB (~110 videos at short side 128), one task and one
block each. Where a decoder's time goes (one core, benchmarks/data_pipeline.py's data set, a decoder timed per
block): `decode_clips` takes 2.3 ms of CPU a 16-frame clip, and Ray's handling of its output batches 0.08 ms; between
one block and the next pass 60-120 ms (112 videos), of which the Parquet read is ~35 ms (Ray's scanner: 0.31 ms a
video, where pyarrow's `read_row_group` alone takes 0.20 ms) and the gap between tasks 5-10 ms. In all the Ray Data
layer adds ~0.35 ms of CPU to the 2.45 ms a clip costs in a plain loop (the benchmark's ray_layer_cpu_ms_per_clip),
so the decoders run at ~0.87 of the plain loop's rate per core. The default unit is the fastest here
(RAY_DATA_PARQUET_BIN_PACKING_BYTES, one decoder, alternating in one session, train clips/s): 32 MiB 274-279, 64 MiB
335-342, 128 MiB 343-377, 512 MiB 285-313.

The consumer (`iter_torch_batches` on each Train worker) keeps clips uint8 until they are on its device, where
`transforms.to_model_input` converts and normalises them. Decoding asks for CPUs only, so on a cluster it runs
on CPU nodes while GPU nodes train. CPU headroom (RAY_NOTES): the pool is at most CPUs - 1 tasks, leaving a CPU
for each execution's file-listing task, so the decoders and 2 Train workers fit in `ray.init(num_cpus=4)`.

With `decode_on="worker"` the map is `pick_window_jpegs` instead: each clip row carries its window's JPEGs and
its crop, and the consumer decodes them on its own device (`worker_decode`: nvjpeg on a training GPU), so the
CPU tasks only read and pick.

`clip_index` is the window's number within its video (train: always 0; val: 0..n_val_clips-1; test: 0..k-1
over the non-overlapping windows).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import ray
import simplejpeg
import torch
from PIL import Image

from vidfuse.data import ray_tasks
from vidfuse.data.prepare import META_NAME, read_meta, shard_paths
from vidfuse.data.sampling import MODES, clip_starts, window_indices
from vidfuse.data.splits import SUBSETS
from vidfuse.data.transforms import CENTRE_CROP, Augment, Crop, crop_clip, random_crop, resize_short_side
from vidfuse.errors import DAMAGED_DATA_SET, VidfuseError, damaged_shard, first_line

DRAW = "draw"  # per-row uniform [0, 1) column that seeds a train row's window and crop
DECODER_CPUS = 1.0  # a decoder (read + decode task) keeps one core busy
# ... so Arrow's thread pools in its process get one thread each, as torch's does (decode_clips). Ray's Parquet
# reader otherwise sizes them to 32 CPU and 128 I/O threads (made for S3), measured to cost ~3 % of a core in
# thread traffic and ~5 % of the clips/s per core here. Read by the reader at import: the job's runtime env
# (engine/ray_runtime.py) sets them.
DECODER_ENV_VARS = {"RAY_DATA_PARQUET_READER_CPU_COUNT": "1", "RAY_DATA_PARQUET_READER_IO_THREAD_COUNT": "1"}
# Ray's V2 Parquet reader lists the files of every execution (every epoch) through a pool of new footer-reading
# actors, each a fresh Python process, killed when the listing ends. Their count is read from the environment of
# the process that calls `read_parquet`, default 32: on a small machine, starting 32 processes per epoch delayed
# the first batch by seconds (benchmarks/data_pipeline.py: 2.5-5.7 s with 32, 1.0-2.0 s with 1, epochs 2-3). One
# actor, with its 128 I/O threads, reads the footers of hundreds of shards. A value set by the user wins.
FOOTER_READERS_ENV = ("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")
# The shards are read through memory maps: Arrow builds a row group's `frames` column straight from the mapped
# file, instead of from a copy of it that it read first, one copy of every stored frame (~1 MB a video) less. A data
# set is a folder on a local or shared (NFS) file system (`prepare`), which maps. Measured on the decoders' reads
# of benchmarks/data_pipeline.py's data set (1 decoder, 2 cores, 5 runs each, alternating): 324-350 -> 351-365
# clips/s per core; reading one row group alone, 0.29 -> 0.18 ms a video.
MAPPED_FILES = pyarrow.fs.LocalFileSystem(use_mmap=True)
# clips per output batch of a decoder: its memory is bounded by clips, not videos, since test mode makes every
# window of a video (a 1,800-frame UCF101 video: 112 clips of 16 frames, ~68 MB at 112 px)
CLIPS_PER_BATCH = 8
VIDEO_COLUMNS = ["video_index", "video_id", "label", "n_frames", "frames"]  # what decoding reads
DECODE_ON = ("decoders", "worker")  # where clips are decoded: see clip_dataset


DRAFT_REDUCTIONS = (8, 4, 2)  # the scales at which libjpeg can decode a JPEG directly ("draft" in Pillow's words)


def draft_reduction(short_side: int, min_short_side: int) -> int:
    """The largest JPEG draft reduction (8, 4, 2, else 1) that keeps a frame's short side >= `min_short_side`."""
    return next((r for r in DRAFT_REDUCTIONS if short_side // r >= min_short_side), 1)


JPEG = bytes | pa.Buffer  # a stored frame: bytes, or a zero-copy slice of an Arrow buffer (StoredFrames)


def decode_frames(jpegs: Sequence[JPEG], *, min_short_side: int | None = None) -> torch.Tensor:
    """Decode the JPEGs of frames of one size (one video's) on the CPU to uint8 (T, H, W, C): at full size, or, with
    `min_short_side`, at the largest draft reduction that keeps the short side at least that (libjpeg's DCT
    scaling, as Pillow's `draft`: the pixels a reduced decode would discard are never made).

    simplejpeg (libjpeg-turbo) decodes each frame straight into its slot of one array, from Arrow's buffer as it
    is. Against torchvision's decoder (a tensor per frame, stacked afterwards), measured here: the same pixels,
    ~5 % faster decoding alone and ~6 % more clips/s from a Ray decoder (benchmarks/data_pipeline.py). A frame
    whose size differs from the first's is a ValueError, as is a JPEG that does not decode."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(np.frombuffer(jpegs[0], dtype=np.uint8))
    reduction = 1 if min_short_side is None else draft_reduction(min(height, width), min_short_side)
    clip = np.empty((len(jpegs), math.ceil(height / reduction), math.ceil(width / reduction), 3), dtype=np.uint8)
    for slot, jpeg in zip(clip, jpegs):
        frame = simplejpeg.decode_jpeg(np.frombuffer(jpeg, dtype=np.uint8), buffer=slot, min_factor=reduction,
                                       min_height=slot.shape[0], min_width=slot.shape[1])
        if frame.shape != slot.shape:
            raise ValueError(f"a frame of {frame.shape[1]}x{frame.shape[0]} pixels among frames of "
                             f"{slot.shape[1]}x{slot.shape[0]}")
    return torch.from_numpy(clip)


DECODE_ERRORS = (ValueError, RuntimeError)  # what a JPEG that does not decode raises: simplejpeg, torchvision (GPU)


def undecodable(video_id: str, first: int, last: int, error: Exception) -> VidfuseError:
    """The error for a video whose frames `first`..`last` (0-based) hold a JPEG that does not decode: a damaged
    data set. It gives the decoder's first line without the C function that libjpeg-turbo names first
    ("tjDecompressHeader3(): ...") or the source file and line that torchvision does ("decode_jpeg,
    .../decode_jpeg.cpp:171, ...")."""
    line = first_line(error)
    reason = re.sub(r"^(\w+\(\): |decode_jpeg, \S+:\d+, )", "", line) if line else type(error).__name__
    return VidfuseError(f"video {video_id}: one of its frames {first + 1}-{last + 1} does not decode ({reason}): "
                        f"{DAMAGED_DATA_SET}")


@dataclass(frozen=True)
class Window:
    """One clip to cut from a video: its first frame, the frame indices it reads, and its crop."""

    start: int
    indices: list[int]
    crop: Crop


def plan_windows(
    n_frames: int, *, mode: str, sample_duration: int, sample_stride: int = 1, n_val_clips: int = 3,
    rng: np.random.Generator | None = None, augment: Augment = Augment(),
) -> list[Window]:
    """The clips of one video in `mode`: the windows `sampling` places, each with one crop draw from `rng` (train)
    or the centre crop (val / test)."""
    starts = clip_starts(mode, n_frames, duration=sample_duration, stride=sample_stride,
                         n_val_clips=n_val_clips, rng=rng)
    return [Window(start, window_indices(start, n_frames, duration=sample_duration, stride=sample_stride),
                   random_crop(rng, augment) if mode == "train" else CENTRE_CROP)
            for start in starts]


def cut_clip(load_frames: Callable[[list[int], int], torch.Tensor], window: Window, size: int) -> np.ndarray:
    """The uint8 (T, S, S, C) clip of `window`. `load_frames(indices, min_short_side)` returns those frames as
    uint8 (len(indices), H, W, C) with a short side of at least `min_short_side` (or their full size); each
    distinct frame is loaded once (a window loop-padded over a short video repeats frames)."""
    distinct = list(dict.fromkeys(window.indices))
    frames = load_frames(distinct, window.crop.min_short_side(size))  # (distinct, H, W, C)
    if distinct != window.indices:
        slot = {index: k for k, index in enumerate(distinct)}
        frames = frames[[slot[index] for index in window.indices]]  # (T, H, W, C)
    return crop_clip(frames, window.crop, size).numpy()


class StoredFrames:
    """The JPEG bytes of one record batch's `frames` column (list<binary>), sliced straight out of Arrow's data
    buffer by its offsets: no Python object per stored frame (pyarrow scalars cost ~4 us per frame here)."""

    def __init__(self, videos: pa.ListArray) -> None:
        jpegs = videos.values
        offset_type = np.int64 if pa.types.is_large_binary(jpegs.type) else np.int32
        self.video_starts = videos.offsets.to_numpy()  # row -> index of its first JPEG in `jpegs`
        self.jpeg_offsets = np.frombuffer(jpegs.buffers()[1], dtype=offset_type)[jpegs.offset:]
        self.data = jpegs.buffers()[2]

    def jpegs(self, row: int, indices: Sequence[int]) -> list[pa.Buffer]:
        """The JPEGs of frames `indices` of video `row`: zero-copy views of the data buffer."""
        first = self.video_starts[row]
        return [self.data[self.jpeg_offsets[first + i]:self.jpeg_offsets[first + i + 1]] for i in indices]


@dataclass
class StoredVideo:
    """A video row of the requested subset, its clips planned."""

    label: int
    video_index: int
    video_id: str
    windows: list[Window]
    stored: StoredFrames
    row: int

    def jpegs(self, indices: Sequence[int]) -> list[pa.Buffer]:
        return self.stored.jpegs(self.row, indices)

    def load_frames(self, indices: list[int], min_short_side: int) -> torch.Tensor:
        """Decode frames `indices` to uint8 (T, H, W, C), as small as `min_short_side` allows (a draft
        reduction), else at full size. A frame that does not decode (a damaged data set) is an error naming the
        video and its frames."""
        try:
            return decode_frames(self.jpegs(indices), min_short_side=min_short_side)
        except DECODE_ERRORS as exc:
            raise undecodable(self.video_id, min(indices), max(indices), exc) from None


def _subset_videos(
    block: pa.Table, *, split_column: str, subset: str, mode: str, sample_duration: int, sample_stride: int,
    n_val_clips: int, augment: Augment,
) -> Iterator[StoredVideo]:
    """The block's videos whose `split_column` is `subset`, with their windows planned (train: from the row's draw).

    Rows of other subsets are skipped here rather than filtered in the read: Arrow's filter copies every kept
    row's frames (measured +40 % read CPU), and the scan cannot skip a row group anyway, since `prepare` writes
    the videos in random order."""
    for batch in block.to_batches():
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False)
                   for name in VIDEO_COLUMNS if name != "frames"}
        draws = batch.column(DRAW).to_numpy() if mode == "train" else None
        stored = StoredFrames(batch.column("frames"))
        for row in np.flatnonzero(batch.column(split_column).to_numpy(zero_copy_only=False) == subset):
            rng = np.random.default_rng(int(draws[row] * 2**53)) if draws is not None else None
            windows = plan_windows(int(columns["n_frames"][row]), mode=mode, sample_duration=sample_duration,
                                   sample_stride=sample_stride, n_val_clips=n_val_clips, rng=rng, augment=augment)
            yield StoredVideo(label=int(columns["label"][row]), video_index=int(columns["video_index"][row]),
                              video_id=str(columns["video_id"][row]), windows=windows, stored=stored, row=int(row))


@dataclass(frozen=True)
class PlannedClip:
    """One clip to make: its video, its window, and the window's number within the video (`clip_index`)."""

    video: StoredVideo
    window: Window
    index: int


def _clip_batches(videos: Iterator[StoredVideo], size: int) -> Iterator[list[PlannedClip]]:
    """The clips of `videos`, in order, in lists of `size` (the last one shorter); a video's windows may span
    two lists."""
    batch = []
    for video in videos:
        for index, window in enumerate(video.windows):
            batch.append(PlannedClip(video, window, index))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def _index_columns(clips: list[PlannedClip]) -> dict[str, np.ndarray]:
    """label, video_index and clip_index of `clips`, in order."""
    return {
        "label": np.asarray([clip.video.label for clip in clips], dtype=np.int64),
        "video_index": np.asarray([clip.video.video_index for clip in clips], dtype=np.int64),
        "clip_index": np.asarray([clip.index for clip in clips], dtype=np.int64),
    }


def decode_clips(
    block: pa.Table, *, sample_size: int, clips_per_batch: int, **selection: Any,
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task: a block of video rows as read -> batches of `clips_per_batch` clip rows of the selected
    videos (`selection`: the keywords of `_subset_videos`; see the module docstring).

    The whole block, not a batch of it, so that Ray fuses the Parquet read into this task (it only fuses a
    read with a map that takes no `batch_size`): the frames never travel through the object store. The
    block stays Arrow: each JPEG of a chosen window is sliced straight from the Arrow buffer, where a NumPy
    batch would first copy every frame of every video into a Python `bytes`. A plain function in a task pool,
    not an actor: Ray reuses its worker processes (torch already imported) across executions, where an actor
    pool starts new processes every epoch (~5 s before the first batch).
    """
    torch.set_num_threads(1)  # one decoder, one core; parallelism comes from the task pool
    for clips in _clip_batches(_subset_videos(block, **selection), clips_per_batch):
        pixels = [cut_clip(clip.video.load_frames, clip.window, sample_size) for clip in clips]  # (T, S, S, C) each
        yield {"clip": np.stack(pixels), **_index_columns(clips)}


def pick_window_jpegs(block: pa.Table, *, clips_per_batch: int, **selection: Any) -> Iterator[pa.Table]:
    """Ray Data task for `decode_on: worker`: as `decode_clips`, but each clip row carries its window's JPEGs
    and its crop instead of decoded pixels, for the consumer to decode on its device (`worker_decode`):
    {jpegs: list<binary> (T), crop_scale, crop_position, crop_flip, video_id, first_frame, last_frame, label,
    video_index, clip_index} (`video_id` and the window's frames name a JPEG that does not decode)."""
    for clips in _clip_batches(_subset_videos(block, **selection), clips_per_batch):
        windows = [clip.window for clip in clips]
        yield pa.table({
            "jpegs": pa.array([[jpeg.to_pybytes() for jpeg in clip.video.jpegs(clip.window.indices)]
                               for clip in clips], type=pa.list_(pa.binary())),
            "video_id": pa.array([clip.video.video_id for clip in clips], type=pa.string()),
            "first_frame": pa.array([min(window.indices) for window in windows], type=pa.int64()),
            "last_frame": pa.array([max(window.indices) for window in windows], type=pa.int64()),
            "crop_scale": pa.array([window.crop.scale for window in windows], type=pa.float64()),
            "crop_position": pa.array([window.crop.position for window in windows], type=pa.string()),
            "crop_flip": pa.array([window.crop.flip for window in windows], type=pa.bool_()),
            **_index_columns(clips),
        })


# What to do about an empty subset: val is carved out of the training list by `prepare` (splits.py)
NO_VIDEOS_HINTS = {
    "val": " (prepare it again with a larger --val-fraction, or validate on the test list: "
           "--set data.val_from_test=true)",
}


def _check_subset(path: Path, split: int, subset: str) -> dict:
    """Raise unless the data set at `path` has split `split` with at least one `subset` video; its `_meta.json`."""
    if subset not in SUBSETS:
        raise VidfuseError(f"unknown subset {subset!r}; choose one of: {', '.join(SUBSETS)}")
    meta = read_meta(path)
    counts = meta["counts"]
    if f"split{split}" not in counts:
        raise VidfuseError(f"{path} has no split {split} (it has: {', '.join(counts)})")
    if not counts[f"split{split}"].get(subset):
        raise VidfuseError(f"{path}: split {split} has no {subset} videos" + NO_VIDEOS_HINTS.get(subset, ""))
    return meta


@contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """Inside the block, `os.environ[name]` is `value` unless it was already set; restored afterwards."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _decoder_pool_size(decode_workers: int) -> int:
    """`decode_workers`, capped at the cluster's CPUs - 1 so that an execution's file listing finds a CPU."""
    if decode_workers < 1:
        raise VidfuseError(f"decode_workers={decode_workers} must be at least 1")
    cpus = int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0
    return max(1, min(decode_workers, cpus - 1)) if cpus else decode_workers


def clip_dataset(
    path: Path | str, *, split: int, subset: str, mode: str, sample_duration: int, sample_size: int,
    sample_stride: int = 1, n_val_clips: int = 3, augment: Augment = Augment(), seed: int = 0,
    decode_workers: int = 1, clips_per_batch: int = CLIPS_PER_BATCH, decode_on: str = "decoders",
) -> ray.data.Dataset:
    """A Ray Dataset of clips of the `subset` videos of split `split`, sampled for `mode` (train / val / test).

    Train rows get a new random window and crop (drawn as `augment` says) every time the dataset is executed
    (each epoch), reproducibly from `seed`; val and test rows are the same every time. `decode_on`: "decoders"
    gives clip rows decoded by this pipeline's CPU tasks; "worker" gives each clip's JPEGs and crop instead, for
    the consumer to decode on its own device (`worker_decode.WindowDecodeCollate`, nvjpeg on a GPU).
    """
    path = Path(path)
    _check_subset(path, split, subset)
    if mode not in MODES:
        raise VidfuseError(f"unknown sampling mode {mode!r}; choose one of: {', '.join(MODES)}")
    if decode_on not in DECODE_ON:
        raise VidfuseError(f"unknown decode_on {decode_on!r}; choose one of: {', '.join(DECODE_ON)}")
    from ray.data.expressions import random

    pool_size = _decoder_pool_size(decode_workers)
    pool = dict(compute=ray.data.TaskPoolStrategy(size=pool_size), num_cpus=DECODER_CPUS)
    with _env_default(*FOOTER_READERS_ENV):  # read by the file indexer that read_parquet creates
        ds = ray.data.read_parquet(  # the same pool and CPUs for every step: Ray fuses them into one task
            [str(p) for p in shard_paths(path)],
            filesystem=MAPPED_FILES,
            num_cpus=DECODER_CPUS,
            concurrency=pool_size,
            shuffle=ray.data.FileShuffleConfig(seed=seed, reseed_after_execution=True) if mode == "train" else None,
        )
    ds = ds.select_columns([*VIDEO_COLUMNS, f"split{split}"])  # the subset's rows: see decode_clips
    if mode == "train":
        ds = ds.with_column(DRAW, random(seed=seed, reseed_after_execution=True), **pool)
    options = dict(split_column=f"split{split}", subset=subset, clips_per_batch=clips_per_batch, mode=mode,
                   sample_duration=sample_duration, sample_stride=sample_stride, n_val_clips=n_val_clips,
                   augment=asdict(augment))  # plain values in the plan: see ray_tasks
    if decode_on == "decoders":
        clips, options = ray_tasks.decode_clips, {**options, "sample_size": sample_size}
    else:
        clips = ray_tasks.pick_window_jpegs
    return ds.map_batches(
        clips,
        fn_kwargs=options,
        batch_size=None,  # whole blocks: see decode_clips
        batch_format="pyarrow",
        **pool,
    )


def continue_draws(dataset: ray.data.Dataset, *, executions_done: int) -> None:
    """Make the next execution of `dataset` (a train `clip_dataset`, one execution an epoch) draw the windows,
    crops and shard order that its execution number `executions_done + 1` would have drawn.

    Ray derives each execution's seeds from the dataset's seed and the execution's index, counted on the
    dataset's DataContext from 0. A resumed or restarted run builds its dataset anew, so without this its epochs
    after the stop would replay the draws of the run's first epochs."""
    dataset.context._execution_idx = executions_done


def video_table(path: Path | str, *, split: int, subset: str) -> list[dict]:
    """`video_index, video_id, label, label_name, n_frames` of the `subset` videos of split `split` (no Ray).
    `train`, `test` and `tune` read it before any pipeline runs: a shard that does not read is an error here."""
    path = Path(path)
    labels = _check_subset(path, split, subset)["labels"]
    columns = ["video_index", "video_id", "label", "label_name", "n_frames"]
    table = pa.concat_tables(_read_shard(shard, columns=columns, filters=[(f"split{split}", "=", subset)])
                             for shard in shard_paths(path))
    videos = table.sort_by("video_index").to_pylist()
    _check_label_names(path, videos, labels)
    return videos


def _check_label_names(path: Path, videos: list[dict], labels: list[str]) -> None:
    """Raise unless every video's label (its row in the model's output) names its class as `labels`, `_meta.json`'s
    list, does: a list cut short or reordered would make training fail deep in a worker, or score against wrong
    names."""
    for video in videos:
        label = video["label"]
        if not (0 <= label < len(labels) and labels[label] == video["label_name"]):
            listed = f"names {labels[label]!r}" if 0 <= label < len(labels) else f"has {len(labels)} labels"
            raise VidfuseError(f"{path / META_NAME}: its labels do not match the shards' (video {video['video_id']} "
                               f"has label {label}, {video['label_name']!r}; the list {listed}): {DAMAGED_DATA_SET}")


def _read_shard(shard: Path, **read_options: Any) -> pa.Table:
    """One Parquet shard of a prepared data set. One that Arrow cannot read (a copy cut short, a file overwritten)
    is a damaged data set: one line that names the shard."""
    try:
        return pq.read_table(shard, **read_options)
    except (pa.ArrowException, OSError) as exc:
        reason = re.sub(r"^Could not open Parquet input source '[^']*': ", "", first_line(exc))
        raise damaged_shard(shard, reason) from None


def eval_clips(
    frames: list[np.ndarray], *, sample_duration: int, sample_size: int, short_side: int, sample_stride: int = 1,
    n_clips: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Centre-cropped clips of decoded frames as the pipeline makes them (frames resized to `short_side` first,
    as `prepare` stores them): uint8 (n_windows, T, S, S, C) and window starts. `n_clips` None: all
    non-overlapping windows (test); an int: that many evenly spaced windows (val)."""
    if not frames:
        raise VidfuseError("no frames to make clips from")
    windows = plan_windows(len(frames), mode="test" if n_clips is None else "val", sample_duration=sample_duration,
                           sample_stride=sample_stride, n_val_clips=n_clips or 1)

    def load_frames(indices: list[int], _: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(resize_short_side(Image.fromarray(frames[i]), short_side))
                                          for i in indices]))  # (T, H, W, C)

    clips = [cut_clip(load_frames, window, sample_size) for window in windows]
    return np.stack(clips), [window.start for window in windows]
