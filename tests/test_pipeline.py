"""The Ray Data clip pipeline on the tiny synthetic set: shapes, coverage of test windows, per-epoch draws."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vidfuse.data.pipeline import (
    DECODE_ON,
    DECODER_ENV_VARS,
    FOOTER_READERS_ENV,
    VIDEO_COLUMNS,
    StoredFrames,
    clip_dataset,
    decode_clips,
    decode_frames,
    draft_reduction,
    eval_clips,
    pick_window_jpegs,
    video_table,
)
from vidfuse.data.prepare import shard_paths
from vidfuse.data.transforms import Augment
from vidfuse.data.worker_decode import clip_collate, decode_windows
from vidfuse.errors import VidfuseError

T, S = 8, 32  # clip length and crop size; the tiny videos have 16 frames of 48 x 48


def _collect(ds) -> dict[str, np.ndarray]:
    """One execution of `ds` as numpy columns (keeps the dtypes that `take_all` would turn into Python ints)."""
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _by_key(columns: dict[str, np.ndarray]) -> dict[tuple[int, int], dict]:
    """`(video_index, clip_index) -> row`, asserting that no clip arrives twice."""
    keys = list(zip(columns["video_index"].tolist(), columns["clip_index"].tolist()))
    assert max(Counter(keys).values()) == 1, "a clip arrived twice"
    return {key: {name: values[i] for name, values in columns.items()} for i, key in enumerate(keys)}


def test_video_table_lists_the_subset_sorted(tiny_dataset):
    table = video_table(tiny_dataset.parquet, split=1, subset="test")
    assert len(table) == 8 and [r["video_index"] for r in table] == sorted(r["video_index"] for r in table)
    assert all(tiny_dataset.labels[r["label"]] == r["label_name"] and r["n_frames"] == 16 for r in table)
    assert all(int(r["video_id"].split("_g")[1][:2]) % 3 == 1 for r in table)  # split 1 tests groups 1, 4, ..


def test_test_mode_yields_every_window_of_every_video_once(tiny_dataset, ray_session):
    stride = 2
    videos = video_table(tiny_dataset.parquet, split=1, subset="test")
    columns = _collect(clip_dataset(tiny_dataset.parquet, split=1, subset="test", mode="test", sample_duration=3,
                                    sample_size=S, sample_stride=stride))
    clips = _by_key(columns)
    expected = {(v["video_index"], i) for v in videos for i in range(math.ceil(v["n_frames"] / (3 * stride)))}
    assert set(clips) == expected  # 16 frames, span 6 -> 3 windows per video
    assert columns["clip"].shape == (len(expected), 3, S, S, 3) and columns["clip"].dtype == np.uint8
    assert {columns[k].dtype for k in ("label", "video_index", "clip_index")} == {np.dtype(np.int64)}
    labels = {v["video_index"]: v["label"] for v in videos}
    assert all(row["label"] == labels[key[0]] for key, row in clips.items())

    # the same clips as `eval_clips` (predict's path) makes from the stored frames
    stored = {r["video_index"]: r["frames"] for r in pq.read_table(tiny_dataset.parquet).to_pylist()}
    index = videos[0]["video_index"]
    frames = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in stored[index]]
    reference, starts = eval_clips(frames, sample_duration=3, sample_size=S, short_side=48, sample_stride=stride)
    assert starts == [0, 6, 12]
    for i, clip in enumerate(reference):
        np.testing.assert_array_equal(clips[(index, i)]["clip"], clip)


def test_val_mode_gives_n_evenly_spaced_clips(tiny_dataset, ray_session):
    columns = _collect(clip_dataset(tiny_dataset.parquet, split=1, subset="val", mode="val", sample_duration=T,
                                    sample_size=S, n_val_clips=3))
    videos = video_table(tiny_dataset.parquet, split=1, subset="val")
    assert set(_by_key(columns)) == {(v["video_index"], i) for v in videos for i in range(3)}


def test_train_mode_draws_new_windows_and_crops_every_epoch(tiny_dataset, ray_session):
    ds = clip_dataset(tiny_dataset.parquet, split=1, subset="train", mode="train", sample_duration=T,
                      sample_size=S, seed=0)
    videos = {v["video_index"] for v in video_table(tiny_dataset.parquet, split=1, subset="train")}
    epochs = [_by_key(_collect(ds)) for _ in range(2)]
    for epoch in epochs:
        assert set(epoch) == {(v, 0) for v in videos}  # one clip per training video per epoch
        assert all(r["clip"].shape == (T, S, S, 3) for r in epoch.values())
    changed = [not np.array_equal(epochs[0][k]["clip"], epochs[1][k]["clip"]) for k in epochs[0]]
    assert sum(changed) >= len(changed) - 1
    # read, draw and decode ran as one fused task: whole videos never went through the object store
    assert re.search(r"ReadFiles\w*->Project->MapBatches\(decode_clips\)", ds.stats())


@pytest.mark.parametrize("mode, subset, size", [("val", "val", S), ("train", "train", S), ("train", "train", 16)])
def test_worker_decode_gives_the_decoders_clips(tiny_dataset, ray_session, mode, subset, size):
    """decode_on="worker": rows carry each window's JPEGs and crop; decoding them where they are consumed (here on
    the CPU) gives exactly the clips the decoders make, random crops and flips included, and at size 16 the draft
    decodes at half size (48 // 2 >= 16 / scale) of the larger crops too."""
    options = dict(split=1, subset=subset, mode=mode, sample_duration=T, sample_size=size, seed=5)
    decoded = _by_key(_collect(clip_dataset(tiny_dataset.parquet, **options)))
    batches = list(clip_dataset(tiny_dataset.parquet, decode_on="worker", **options).iter_batches(
        batch_size=None, batch_format="numpy"))
    assert set(batches[0]) == {"jpegs", "crop_scale", "crop_position", "crop_flip", "video_id", "first_frame",
                               "last_frame", "label", "video_index", "clip_index"}
    picked = {}
    for batch in batches:
        assert all(len(window) == T for window in batch["jpegs"])
        clips = decode_windows(batch, size=size, device="cpu")
        assert clips.shape == (len(batch["jpegs"]), T, size, size, 3) and clips.dtype == torch.uint8
        picked.update(zip(zip(batch["video_index"].tolist(), batch["clip_index"].tolist()), clips.numpy()))
    assert set(picked) == set(decoded)
    for key, row in decoded.items():
        np.testing.assert_array_equal(picked[key], row["clip"])
    crops = {(s, p, f) for b in batches for s, p, f in zip(b["crop_scale"], b["crop_position"], b["crop_flip"])}
    assert len(crops) > 2 if mode == "train" else crops == {(1.0, "centre", False)}
    assert clip_collate("decoders", size=S, device="cpu") is None


def test_bad_requests_name_the_problem(tiny_dataset):
    with pytest.raises(VidfuseError, match="no split 4"):
        clip_dataset(tiny_dataset.parquet, split=4, subset="train", mode="train", sample_duration=T, sample_size=S)
    with pytest.raises(VidfuseError, match="subset 'bogus'"):
        video_table(tiny_dataset.parquet, split=1, subset="bogus")
    with pytest.raises(VidfuseError, match="decode_on 'gpu'"):
        clip_dataset(tiny_dataset.parquet, split=1, subset="test", mode="test", sample_duration=T, sample_size=S,
                     decode_on="gpu")
    with pytest.raises(VidfuseError, match="sampling mode"):
        clip_dataset(tiny_dataset.parquet, split=1, subset="test", mode="eval", sample_duration=T, sample_size=S)
    with pytest.raises(VidfuseError, match="not a prepared data set"):
        video_table(tiny_dataset.parquet.parent, split=1, subset="test")


def test_decode_frames_matches_pillow_and_decodes_small_when_the_crop_allows(shared_data):
    import av

    with av.open(str(shared_data / "clips/ucf101/Basketball/v_Basketball_g01_c01.avi")) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")  # (240, 320, 3)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()

    def pillow(draft: tuple[int, int] | None = None) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        if draft:
            image.draft("RGB", draft)
        return np.asarray(image.convert("RGB"))

    full = decode_frames([data, pa.py_buffer(data)])  # from bytes or Arrow buffers
    assert full.shape == (2, 240, 320, 3) and full.dtype == torch.uint8
    assert np.abs(full[0].numpy().astype(int) - pillow()).mean() < 1.0  # two libjpeg builds, same image
    assert torch.equal(full[0], full[1])
    halves = decode_frames([data, data], min_short_side=120)  # a draft decode at half size
    assert halves.shape == (2, 120, 160, 3)
    assert decode_frames([data], min_short_side=121).shape == (1, 240, 320, 3)  # half size would be too small
    assert np.abs(halves[0].numpy().astype(int) - pillow(draft=(160, 120))).mean() < 1.0
    assert [draft_reduction(240, m) for m in (200, 120, 112, 60, 30, 20)] == [1, 2, 2, 4, 8, 8]
    buffer = io.BytesIO()
    Image.fromarray(rgb[:200]).save(buffer, format="JPEG")
    with pytest.raises(ValueError, match="a frame of 320x200 pixels among frames of 320x240"):
        decode_frames([data, buffer.getvalue()])


@pytest.mark.parametrize("binary", [pa.binary(), pa.large_binary()])
def test_stored_frames_slices_each_jpeg_out_of_the_arrow_buffer(binary):
    videos = [[b"a", b"bb", b"ccc"], [b"dddd"], [b"e" * 5, b"", b"ffffff"]]
    column = pa.array(videos, type=pa.list_(binary))
    for start in (0, 1):  # a sliced column (as Ray's blocks are) starts inside the offsets and data buffers
        stored = StoredFrames(column.slice(start))
        for row, frames in enumerate(videos[start:]):
            picked = [len(frames) - 1, 0]
            assert [stored.jpegs(row, [i])[0].to_pybytes() for i in picked] == [frames[i] for i in picked]


def test_decoder_tasks_run_arrow_on_one_thread(tiny_dataset, ray_session):
    """The Parquet read fused into a decoder task sizes Arrow's pools from the job's DECODER_ENV_VARS."""
    import ray

    def arrow_threads(block: pa.Table) -> dict[str, list[int]]:
        return {"cpu": [pa.cpu_count()], "io": [pa.io_thread_count()]}

    pools = ray.data.read_parquet([str(p) for p in shard_paths(tiny_dataset.parquet)]).map_batches(
        arrow_threads, batch_size=None, batch_format="pyarrow").take_all()
    expected = (int(DECODER_ENV_VARS["RAY_DATA_PARQUET_READER_CPU_COUNT"]),
                int(DECODER_ENV_VARS["RAY_DATA_PARQUET_READER_IO_THREAD_COUNT"]))
    assert pools and {(row["cpu"], row["io"]) for row in pools} == {expected} == {(1, 1)}


def test_each_execution_lists_files_with_one_footer_reader(tiny_dataset, ray_session, monkeypatch):
    """Ray's V2 Parquet reader would start 32 footer-reading actors (processes) per execution, that is per epoch;
    clip_dataset asks for one, and leaves the environment as it found it."""
    from ray.util.state import list_actors

    name, _ = FOOTER_READERS_ENV
    monkeypatch.delenv(name, raising=False)

    def footer_readers() -> int:
        return len(list_actors(filters=[("class_name", "=", "FooterReader")], limit=10_000))

    before = footer_readers()
    ds = clip_dataset(tiny_dataset.parquet, split=1, subset="val", mode="val", sample_duration=T, sample_size=S)
    assert name not in os.environ
    for _ in range(2):
        _collect(ds)
    assert footer_readers() - before == 2


def test_ray_datas_executor_unpickles_the_clip_pipeline_without_importing_torch(tiny_dataset, ray_session, tmp_path):
    """Each run's Ray Data executor is a new process that unpickles the dataset's plan (see ray_tasks): in a fresh
    interpreter, the plans of train and val datasets, decoded either way, load without torch, torchvision or
    `pipeline`; and the augmentation's settings still reach the map (no scale but 1, no flip)."""
    import ray.cloudpickle

    script = ("import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read()); "
              "print(*sorted({'torch', 'torchvision', 'vidfuse.data.pipeline'} & set(sys.modules)))")
    options = dict(split=1, sample_duration=T, sample_size=S, augment=Augment(min_crop_scale=1.0, hflip=False))
    for decode_on in DECODE_ON:
        for mode in ("train", "val"):
            ds = clip_dataset(tiny_dataset.parquet, subset=mode, mode=mode, decode_on=decode_on, **options)
            plan = tmp_path / f"{mode}-{decode_on}.pkl"
            plan.write_bytes(ray.cloudpickle.dumps(ds))
            loaded = subprocess.run([sys.executable, "-c", script, str(plan)], capture_output=True, text=True,
                                    timeout=120)
            assert (loaded.returncode, loaded.stdout.strip()) == (0, ""), loaded.stdout + loaded.stderr[-2000:]
    train = clip_dataset(tiny_dataset.parquet, subset="train", mode="train", decode_on="worker", **options)
    crops = {(s, f) for b in train.iter_batches(batch_size=None, batch_format="numpy")
             for s, f in zip(b["crop_scale"], b["crop_flip"])}
    assert crops == {(1.0, False)}


def test_a_decoders_batches_hold_at_most_clips_per_batch_clips_whatever_the_video_length(tiny_dataset):
    """Test mode makes every window of a video (hundreds for a long one), so a decoder's batches are counted in
    clips, not videos: a video's windows continue into the next batch, in order, with nothing lost or repeated;
    `decode_on: worker`'s window rows are batched the same way."""
    table = pq.read_table(shard_paths(tiny_dataset.parquet), columns=[*VIDEO_COLUMNS, "split1"])
    options = dict(split_column="split1", subset="test", mode="test", sample_duration=3, sample_stride=1,
                   n_val_clips=1, augment=Augment())
    videos = video_table(tiny_dataset.parquet, split=1, subset="test")
    n_clips = sum(math.ceil(v["n_frames"] / 3) for v in videos)  # 8 videos of 16 frames: 6 windows each
    assert n_clips == 48
    batches = list(decode_clips(table, sample_size=S, clips_per_batch=5, **options))
    assert [len(batch["clip"]) for batch in batches] == [5] * 9 + [3]
    whole = list(decode_clips(table, sample_size=S, clips_per_batch=n_clips, **options))
    assert len(whole) == 1
    for key in ("clip", "label", "video_index", "clip_index"):
        np.testing.assert_array_equal(np.concatenate([batch[key] for batch in batches]), whole[0][key])
    keys = list(zip(whole[0]["video_index"], whole[0]["clip_index"]))
    assert sorted(keys) == sorted((v["video_index"], i) for v in videos for i in range(6))
    picked = list(pick_window_jpegs(table, clips_per_batch=5, **options))
    assert [batch.num_rows for batch in picked] == [5] * 9 + [3]
    assert [(v, c) for batch in picked for v, c in zip(batch["video_index"].to_pylist(),
                                                        batch["clip_index"].to_pylist())] == keys


def test_a_frame_that_does_not_decode_names_its_video(tiny_dataset):
    """A damaged data set: the decoders' error names the video and its frames, not libjpeg's words alone; so does
    `decode_on: worker`'s, whose batched decode of several videos' windows fails as a whole."""
    table = pq.read_table(shard_paths(tiny_dataset.parquet), columns=[*VIDEO_COLUMNS, "split1"])
    table = table.filter(pa.compute.equal(table["split1"], "test")).sort_by("video_index")
    frames = table["frames"].to_pylist()
    frames[1] = [b"not a jpeg"] * len(frames[1])
    damaged = table.set_column(table.schema.get_field_index("frames"), "frames",
                               pa.array(frames, type=table.schema.field("frames").type))
    options = dict(sample_size=S, clips_per_batch=8, split_column="split1", subset="test", mode="test",
                   sample_duration=T, sample_stride=1, n_val_clips=1, augment=Augment())
    assert sum(len(batch["clip"]) for batch in decode_clips(table, **options)) == 2 * len(frames)  # 16 frames: 2
    expected = f"video {table['video_id'][1].as_py()}: one of its frames 1-8 does not decode (Could not determine " \
               "subsampling level of JPEG image): the data set is damaged; prepare it again"
    with pytest.raises(VidfuseError) as error:
        list(decode_clips(damaged, **options))
    assert str(error.value) == expected
    # decode_on: worker names it the same way, from the window rows it decodes
    picking = {**{k: v for k, v in options.items() if k != "sample_size"}, "clips_per_batch": 2}
    for batch in pick_window_jpegs(damaged, **picking):
        rows = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.column_names}
        if table["video_index"][1].as_py() in rows["video_index"]:
            with pytest.raises(VidfuseError) as error:
                decode_windows(rows, size=S, device="cpu")
            assert str(error.value) == expected
        else:
            assert decode_windows(rows, size=S, device="cpu").shape[0] == len(rows["jpegs"])


