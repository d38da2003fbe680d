"""`prepare` on the real UCF101 / HMDB51 clips with the real split files, skips, atomic output, the CLI."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vidfuse.cli import main
from vidfuse.data import prepare as prepare_module
from vidfuse.data.pipeline import video_table
from vidfuse.data.prepare import prepare_dataset, read_meta
from vidfuse.errors import VidfuseError


def _pyav_frame_count(path: Path) -> int:
    with av.open(str(path), metadata_errors="ignore") as container:
        return sum(1 for _ in container.decode(video=0))


def _rows(out: Path) -> dict[str, dict]:
    return {row["video_id"]: row for row in pq.read_table(out).to_pylist()}


def _list_stems(path: Path) -> set[str]:
    return {Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()}


@pytest.fixture(scope="module")
def ucf101_prepared(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ucf") / "ucf101.parquet"
    summary = prepare_dataset(dataset="ucf101", splits=shared_data / "splits" / "ucf101",
                              videos=shared_data / "clips" / "ucf101", out=out, workers=2, progress=False)
    return summary, out


def test_ucf101_clips_with_the_real_splits(ucf101_prepared, shared_data):
    summary, out = ucf101_prepared
    rows = _rows(out)
    clips = sorted((shared_data / "clips" / "ucf101").glob("*/*.avi"))
    assert summary.written == 4 and sorted(rows) == [p.stem for p in clips]
    assert len(summary.skipped) == 13320 - 4 and {r for _, r in summary.skipped} == {"missing on disk"}
    assert summary.unlisted == []
    classes = [line.split()[1] for line in (shared_data / "splits" / "ucf101" / "classInd.txt").read_text().split("\n")
               if line.strip()]
    splits = shared_data / "splits" / "ucf101"
    for clip in clips:
        row = rows[clip.stem]
        assert row["n_frames"] == _pyav_frame_count(clip) == len(row["frames"])
        assert row["label_name"] == clip.parent.name and row["label"] == classes.index(clip.parent.name)
        first = Image.open(io.BytesIO(row["frames"][0]))
        assert first.size == (row["width"], row["height"]) == (171, 128)  # 320x240 at short side 128
        for split in (1, 2, 3):
            if clip.stem in _list_stems(splits / f"testlist0{split}.txt"):
                assert row[f"split{split}"] == "test"
            else:
                assert clip.stem in _list_stems(splits / f"trainlist0{split}.txt")
                assert row[f"split{split}"] in ("train", "val")
    assert sorted(r["video_index"] for r in rows.values()) == [0, 1, 2, 3]
    meta = read_meta(out)
    assert meta["dataset"] == "ucf101" and meta["labels"] == classes and meta["videos"] == 4
    assert sum(meta["counts"]["split1"].values()) == 4


def test_hmdb51_clips_with_the_real_splits(shared_data, tmp_path):
    out = tmp_path / "hmdb51.parquet"
    summary = prepare_dataset(dataset="hmdb51", splits=shared_data / "splits" / "hmdb51",
                              videos=shared_data / "clips" / "hmdb51", out=out, workers=1, progress=False)
    rows = _rows(out)
    wave = sorted((shared_data / "clips" / "hmdb51" / "wave").glob("*.avi"))
    assert sorted(rows) == [p.stem for p in wave]
    for clip in wave:
        assert rows[clip.stem]["n_frames"] == _pyav_frame_count(clip)
        assert rows[clip.stem]["height"] == 128 and rows[clip.stem]["label_name"] == "wave"
        for split in (1, 2, 3):
            line = next(text for text in (shared_data / "splits" / "hmdb51" / f"wave_test_split{split}.txt")
                        .read_text().splitlines() if text.startswith(clip.name))
            expected = {"0": {"unused"}, "1": {"train", "val"}, "2": {"test"}}[line.split()[1]]
            assert rows[clip.stem][f"split{split}"] in expected
    # the torchvision copy of the cartwheel clip carries a prefix the official name lacks
    assert summary.unlisted == ["cartwheel/hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"]
    assert ("Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6", "missing on disk") in summary.skipped
    assert read_meta(out)["labels"][0] == "brush_hair"


def test_truncated_clip_is_skipped_with_a_reason(shared_data, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(shared_data / "clips" / "ucf101", videos)
    victim = videos / "Basketball" / "v_Basketball_g01_c01.avi"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    kwargs = dict(dataset="ucf101", splits=shared_data / "splits" / "ucf101", videos=videos, workers=1,
                  progress=False)
    summary = prepare_dataset(out=tmp_path / "out.parquet", **kwargs)
    reasons = dict(summary.skipped)
    assert summary.written == 3 and "v_Basketball_g01_c01" not in _rows(tmp_path / "out.parquet")
    assert reasons["v_Basketball_g01_c01"].startswith("does not decode")
    assert "v_Basketball_g01_c01.avi" in reasons["v_Basketball_g01_c01"]
    with pytest.raises(VidfuseError, match="--strict"):
        prepare_dataset(out=tmp_path / "strict.parquet", strict=True, **kwargs)
    assert not (tmp_path / "strict.parquet").exists()


def test_interrupted_run_leaves_nothing_under_the_final_name(tiny_dataset, tmp_path, monkeypatch):
    kwargs = dict(dataset="ucf101", splits=tiny_dataset.splits_dir, frames=tiny_dataset.frames_root,
                  short_side=32, workers=1, progress=False)
    real_encode, calls = prepare_module.encode_video, []

    def interrupt_after_20(path, short_side):
        calls.append(path)
        if len(calls) > 20:  # past the first row group, so a shard file exists in the temporary folder
            raise KeyboardInterrupt
        return real_encode(path, short_side)

    monkeypatch.setattr(prepare_module, "encode_video", interrupt_after_20)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(out=tmp_path / "fresh.parquet", **kwargs)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(prepare_module, "encode_video", real_encode)
    prepare_dataset(out=tmp_path / "old.parquet", **kwargs)
    before = sorted(p.read_bytes() for p in (tmp_path / "old.parquet").iterdir())
    calls.clear()
    monkeypatch.setattr(prepare_module, "encode_video", interrupt_after_20)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(out=tmp_path / "old.parquet", overwrite=True, **kwargs)
    assert sorted(p.read_bytes() for p in (tmp_path / "old.parquet").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["old.parquet"]


def test_frame_folders_round_trip(tiny_dataset):
    rows = _rows(tiny_dataset.parquet)
    assert len(rows) == 24 and sorted(r["video_index"] for r in rows.values()) == list(range(24))
    row = rows["v_MoveUp_g01_c01"]
    assert row["n_frames"] == 16 and (row["width"], row["height"]) == (48, 48)
    original = np.asarray(Image.open(tiny_dataset.frames_root / "MoveUp" / "v_MoveUp_g01_c01" / "image_00005.jpg"))
    stored = np.asarray(Image.open(io.BytesIO(row["frames"][4])))
    assert np.abs(original.astype(int) - stored).mean() < 3  # one more JPEG pass at quality 90
    assert read_meta(tiny_dataset.parquet)["labels"] == tiny_dataset.labels
    assert {r["split1"] for r in rows.values()} == {"train", "val", "test"}


def test_a_video_whose_frames_differ_in_size_is_skipped_with_a_reason(tiny_dataset, tmp_path):
    """A row has one height and width and a clip decodes into one array: a frame of another size would make a
    row that no epoch can decode. It is skipped, and `--strict` makes it an error."""
    frames = tmp_path / "frames"
    shutil.copytree(tiny_dataset.frames_root, frames)
    odd = frames / "MoveUp" / "v_MoveUp_g01_c01"
    Image.new("RGB", (100, 30), (90, 90, 90)).save(odd / "image_00005.jpg")
    kwargs = dict(dataset="ucf101", splits=tiny_dataset.splits_dir, frames=frames, short_side=48, workers=1,
                  progress=False)
    summary = prepare_dataset(out=tmp_path / "sizes.parquet", **kwargs)
    expected = (f"does not decode: {odd}: frame 5 is 160x48 pixels at short side 48, frame 1 48x48 (the frames of "
                "a video must have one size)")
    assert summary.skipped == [("v_MoveUp_g01_c01", expected)]
    assert "v_MoveUp_g01_c01" not in _rows(tmp_path / "sizes.parquet") and len(_rows(tmp_path / "sizes.parquet")) == 23
    with pytest.raises(VidfuseError, match="frame 5 is 160x48 pixels"):
        prepare_dataset(out=tmp_path / "strict.parquet", strict=True, **kwargs)


def test_frames_are_stored_plain_and_the_rest_compressed(tiny_dataset):
    shard = next(tiny_dataset.parquet.glob("part-*.parquet"))
    row_group = pq.ParquetFile(shard).metadata.row_group(0)
    codecs = {row_group.column(i).path_in_schema: row_group.column(i) for i in range(row_group.num_columns)}
    frames = codecs.pop("frames.list.element")
    assert frames.compression == "UNCOMPRESSED" and "RLE_DICTIONARY" not in frames.encodings
    assert {c.compression for c in codecs.values()} == {"SNAPPY"}


def test_bad_inputs_are_one_clear_error(tiny_dataset, tmp_path):
    base = dict(dataset="ucf101", splits=tiny_dataset.splits_dir, out=tmp_path / "x.parquet", progress=False,
                workers=1)
    with pytest.raises(VidfuseError, match="exactly one of --frames"):
        prepare_dataset(frames=tiny_dataset.frames_root, videos=tiny_dataset.frames_root, **base)
    with pytest.raises(VidfuseError, match="too short"):
        prepare_dataset(frames=tiny_dataset.frames_root, min_frames=17, **base)
    with pytest.raises(VidfuseError, match="nowhere"):
        prepare_dataset(frames=tmp_path / "nowhere", **base)
    with pytest.raises(VidfuseError, match="--workers -1 must be at least 1"):
        prepare_dataset(frames=tiny_dataset.frames_root, **{**base, "workers": -1})
    with pytest.raises(VidfuseError, match="--seed -1 must be at least 0"):
        prepare_dataset(frames=tiny_dataset.frames_root, seed=-1, **base)
    with pytest.raises(VidfuseError, match=r"classInd\.txt is a file: ucf101 takes the folder"):
        prepare_dataset(frames=tiny_dataset.frames_root, **{**base, "splits": tiny_dataset.splits_dir / "classInd.txt"})
    with pytest.raises(VidfuseError, match="frames root is not a folder"):
        prepare_dataset(frames=tiny_dataset.splits_dir / "classInd.txt", **base)
    with pytest.raises(VidfuseError, match="folder takes no --splits"):
        prepare_dataset(frames=tiny_dataset.frames_root, **{**base, "dataset": "folder"})
    with pytest.raises(VidfuseError, match=r"^--test-fraction \(0\.5\) is for --dataset folder only: ucf101's test "
                                           "lists are its split files$"):
        prepare_dataset(frames=tiny_dataset.frames_root, test_fraction=0.5, **base)
    with pytest.raises(VidfuseError, match=r"^--short-side 100000 is more than 1080 pixels"):
        prepare_dataset(frames=tiny_dataset.frames_root, short_side=100000, **base)
    with pytest.raises(VidfuseError, match="nowhere"):  # 1080 itself is allowed: the next check speaks
        prepare_dataset(frames=tmp_path / "nowhere", short_side=1080, **base)
    assert not (tmp_path / "x.parquet").exists()


def test_out_never_replaces_what_is_there_unasked(tiny_dataset, tmp_path):
    kwargs = dict(dataset="ucf101", splits=tiny_dataset.splits_dir, frames=tiny_dataset.frames_root, short_side=32,
                  workers=1, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("mine")
    for taken in (tmp_path / "notes.txt", tmp_path / "folder"):
        for overwrite in (False, True):  # not a data set: never replaced
            with pytest.raises(VidfuseError, match="exists and is not a vidfuse data set"):
                prepare_dataset(out=taken, overwrite=overwrite, **kwargs)
    assert (tmp_path / "notes.txt").read_text() == (tmp_path / "folder" / "keep.txt").read_text() == "mine"

    prepare_dataset(out=tmp_path / "data.parquet", **kwargs)
    meta = read_meta(tmp_path / "data.parquet")
    with pytest.raises(VidfuseError, match="already holds a data set: pass --overwrite"):
        prepare_dataset(out=tmp_path / "data.parquet", **{**kwargs, "seed": 1})
    assert read_meta(tmp_path / "data.parquet") == meta
    prepare_dataset(out=tmp_path / "data.parquet", overwrite=True, **{**kwargs, "seed": 1})
    assert read_meta(tmp_path / "data.parquet")["options"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "folder", "notes.txt"]

    (tmp_path / "data.parquet" / "NOTES.txt").write_text("mine")  # a file of the user's inside the data set
    (tmp_path / "link.parquet").symlink_to(tmp_path / "data.parquet")
    with pytest.raises(VidfuseError, match="holds NOTES.txt, which prepare did not write"):
        prepare_dataset(out=tmp_path / "data.parquet", overwrite=True, **kwargs)
    with pytest.raises(VidfuseError, match="link.parquet is a symbolic link"):
        prepare_dataset(out=tmp_path / "link.parquet", overwrite=True, **kwargs)
    assert (tmp_path / "data.parquet" / "NOTES.txt").read_text() == "mine"
    assert read_meta(tmp_path / "data.parquet")["options"]["seed"] == 1
    (tmp_path / "data.parquet" / "NOTES.txt").unlink()
    (tmp_path / "data.parquet" / "part-99999.parquet").mkdir()  # a folder of the user's, named like a shard
    (tmp_path / "data.parquet" / "part-99999.parquet" / "keep.txt").write_text("mine")
    with pytest.raises(VidfuseError, match="holds part-99999.parquet, which prepare did not write"):
        prepare_dataset(out=tmp_path / "data.parquet", overwrite=True, **kwargs)
    assert (tmp_path / "data.parquet" / "part-99999.parquet" / "keep.txt").read_text() == "mine"


def test_cli_prepare(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    args = ["prepare", "--dataset", "ucf101", "--frames", str(tiny_dataset.frames_root), "--out", str(out),
            "--short-side", "32", "--workers", "1"]
    assert main([*args, "--splits", str(tiny_dataset.splits_dir)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 24 videos" in printed and len(_rows(out)) == 24 and "warning" not in printed
    assert main([*args, "--splits", str(tiny_dataset.splits_dir), "--overwrite", "--val-fraction", "0"]) == 0
    assert "warning: split1 has no val videos" in capsys.readouterr().out
    with pytest.raises(VidfuseError, match=r"split 1 has no val videos \(prepare it again with a larger "
                                           r"--val-fraction, or .*--set data.val_from_test=true\)$"):
        video_table(out, split=1, subset="val")
    assert main([*args, "--splits", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
