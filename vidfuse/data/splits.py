"""Official split files -> one table of videos with a label and a subset per split.

Every reader returns a `SplitSet`: the class names in label order and, for each listed video, its class, the
folders it may sit in on disk, and its subset in each split (`train`, `val`, `test`, or `unused` for HMDB51's
code 0). The honest `val` subset is carved here out of the official *training* list, never out of the test
list: UCF101 by whole groups `gXX` (clips cut from one long video share a group, so they never straddle train
and val), HMDB51 / Kinetics / folder by a fixed fraction per class. Both choices are seeded, so they are fixed.

Formats:
- UCF101: `classInd.txt` (`N Class`), `trainlist0N.txt` (`Class/v_Class_gXX_cYY.avi N`), `testlist0N.txt`
  (no label); CRLF endings; the folder `HandstandPushups` holds files named `v_HandStandPushups_*`.
- HMDB51: `<class>_test_splitN.txt` with lines `video.avi C` (1 train, 2 test, 0 unused), trailing spaces;
  labels are the sorted class names, exactly 51 in every split.
- Kinetics: CSV `label,youtube_id,time_start,time_end,split[,is_cc]`; files
  `<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` with spaces or underscores in the folder name; labels sorted.
  The official `val` list serves as the test set (the test labels are not public); only split 1 exists.
- folder: `<root>/<class>/<video>` without split files (`folder_splits` gets the pairs found on disk); a
  stratified, seeded split by fraction (split 1 only).
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidfuse.errors import VidfuseError
from vidfuse.files import read_text

SUBSETS = ("train", "val", "test")
UNUSED = "unused"
UCF101_SPLITS = (1, 2, 3)
HMDB51_CLASSES = 51
HMDB51_CODES = {"0": UNUSED, "1": "train", "2": "test"}
KINETICS_SUBSETS = {"train": "train", "val": "test", "validate": "test", "test": "test"}
UCF101_GROUP = re.compile(r"_g(\d+)_c\d+$")


@dataclass(frozen=True)
class ListedVideo:
    """One video named by the split files."""

    video_id: str  # file name without extension, unique in the data set
    label_name: str
    folders: tuple[str, ...]  # class folder names it may sit in on disk, most likely first
    subsets: dict[int, str] = field(default_factory=dict)  # split number -> train / val / test / unused


@dataclass
class SplitSet:
    """The class list (in label order) and every listed video, sorted by video id."""

    dataset: str
    labels: list[str]
    videos: list[ListedVideo]

    @property
    def splits(self) -> list[int]:
        return sorted({s for v in self.videos for s in v.subsets})

    def counts(self) -> dict[str, dict[str, int]]:
        """`{"split1": {"train": n, "val": n, "test": n, "unused": n}, ...}` over the listed videos."""
        out: dict[str, dict[str, int]] = {}
        for split in self.splits:
            tally = {name: 0 for name in (*SUBSETS, UNUSED)}
            for video in self.videos:
                tally[video.subsets.get(split, UNUSED)] += 1
            out[f"split{split}"] = tally
        return out


def read_splits(dataset: str, splits: Path | None, *, val_fraction: float, seed: int = 0) -> SplitSet:
    """Read the split files of `dataset` (ucf101, hmdb51, kinetics) and carve `val` out of each training list."""
    readers = {"ucf101": read_ucf101, "hmdb51": read_hmdb51, "kinetics": read_kinetics}
    if dataset not in readers:
        raise VidfuseError(f"dataset {dataset!r} has no split files; choose one of: {', '.join(readers)}")
    check_fraction("val fraction", val_fraction, low_inclusive=True)
    if splits is None:
        raise VidfuseError(f"dataset {dataset} needs --splits")
    splits = Path(splits)
    if not splits.exists():
        raise VidfuseError(f"split files not found: {splits}")
    if dataset != "kinetics" and not splits.is_dir():
        raise VidfuseError(f"--splits {splits} is a file: {dataset} takes the folder that holds its split files")
    return readers[dataset](splits, val_fraction=val_fraction, seed=seed)


def check_fraction(name: str, value: float, *, low_inclusive: bool) -> None:
    """Raise unless `value` is in [0, 1) (`low_inclusive`) or (0, 1)."""
    if not (0 <= value < 1 if low_inclusive else 0 < value < 1):
        raise VidfuseError(f"{name} {value} must be in {'[' if low_inclusive else '('}0, 1)")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise VidfuseError(f"split file not found: {path}")
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_ucf101(splits_dir: Path, *, val_fraction: float, seed: int = 0) -> SplitSet:
    """UCF101 `classInd.txt` + `trainlist0N.txt` / `testlist0N.txt`; val = a seeded set of whole training groups."""
    class_file = splits_dir / "classInd.txt"
    labels = []
    for number, line in enumerate(_lines(class_file), start=1):
        parts = line.split()
        if len(parts) != 2 or parts[0] != str(number):
            raise VidfuseError(f"{class_file}: line {number} should be '{number} ClassName', got {line!r}")
        labels.append(parts[1])
    label_of = {name: i for i, name in enumerate(labels)}

    folders: dict[str, str] = {}
    subsets: dict[str, dict[int, str]] = defaultdict(dict)
    for split in UCF101_SPLITS:
        for subset, path in (("train", splits_dir / f"trainlist0{split}.txt"),
                             ("test", splits_dir / f"testlist0{split}.txt")):
            for line in _lines(path):
                rel, *rest = line.split()
                folder, _, file_name = rel.rpartition("/")
                if folder not in label_of:
                    raise VidfuseError(f"{path}: class {folder!r} of {rel} is not in {class_file}")
                if rest and rest[0] != str(label_of[folder] + 1):
                    raise VidfuseError(f"{path}: {rel} has label {rest[0]}, {class_file} says {label_of[folder] + 1}")
                video_id = Path(file_name).stem
                if split in subsets[video_id]:
                    raise VidfuseError(f"{path}: {rel} is listed twice in split {split}")
                folders[video_id] = folder
                subsets[video_id][split] = subset
    videos = [ListedVideo(v, folders[v], (folders[v],), subsets[v]) for v in sorted(subsets)]
    return SplitSet("ucf101", labels, carve_val_groups(videos, val_fraction=val_fraction, seed=seed))


def ucf101_group(video_id: str) -> int:
    """The group number XX of `v_Class_gXX_cYY`."""
    match = UCF101_GROUP.search(video_id)
    if match is None:
        raise VidfuseError(f"UCF101 video name {video_id!r} has no _gXX_cYY group suffix")
    return int(match.group(1))


def carve_val_groups(videos: list[ListedVideo], *, val_fraction: float, seed: int) -> list[ListedVideo]:
    """Per split, move a seeded set of whole training groups (the same group numbers in every class) to val."""
    rng = np.random.default_rng(seed)
    for split in sorted({s for v in videos for s in v.subsets}):
        train_groups = sorted({ucf101_group(v.video_id) for v in videos if v.subsets.get(split) == "train"})
        n_val = round(val_fraction * len(train_groups))
        if val_fraction > 0 and len(train_groups) > 1:
            n_val = min(max(n_val, 1), len(train_groups) - 1)
        val_groups = set(rng.choice(train_groups, size=n_val, replace=False).tolist()) if n_val else set()
        for video in videos:
            if video.subsets.get(split) == "train" and ucf101_group(video.video_id) in val_groups:
                video.subsets[split] = "val"
    return videos


def carve_val_fraction(videos: list[ListedVideo], *, val_fraction: float, seed: int) -> list[ListedVideo]:
    """Per split and class, move a seeded `val_fraction` of the training videos to val."""
    rng = np.random.default_rng(seed)
    for split in sorted({s for v in videos for s in v.subsets}):
        by_class: dict[str, list[ListedVideo]] = defaultdict(list)
        for video in videos:
            if video.subsets.get(split) == "train":
                by_class[video.label_name].append(video)
        for name in sorted(by_class):
            members = by_class[name]
            n_val = round(val_fraction * len(members))
            for i in rng.permutation(len(members))[:n_val]:
                members[i].subsets[split] = "val"
    return videos


def read_hmdb51(splits_dir: Path, *, val_fraction: float, seed: int = 0) -> SplitSet:
    """HMDB51 `<class>_test_splitN.txt` files; labels = sorted class names, exactly 51 in every split."""
    if not splits_dir.is_dir():
        raise VidfuseError(f"HMDB51 split folder not found: {splits_dir}")
    pattern = re.compile(r"^(.+)_test_split([123])\.txt$")
    classes_per_split: dict[int, set[str]] = defaultdict(set)
    files = []
    for path in sorted(splits_dir.iterdir()):
        match = pattern.match(path.name)
        if match:
            classes_per_split[int(match.group(2))].add(match.group(1))
            files.append((match.group(1), int(match.group(2)), path))
    for split in UCF101_SPLITS:
        found = classes_per_split.get(split, set())
        if len(found) != HMDB51_CLASSES:
            raise VidfuseError(
                f"{splits_dir}: split {split} has {len(found)} classes (files <class>_test_split{split}.txt), "
                f"HMDB51 has {HMDB51_CLASSES}"
            )
    labels = sorted(classes_per_split[1])
    if any(classes_per_split[s] != set(labels) for s in UCF101_SPLITS):
        raise VidfuseError(f"{splits_dir}: the three splits name different classes")

    class_of: dict[str, str] = {}
    subsets: dict[str, dict[int, str]] = defaultdict(dict)
    for name, split, path in files:
        for line in _lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in HMDB51_CODES:
                raise VidfuseError(f"{path}: expected 'video.avi 0|1|2', got {line!r}")
            video_id = Path(parts[0]).stem
            if class_of.setdefault(video_id, name) != name:
                raise VidfuseError(f"{path}: {parts[0]} is also listed under class {class_of[video_id]}")
            subsets[video_id][split] = HMDB51_CODES[parts[1]]
    videos = [ListedVideo(v, class_of[v], (class_of[v],), subsets[v]) for v in sorted(subsets)]
    return SplitSet("hmdb51", labels, carve_val_fraction(videos, val_fraction=val_fraction, seed=seed))


def kinetics_video_id(youtube_id: str, start: str, end: str) -> str:
    """`<youtube_id>_<start:06d>_<end:06d>`, the conventional clip file stem."""
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"


def read_kinetics(splits: Path, *, val_fraction: float, seed: int = 0) -> SplitSet:
    """Kinetics CSV file(s) (a file, or a folder of `*.csv`); official val -> test; only split 1."""
    paths = sorted(splits.glob("*.csv")) if splits.is_dir() else [splits]
    if not paths:
        raise VidfuseError(f"no Kinetics CSV files in {splits}")
    required = ("label", "youtube_id", "time_start", "time_end", "split")
    entries: dict[str, tuple[str, str]] = {}
    for path in paths:
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise VidfuseError(f"{path}: missing CSV column(s) {', '.join(missing)}")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if any(row[column] is None for column in required):
                raise VidfuseError(f"{where}: fewer fields than the columns {', '.join(required)}")
            subset = KINETICS_SUBSETS.get(row["split"].strip())
            if subset is None:
                raise VidfuseError(f"{where}: unknown split {row['split']!r} for {row['youtube_id']}")
            try:
                video_id = kinetics_video_id(row["youtube_id"], row["time_start"], row["time_end"])
            except (ValueError, OverflowError):
                raise VidfuseError(f"{where}: time_start {row['time_start']!r} and time_end {row['time_end']!r} "
                                   "must be seconds") from None
            entries[video_id] = (row["label"].strip(), subset)
    labels = sorted({label for label, _ in entries.values()})
    videos = [
        ListedVideo(v, label, (label, label.replace(" ", "_")), {1: subset})
        for v, (label, subset) in sorted(entries.items())
    ]
    return SplitSet("kinetics", labels, carve_val_fraction(videos, val_fraction=val_fraction, seed=seed))


DEFAULT_TEST_FRACTION = 0.3  # the folder data set's share of each class used as test


def folder_splits(
    entries: list[tuple[str, str]], *, val_fraction: float, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0
) -> SplitSet:
    """Split `(class, video)` pairs found on disk: per class a seeded `test_fraction` to test, the rest train."""
    check_fraction("val fraction", val_fraction, low_inclusive=True)
    check_fraction("test fraction", test_fraction, low_inclusive=False)
    by_class: dict[str, list[str]] = defaultdict(list)
    for label, video_id in entries:
        by_class[label].append(video_id)
    rng = np.random.default_rng(seed)
    videos = []
    for label in sorted(by_class):
        stems = sorted(by_class[label])
        test = set(rng.permutation(len(stems))[: round(test_fraction * len(stems))].tolist())
        videos += [ListedVideo(s, label, (label,), {1: "test" if i in test else "train"}) for i, s in enumerate(stems)]
    videos.sort(key=lambda v: v.video_id)
    return SplitSet("folder", sorted(by_class), carve_val_fraction(videos, val_fraction=val_fraction, seed=seed))
