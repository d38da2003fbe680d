"""`prepare`: split files + raw videos or frame folders -> a Parquet data set (a folder) with `_meta.json`.

Output layout (`OUT` is a folder, conventionally named `DATA.parquet`):

    OUT/part-00000.parquet ...   one row per video, row groups of `ROW_GROUP_VIDEOS` videos, shards of
                                 `SHARD_VIDEOS` videos; rows are in a seeded random order so every shard mixes
                                 all classes (a file-level shuffle then gives well-mixed batches)
    OUT/_meta.json               dataset, labels (in label order), source, options, counts per split and subset;
                                 the leading `_` makes Parquet readers skip it, so `pyarrow.parquet.read_table(OUT)`
                                 and `ray.data.read_parquet(OUT)` read the folder as one table

Columns: `video_index` (int64, 0..N-1, stable: the row's position), `video_id`, `label` (int64), `label_name`,
`n_frames`, `height`, `width` (of the stored frames), `frames` (list of JPEG bytes, short side `short_side`),
and `split1`..`split3` (`train`, `val`, `test` or `unused`; Kinetics and folder data sets have `split1` only).

Everything is written into a temporary folder beside `OUT` and renamed to `OUT` only when complete, so an
interrupted run never leaves a half-written data set under the final name. Videos are encoded in parallel
processes; listed videos that are missing, do not decode, or have fewer than `min_frames` frames are skipped
and reported (or, with `strict`, stop the run); files on disk that no split lists are reported too.
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidfuse.data.splits import DEFAULT_TEST_FRACTION, SUBSETS, SplitSet, folder_splits, read_splits
from vidfuse.data.transforms import resize_short_side
from vidfuse.data.video import VIDEO_EXTENSIONS, iter_frames
from vidfuse.errors import VidfuseError
from vidfuse.files import read_json, write_json
from vidfuse.progress import Progress

DATASETS = ("ucf101", "hmdb51", "kinetics", "folder")
ROW_GROUP_VIDEOS = 16
SHARD_VIDEOS = 256
JPEG_QUALITY = 90
META_NAME = "_meta.json"  # "_" prefix: Parquet readers (pyarrow, Ray, pandas) skip it when reading OUT
DEFAULT_VAL_FRACTION = 0.1
# Stored frames feed training crops (112-224 px, from short sides of 128-320); a larger side only grows every row
# (a video is one row), and a mistyped one (100000) would have `prepare` upscale each frame for hours
MAX_SHORT_SIDE = 1080


@dataclass
class EncodedVideo:
    """One video's frames, resized and JPEG-encoded."""

    frames: list[bytes]
    height: int
    width: int


@dataclass
class PrepareSummary:
    """What `prepare_dataset` did: where, how many rows, which listed videos it skipped and why, unlisted files."""

    out: Path
    written: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (video_id, reason)
    unlisted: list[str] = field(default_factory=list)  # paths relative to the root
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def report(self, examples: int = 5) -> str:
        """A few human-readable lines: the counts, skips grouped by reason, unlisted files."""
        lines = [f"wrote {self.written} videos to {self.out}"]
        for split, tally in self.counts.items():
            lines.append(f"  {split}: " + ", ".join(f"{name} {n}" for name, n in tally.items()))
            if empty := [subset for subset in SUBSETS if not tally.get(subset)]:
                lines.append(f"  warning: {split} has no {' or '.join(empty)} videos, which `train` / `test` need")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} listed videos:")
            by_kind = Counter(reason_kind(reason) for _, reason in self.skipped)
            for kind, n in by_kind.most_common():
                shown = [f"{v} ({r})" for v, r in self.skipped if reason_kind(r) == kind][:examples]
                lines.append(f"  {kind}: {n}, e.g. " + "; ".join(shown))
        if self.unlisted:
            lines.append(f"{len(self.unlisted)} files on disk are in no split list, e.g. "
                         + ", ".join(self.unlisted[:examples]))
        return "\n".join(lines)


MISSING = "missing on disk"
UNDECODABLE = "does not decode"
TOO_SHORT = "too short"


def reason_kind(reason: str) -> str:
    """The kind of a skip reason (`missing on disk`, `does not decode`, `too short`): the part before `:`."""
    return reason.split(":")[0]


