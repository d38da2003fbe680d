"""Split-file readers on the real UCF101, HMDB51 and Kinetics lists, and the honest val subset."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from vidfuse.data.splits import folder_splits, read_splits, ucf101_group
from vidfuse.errors import VidfuseError

UCF101_COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}  # train / test, from the data README


@pytest.fixture(scope="module")
def ucf101(shared_data):
    return read_splits("ucf101", shared_data / "splits" / "ucf101", val_fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def hmdb51(shared_data):
    return read_splits("hmdb51", shared_data / "splits" / "hmdb51", val_fraction=0.1, seed=0)


def test_ucf101_counts_labels_and_quirks(ucf101, shared_data):
    assert len(ucf101.labels) == 101
    assert ucf101.labels[0] == "ApplyEyeMakeup" and ucf101.labels[36] == "HandstandPushups"
    assert ucf101.labels[-1] == "YoYo" and not any(name.endswith("\r") for name in ucf101.labels)
    assert len(ucf101.videos) == 13320
    for split, (train, test) in UCF101_COUNTS.items():
        tally = ucf101.counts()[f"split{split}"]
        assert tally["train"] + tally["val"] == train and tally["test"] == test and tally["unused"] == 0
        assert 0 < tally["val"] < train / 4
    quirk = next(v for v in ucf101.videos if v.video_id == "v_HandStandPushups_g08_c01")
    assert quirk.label_name == "HandstandPushups" and quirk.folders == ("HandstandPushups",)


def test_ucf101_subsets_follow_the_official_lists(ucf101, shared_data):
    by_id = {v.video_id: v for v in ucf101.videos}
    for split in UCF101_COUNTS:
        for name, allowed in ((f"trainlist0{split}.txt", {"train", "val"}), (f"testlist0{split}.txt", {"test"})):
            lines = (shared_data / "splits" / "ucf101" / name).read_bytes().decode().split("\r\n")
            stems = [Path(line.split()[0]).stem for line in lines if line.strip()]
            assert {by_id[s].subsets[split] for s in stems} == allowed


def test_ucf101_val_is_whole_training_groups(ucf101):
    for split in UCF101_COUNTS:
        groups = defaultdict(set)  # subset -> {(class, group)}
        for video in ucf101.videos:
            groups[video.subsets[split]].add((video.label_name, ucf101_group(video.video_id)))
        assert groups["val"] and not groups["val"] & groups["train"] and not groups["val"] & groups["test"]
        val_numbers = {g for _, g in groups["val"]}
        assert {g for _, g in groups["test"]}.isdisjoint(val_numbers)
        # the same group numbers in every class
        assert all({g for c, g in groups["val"] if c == label} == val_numbers for label in ucf101.labels)


def test_hmdb51_counts_per_class_and_split(hmdb51):
    assert hmdb51.labels == sorted(hmdb51.labels) and len(hmdb51.labels) == 51
    assert hmdb51.labels[0] == "brush_hair" and len(hmdb51.videos) == 6766
    for split in (1, 2, 3):
        per_class = Counter((v.label_name, v.subsets[split]) for v in hmdb51.videos)
        for label in hmdb51.labels:
            assert per_class[(label, "train")] == 63 and per_class[(label, "val")] == 7  # 70 train, 10 % val
            assert per_class[(label, "test")] == 30
        tally = hmdb51.counts()[f"split{split}"]
        assert tally == {"train": 3213, "val": 357, "test": 1530, "unused": 1666}


def test_hmdb51_with_an_extra_class_in_split_2_is_an_error(shared_data, tmp_path):
    splits = tmp_path / "hmdb51"
    shutil.copytree(shared_data / "splits" / "hmdb51", splits)
    (splits / "extra_class_test_split2.txt").write_text("some_video.avi 1 \n")
    with pytest.raises(VidfuseError, match="split 2 has 52 classes"):
        read_splits("hmdb51", splits, val_fraction=0.1)


def test_missing_split_file_names_it(shared_data, tmp_path):
    splits = tmp_path / "ucf101"
    shutil.copytree(shared_data / "splits" / "ucf101", splits)
    (splits / "testlist02.txt").unlink()
    with pytest.raises(VidfuseError, match="testlist02.txt"):
        read_splits("ucf101", splits, val_fraction=0.1)


def test_kinetics_val_csv_is_the_test_set(shared_data):
    kinetics = read_splits("kinetics", shared_data / "splits" / "kinetics400" / "kinetics-400_val.csv",
                           val_fraction=0.1)
    label_map = (shared_data / "splits" / "kinetics400" / "label_map_k400.txt").read_text().split("\n")
    assert kinetics.labels == sorted(line.strip() for line in label_map if line.strip())
    assert len(kinetics.videos) == 19906 and kinetics.counts() == {
        "split1": {"train": 0, "val": 0, "test": 19906, "unused": 0}
    }
    first = next(v for v in kinetics.videos if v.video_id == "0wR5jVB-WPk_000417_000427")
    assert first.label_name == "abseiling"
    spaced = next(v for v in kinetics.videos if " " in v.label_name)
    assert spaced.folders == (spaced.label_name, spaced.label_name.replace(" ", "_"))


def test_kinetics_train_rows_give_a_per_class_val_fraction(tmp_path):
    csv = tmp_path / "train.csv"
    rows = [f"{label},vid{label}{i:03d},{i},{i + 10},train" for label in ("a b", "c") for i in range(20)]
    csv.write_text("label,youtube_id,time_start,time_end,split\n" + "\n".join(rows) + "\n")
    kinetics = read_splits("kinetics", csv, val_fraction=0.25, seed=3)
    per_class = Counter((v.label_name, v.subsets[1]) for v in kinetics.videos)
    assert per_class == {("a b", "train"): 15, ("a b", "val"): 5, ("c", "train"): 15, ("c", "val"): 5}


@pytest.mark.parametrize("row, message", [
    ("a,v1,abc,10,train", "line 3: time_start 'abc' and time_end '10' must be seconds"),
    ("a,v1,1e400,1e401,train", "line 3: time_start '1e400' and time_end '1e401' must be seconds"),
    ("a,v1", "line 3: fewer fields than the columns label, youtube_id, time_start, time_end, split"),
    ("a,v1,0,10,holdout", "line 3: unknown split 'holdout' for v1"),
])
def test_a_bad_kinetics_row_names_its_file_and_line(tmp_path, row, message):
    csv = tmp_path / "train.csv"
    csv.write_text(f"label,youtube_id,time_start,time_end,split\na,v0,0,10,train\n{row}\n")
    with pytest.raises(VidfuseError) as error:
        read_splits("kinetics", csv, val_fraction=0.1)
    assert str(error.value) == f"{csv}, {message}"


def test_split_files_that_are_not_utf8_name_the_file(shared_data, tmp_path):
    splits = tmp_path / "ucf101"
    shutil.copytree(shared_data / "splits" / "ucf101", splits)
    (splits / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 \xff\xfeBad\r\n")
    with pytest.raises(VidfuseError) as error:
        read_splits("ucf101", splits, val_fraction=0.1)
    assert str(error.value) == f"{splits / 'classInd.txt'}: not UTF-8 text (byte 20 is 0xff)"


def test_folder_split_is_stratified_and_seeded():
    entries = [(label, f"{label}_{i}") for label in ("jump", "run", "walk") for i in range(10)]
    first = folder_splits(entries, val_fraction=0.2, test_fraction=0.3, seed=1)
    per_class = Counter((v.label_name, v.subsets[1]) for v in first.videos)
    assert all(per_class[(label, "test")] == 3 and per_class[(label, "val")] == 1 for label in first.labels)
    same = folder_splits(entries, val_fraction=0.2, test_fraction=0.3, seed=1)
    other = folder_splits(entries, val_fraction=0.2, test_fraction=0.3, seed=2)
    assert [v.subsets for v in same.videos] == [v.subsets for v in first.videos]
    assert [v.subsets for v in other.videos] != [v.subsets for v in first.videos]
