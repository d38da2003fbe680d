"""Shared fixtures: one local Ray for the whole session, and a tiny synthetic data set prepared once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray (4 logical CPUs on this 2-core box: 2 Train workers plus Ray Data), shut down at the end."""
    import ray

    from vidfuse.engine.ray_runtime import start_local_ray

    if "RAY_AUTH_TOKEN_PATH" not in os.environ:  # a token file of our own: Ray 2.60 refuses a path with no file
        token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
        token.write_text(secrets.token_hex(32))
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    start_local_ray(4, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def torch_one_thread():
    """One intra-op thread for tiny CPU models: on the shared 2-core box, two OpenMP threads mostly spin-wait
    for each other (a resnet-10 step measured 20x slower). Restores the previous setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tiny synthetic motion data set (4 classes x 6 videos of 16 frames, 48 px, UCF101 layout) prepared once
    with `prepare_dataset` (short side 48). Split 1: 8 train, 8 val, 8 test videos. Attributes: `parquet`,
    `frames_root`, `splits_dir`, `labels`, `num_classes`."""
    from types import SimpleNamespace

    from vidfuse.data.prepare import prepare_dataset
    from vidfuse.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("tiny-dataset")
    synthetic = make_synthetic(root, num_classes=4, videos_per_class=6, n_frames=16, size=48, seed=0)
    parquet = root / "tiny.parquet"
    prepare_dataset(dataset="ucf101", splits=synthetic.splits_dir, frames=synthetic.frames_root, out=parquet,
                    short_side=48, workers=1, progress=False)
    return SimpleNamespace(parquet=parquet, frames_root=synthetic.frames_root, splits_dir=synthetic.splits_dir,
                           labels=synthetic.labels, num_classes=len(synthetic.labels))


@pytest.fixture
def damaged_dataset(tiny_dataset, tmp_path):
    """A function of a split-1 subset: a copy of the tiny data set whose videos of that subset hold bytes that are
    no JPEG instead of frames."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from vidfuse.data.prepare import shard_paths

    def damaged(subset: str) -> Path:
        out = tmp_path / f"damaged-{subset}.parquet"
        shutil.copytree(tiny_dataset.parquet, out)
        for shard in shard_paths(out):
            table = pq.read_table(shard)
            frames = [[b"not a jpeg"] * len(video) if video_subset == subset else video
                      for video, video_subset in zip(table["frames"].to_pylist(), table["split1"].to_pylist())]
            pq.write_table(table.set_column(table.schema.get_field_index("frames"), "frames",
                                            pa.array(frames, type=table.schema.field("frames").type)), shard)
        return out

    return damaged


@pytest.fixture
def failed_shard_read():
    """A function of a shard path and Ray's attempt count ("1/10"): Arrow's error for a page that does not parse,
    as Ray Data's reader annotates it when it gives up (`iterate_with_retry`)."""

    def error(shard: object, attempts: str) -> OSError:
        return OSError("Couldn't deserialize thrift: don't know what type: \nDeserializing page header failed.\n\n"
                       f"Failed to read fragment {shard} after {attempts} attempts (total backoff 0.0s).\n"
                       "To change retry attempts, backoff, or which errors are retried, configure ...")

    return error


@pytest.fixture
def shard_with_damaged_pages(tiny_dataset, tmp_path):
    """A copy of the tiny data set whose shards' `frames` pages start with bytes that are no page header: a copy
    damaged in the middle. Their footers and small columns still read, so `pipeline.video_table` takes them."""
    import shutil

    import pyarrow.parquet as pq

    from vidfuse.data.prepare import shard_paths

    out = tmp_path / "damaged-pages.parquet"
    shutil.copytree(tiny_dataset.parquet, out)
    for shard in shard_paths(out):
        metadata = pq.ParquetFile(shard).metadata
        offsets = [metadata.row_group(group).column(column).data_page_offset
                   for group in range(metadata.num_row_groups) for column in range(metadata.num_columns)
                   if metadata.row_group(group).column(column).path_in_schema.startswith("frames")]
        with open(shard, "r+b") as file:
            for offset in offsets:
                file.seek(offset)
                file.write(b"\xff" * 24)
    return out


@pytest.fixture
def ray_data_logged(ray_session):
    """A function giving what Ray Data's file handler in this process (the Ray session's ray-data.log) has written
    since the test began."""
    import ray._private.worker

    log_file = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "ray-data" / "ray-data.log"
    start = log_file.stat().st_size if log_file.exists() else 0

    def logged() -> str:
        with open(log_file, "rb") as f:
            f.seek(start)
            return f.read().decode()

    return logged


@pytest.fixture
def ray_data_console():
    """What Ray Data's console handler in this process writes during the test, as a StringIO (its stream is
    otherwise the stderr of pytest's start, which capsys does not see)."""
    import io
    import logging

    import ray.data  # noqa: F401  (configures the `ray.data` logger and its console handler)

    handler = next(h for h in logging.getLogger("ray.data").handlers if h.name == "console")
    stream = handler.setStream(io.StringIO())
    yield handler.stream
    handler.setStream(stream)