def scan_root(root: Path, kind: str) -> dict[tuple[str, str], Path]:
    """`(class folder, video id) -> path` for every video file (`kind` videos) or frame folder under `root`."""
    if not root.exists():
        raise VidfuseError(f"{kind} root not found: {root}")
    if not root.is_dir():
        raise VidfuseError(f"{kind} root is not a folder: {root}")
    found = {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for entry in class_dir.iterdir():
            if entry.is_dir() if kind == "frames" else entry.suffix.lower() in VIDEO_EXTENSIONS:
                found[(class_dir.name, entry.stem if kind == "videos" else entry.name)] = entry
    return found


def encode_video(path: Path, short_side: int) -> EncodedVideo:
    """Decode `path` (file or frame folder), resize each frame to `short_side`, JPEG-encode it. The frames of a
    video must share one size (a row has one height and width, and a clip is decoded into one array): a frame of
    another size is an error that names it."""
    frames, size = [], None
    for number, image in enumerate(iter_frames(path), start=1):
        image = resize_short_side(image, short_side)
        if size is not None and image.size != size:
            raise VidfuseError(f"{path}: frame {number} is {image.size[0]}x{image.size[1]} pixels at short side "
                               f"{short_side}, frame 1 {size[0]}x{size[1]} (the frames of a video must have one size)")
        size = image.size
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        frames.append(buffer.getvalue())
    width, height = size or (0, 0)
    return EncodedVideo(frames=frames, height=height, width=width)


def _encode_job(job: tuple[str, str, int]) -> tuple[str, EncodedVideo | str]:
    """Pool worker: `(video_id, path, short_side)` -> `(video_id, EncodedVideo or the reason it failed)`."""
    video_id, path, short_side = job
    try:
        return video_id, encode_video(Path(path), short_side)
    except VidfuseError as exc:
        return video_id, f"{UNDECODABLE}: {exc}"


def _schema(splits: list[int]) -> pa.Schema:
    return pa.schema(
        [
            ("video_index", pa.int64()),
            ("video_id", pa.string()),
            ("label", pa.int64()),
            ("label_name", pa.string()),
            ("n_frames", pa.int64()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("frames", pa.list_(pa.binary())),
            *[(f"split{s}", pa.string()) for s in splits],
        ]
    )


def writer_options(schema: pa.Schema) -> dict:
    """`pq.ParquetWriter` options for a data set: the `frames` column plain (JPEG bytes do not compress, so
    Snappy and dictionary encoding would only cost every reader a pass over every frame), the rest Snappy."""
    return dict(
        compression={name: "none" if name == "frames" else "snappy" for name in schema.names},
        use_dictionary=[name for name in schema.names if name != "frames"],
    )


class ShardWriter:
    """Writes rows into `part-NNNNN.parquet` shards inside a folder, one row group per `ROW_GROUP_VIDEOS` rows."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder, self.schema = folder, schema
        self.pending: list[dict] = []
        self.written = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) == ROW_GROUP_VIDEOS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            shard = self.folder / f"part-{self.written // SHARD_VIDEOS:05d}.parquet"
            self.writer = pq.ParquetWriter(shard, self.schema, **writer_options(self.schema))
        self.writer.write_table(pa.Table.from_pylist(self.pending, self.schema))
        self.written += len(self.pending)
        self.pending = []
        if self.written % SHARD_VIDEOS == 0:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _encoded_stream(jobs: list[tuple[str, str, int]], workers: int):
    """Yield `_encode_job` results in job order, in `workers` processes (in this process when workers == 1)."""
    if workers == 1:
        yield from map(_encode_job, jobs)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(_encode_job, jobs, chunksize=2)


def _check_out(out: Path, overwrite: bool) -> None:
    """Raise unless `out` is free, or holds a data set and `overwrite` allows replacing it: checked before any
    work, so that a mistyped --out never costs an hour of encoding, nor the data already there."""
    if out.is_symlink():
        raise VidfuseError(f"--out {out} is a symbolic link: give the path it points to, or another one")
    if not out.exists():
        return
    if not (out / META_NAME).is_file():
        raise VidfuseError(f"--out {out} exists and is not a vidfuse data set (no {META_NAME}): choose another path")
    if not overwrite:
        raise VidfuseError(f"--out {out} already holds a data set: pass --overwrite to replace it")
    foreign = sorted(p.name for p in out.iterdir()
                     if not p.is_file() or (p.name != META_NAME and not p.match("part-*.parquet")))
    if foreign:
        raise VidfuseError(f"--out {out} holds {foreign[0]}, which prepare did not write: move it out before "
                           "--overwrite replaces the folder")


def _replace_atomically(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` folder to `out`, replacing an older data set there."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.is_dir():
        shutil.rmtree(old)
    elif old.exists():
        old.unlink()


def prepare_dataset(
    *,
    dataset: str,
    splits: Path | None,
    out: Path,
    frames: Path | None = None,
    videos: Path | None = None,
    short_side: int = 128,
    workers: int | None = None,
    min_frames: int = 1,
    strict: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> PrepareSummary:
    """Write the Parquet data set `out` (a folder of shards + _meta.json) for the videos the split files list.

    `test_fraction` is for the `folder` data set only (which has no split files; default DEFAULT_TEST_FRACTION):
    the others' test lists are official. An existing data set at `out` is replaced only with `overwrite`, and
    anything else there never is (see `_check_out`).
    """
    if dataset not in DATASETS:
        raise VidfuseError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if (frames is None) == (videos is None):
        raise VidfuseError("give exactly one of --frames (frame folders) or --videos (video files)")
    if short_side < 1 or min_frames < 1:
        raise VidfuseError(f"--short-side ({short_side}) and --min-frames ({min_frames}) must be at least 1")
    if short_side > MAX_SHORT_SIDE:
        raise VidfuseError(f"--short-side {short_side} is more than {MAX_SHORT_SIDE} pixels: frames are stored for "
                           "training crops, usually at 128-320")
    if workers is not None and workers < 1:
        raise VidfuseError(f"--workers {workers} must be at least 1")
    if seed < 0:
        raise VidfuseError(f"--seed {seed} must be at least 0")
    if dataset == "folder" and splits is not None:
        raise VidfuseError(f"--dataset folder takes no --splits ({splits}): it splits the folders it finds")
    if dataset != "folder" and test_fraction is not None:
        raise VidfuseError(f"--test-fraction ({test_fraction}) is for --dataset folder only: {dataset}'s test lists "
                           "are its split files")
    kind, root = ("frames", Path(frames)) if frames is not None else ("videos", Path(videos))
    on_disk = scan_root(root, kind)
    if dataset == "folder":
        test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        split_set = folder_splits(sorted(on_disk), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    else:
        split_set = read_splits(dataset, splits, val_fraction=val_fraction, seed=seed)

    located, skipped = _locate(split_set, on_disk)
    claimed = {path for path in located.values()}
    unlisted = sorted(str(p.relative_to(root)) for p in on_disk.values() if p not in claimed)
    if strict and skipped:
        raise VidfuseError(f"{skipped[0][0]}: {skipped[0][1]} under {root} (--strict; {len(skipped)} such videos)")

    out = Path(out).absolute()  # "." has no name to put a temporary sibling beside
    _check_out(out, overwrite)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise VidfuseError(f"cannot write {out}: {exc.strerror}") from None
    try:
        written, counts, encode_skips = _write_rows(
            split_set, located, tmp, short_side=short_side, min_frames=min_frames, strict=strict,
            workers=workers or os.cpu_count() or 1, seed=seed, progress=progress,
        )
        skipped = sorted(skipped + encode_skips)
        if written == 0:
            raise VidfuseError(f"no video of the split lists could be prepared from {root} "
                               f"({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else
                               f"the split lists name no videos ({splits})")
        meta = {
            "dataset": dataset,
            "labels": split_set.labels,
            "splits": split_set.splits,
            "source": {kind: str(root.resolve()), "splits": str(Path(splits).resolve()) if splits else None},
            "options": {"short_side": short_side, "min_frames": min_frames, "val_fraction": val_fraction,
                        "test_fraction": test_fraction, "seed": seed,
                        "jpeg_quality": JPEG_QUALITY},
            "videos": written,
            "counts": counts,
            "skipped": len(skipped),
        }
        write_json(tmp / META_NAME, meta)
        _replace_atomically(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return PrepareSummary(out=out, written=written, skipped=skipped, unlisted=unlisted, counts=counts)


def _locate(
    split_set: SplitSet, on_disk: dict[tuple[str, str], Path]
) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Match listed videos to paths on disk: `({video_id: path}, [(video_id, "missing on disk")])`."""
    located, missing = {}, []
    for video in split_set.videos:
        path = next((on_disk[(f, video.video_id)] for f in video.folders if (f, video.video_id) in on_disk), None)
        if path is None:
            missing.append((video.video_id, MISSING))
        else:
            located[video.video_id] = path
    return located, missing


def _write_rows(
    split_set: SplitSet, located: dict[str, Path], folder: Path, *, short_side: int, min_frames: int,
    strict: bool, workers: int, seed: int, progress: bool,
) -> tuple[int, dict[str, dict[str, int]], list[tuple[str, str]]]:
    """Encode the located videos in a seeded random order and write them as rows; returns counts and skips."""
    by_id = {v.video_id: v for v in split_set.videos}
    label_of = {name: i for i, name in enumerate(split_set.labels)}
    order = sorted(located)
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    jobs = [(video_id, str(located[video_id]), short_side) for video_id in order]

    writer = ShardWriter(folder, _schema(split_set.splits))
    counts = {f"split{s}": Counter() for s in split_set.splits}
    skipped: list[tuple[str, str]] = []
    with closing(writer), Progress(len(jobs), label="prepare", unit="videos", enabled=progress) as meter:
        for done, (video_id, result) in enumerate(_encoded_stream(jobs, workers), start=1):
            if isinstance(result, EncodedVideo) and len(result.frames) < min_frames:
                result = f"{TOO_SHORT}: {len(result.frames)} frames, fewer than --min-frames {min_frames}"
            if isinstance(result, str):
                if strict:
                    raise VidfuseError(f"{video_id}: {result} (--strict)")
                skipped.append((video_id, result))
            else:
                video = by_id[video_id]
                row = {
                    "video_index": writer.written + len(writer.pending),
                    "video_id": video_id,
                    "label": label_of[video.label_name],
                    "label_name": video.label_name,
                    "n_frames": len(result.frames),
                    "height": result.height,
                    "width": result.width,
                    "frames": result.frames,
                }
                for split in split_set.splits:
                    row[f"split{split}"] = video.subsets.get(split, "unused")
                    counts[f"split{split}"][row[f"split{split}"]] += 1
                writer.add(row)
            meter.update(done)
        writer.flush()
    return writer.written, {k: dict(sorted(v.items())) for k, v in counts.items()}, skipped


def shard_paths(path: Path) -> list[Path]:
    """The Parquet shard files of a prepared data set, in order."""
    path = Path(path)
    if not (path / META_NAME).is_file():
        raise VidfuseError(f"not a prepared data set (no {META_NAME}): {path}")
    shards = sorted(path.glob("part-*.parquet"))
    if not shards:
        raise VidfuseError(f"prepared data set has no part-*.parquet shards: {path}")
    return shards


def read_meta(path: Path) -> dict:
    """The `_meta.json` of a prepared data set: dataset, labels (label order), splits, source, options, counts."""
    meta_file = Path(path) / META_NAME
    if not meta_file.is_file():
        raise VidfuseError(f"not a prepared data set (no {META_NAME}): {path}")
    meta = read_json(meta_file)
    counts = meta.get("counts")
    if not isinstance(meta.get("labels"), list) or not isinstance(counts, dict) or not all(
            isinstance(subsets, dict) for subsets in counts.values()):
        raise VidfuseError(f"{meta_file}: not the meta data `prepare` writes (a list `labels` and `counts` per split "
                           "and subset): prepare the data set again")
    return meta


def check_same_classes(data_path: str | os.PathLike, labels: Sequence[str]) -> None:
    """Raise unless the data set at `data_path` has the run's classes in the run's order: a data set prepared
    anew under the same path (or another one) would otherwise be scored against the wrong labels, silently."""
    data_labels = list(read_meta(Path(data_path))["labels"])
    pairs = list(itertools.zip_longest(data_labels, labels, fillvalue="(none)"))
    differing = next((i for i, (ours, theirs) in enumerate(pairs) if ours != theirs), None)
    if differing is not None:
        raise VidfuseError(
            f"{data_path} does not hold the classes the run was trained on ({len(data_labels)} classes against "
            f"{len(labels)}; class {differing} is {pairs[differing][0]!r} there, {pairs[differing][1]!r} in the run)")