def test_a_shard_cut_short_is_a_damaged_data_set_named_in_one_line(tiny_dataset, tmp_path, capsys):
    """A shard whose copy was cut short (or a file overwritten) is found when `train` checks the data set, before
    Ray starts: one line that names the shard, exit status 2."""
    import shutil

    from vidfuse.cli import main

    data = tmp_path / "cut.parquet"
    shutil.copytree(tiny_dataset.parquet, data)
    shard = shard_paths(data)[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    expected = (f"{shard}: not a readable Parquet shard (Parquet magic bytes not found in footer. Either the file is "
                "corrupted or this is not a parquet file.): the data set is damaged; prepare it again")
    with pytest.raises(VidfuseError) as error:
        video_table(data, split=1, subset="test")
    assert str(error.value) == expected
    assert main(["train", "--data", str(data), "--storage", str(tmp_path), "--name", "cut"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"vidfuse: error: {expected}"]
    assert not (tmp_path / "cut").exists()


def test_a_damaged_meta_json_is_one_line_naming_it(tiny_dataset, tmp_path, capsys):
    import shutil

    from vidfuse.cli import main
    from vidfuse.data.prepare import META_NAME

    data = tmp_path / "meta.parquet"
    shutil.copytree(tiny_dataset.parquet, data)
    (data / META_NAME).write_text('{"dataset": "ucf101",')
    assert main(["train", "--data", str(data), "--storage", str(tmp_path), "--name", "meta"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"vidfuse: error: {data / META_NAME}: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 22 (char 21))"]
    for meta in ('[]', '{}', '{"labels": null, "counts": {}}', '{"labels": ["a"], "counts": {"split1": [1, 2]}}'):
        (data / META_NAME).write_text(meta)
        assert main(["train", "--data", str(data), "--storage", str(tmp_path), "--name", "meta"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"vidfuse: error: {data / META_NAME}: not "), (meta, err)


def test_meta_labels_that_do_not_match_the_shards_are_a_damaged_data_set(tiny_dataset, tmp_path, capsys):
    """`_meta.json`'s label list cut short (a label in the shards past its end: training would fail deep in a
    worker) or reordered (scores against the wrong names) is found before Ray starts: one line, exit status 2."""
    import shutil

    from vidfuse.cli import main
    from vidfuse.data.prepare import META_NAME, read_meta

    labels = read_meta(tiny_dataset.parquet)["labels"]
    first_test = video_table(tiny_dataset.parquet, split=1, subset="test")[0]
    for name, damaged_labels in (("cut", labels[:1]), ("reordered", labels[::-1])):
        data = tmp_path / f"{name}.parquet"
        shutil.copytree(tiny_dataset.parquet, data)
        meta = json.loads((data / META_NAME).read_text())
        (data / META_NAME).write_text(json.dumps({**meta, "labels": damaged_labels}))
        with pytest.raises(VidfuseError) as error:
            video_table(data, split=1, subset="test")
        assert str(error.value).startswith(f"{data / META_NAME}: its labels do not match the shards' (video ")
        assert str(error.value).endswith("the data set is damaged; prepare it again")
        assert main(["train", "--data", str(data), "--storage", str(tmp_path), "--name", name]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"vidfuse: error: {data / META_NAME}: its labels do not match")
        assert not (tmp_path / name).exists()
    assert str(error.value) == (  # reordered: the first test video's class has another name in the list
        f"{data / META_NAME}: its labels do not match the shards' (video {first_test['video_id']} has label "
        f"{first_test['label']}, {first_test['label_name']!r}; the list names "
        f"{labels[::-1][first_test['label']]!r}): the data set is damaged; prepare it again")
