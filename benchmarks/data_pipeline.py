"""Train-clip throughput: the Ray Data pipeline vs a naive per-frame PIL loader vs the JPEG decode limit.

All cases make 16 x 112 x 112 train clips (random window, multi-scale corner crop, flip) from the 4 real UCF101
clips in ../shared/data/clips (320 x 240):
- naive:        the 3D-ResNets-PyTorch loader: per frame `PIL.Image.open` from a frame folder (320 x 240 JPEGs),
                full decode, crop, resize, flip; one process (1 core);
- decode_limit: only decoding the 16 JPEGs of a random window from the prepared Parquet rows (short side 128)
                with the pipeline's own decoder (`pipeline.decode_frames`: simplejpeg), in memory, one process
                (1 core): no loader can beat this per core;
- decode_torchvision: the same with torchvision's `decode_jpeg` (one call for the window's list), the decoder
                the pipeline used before simplejpeg: what the dependency buys;
- decode_and_crop: the decode limit plus the one crop + resize (+ flip) per clip (`transforms.crop_clip`), nothing
                else: the most any pipeline that decodes whole frames and crops on the CPU can make per core
                (decoding only the crop's rows and MCU columns, libjpeg-turbo's `jpeg_crop_scanline` +
                `jpeg_skip_scanlines`, measured in C on these 171 x 128 frames over the five crop scales: 0.82 of a
                whole frame's time, as the entropy decoding of every block above and beside the crop remains; no
                binding that pip alone installs exposes it);
- in_memory:    `decode_clips` on row groups already read into memory, one process (1 core): the decode limit
                plus the pipeline's own planning, crop, resize and flip, without the Parquet read;
- plain_loop:   the pipeline's own work without Ray: pyarrow reads whole row groups of the replicated Parquet
                (the columns the pipeline reads, memory-mapped as it reads them) and `decode_clips` makes the
                clips, one process (1 core); Ray Data's rate over this one is the cost of the Ray Data layer itself;
- ray_data:     `clip_dataset(mode="train")` from Parquet (short side 128) with 1 and with all-cores decoders,
                consumed with `iter_torch_batches`; first-batch latency (per epoch = per execution) is reported
                apart from the steady-state rate (between the batches at 30 % and 90 % of an epoch; the median
                of the epochs, each also printed: the first one's is lower as processes start meanwhile). Its cores:
                the decoders, or the cores Ray's worker processes were measured busy in that window if more
                (Arrow's read threads can add to a decoder's core); and those processes' CPU ms per clip in that
                window (`worker_cpu_ms_per_clip`). The final line's `ray_layer_cpu_ms_per_clip` is the 1-decoder
                figure less the plain loop's: the CPU that the Ray Data layer adds to each clip;
- decode_on: worker: `worker_decode_cpu` is the Train worker's share on a CPU, decoding + cropping batches of
                window rows in memory (one thread; nvjpeg on a GPU: benchmarks/gpu_paths.py --windows);
                `worker_mode_1_picker` is the Ray Data share, one task reading rows and picking the windows' JPEGs.
                They are not in the ratios, which are about the CPU decoders.
The prepared rows are replicated (`--copies`, default 800: 3,200 videos, ~1 MB each) so that an epoch lasts long
enough to have a steady state. With 800 videos the "steady" rate came out ~25 % too high: the clips decoded while
the first batch was awaited were still being handed out between 30 % and 90 % of the epoch.
Each case prints one JSON line; a final line gives the per-core ratios. Plain-loop cases report the median
of `--repeats` runs (plain_loop: of 4 x `--clips` clips, so that it spans several row groups).
Run: `.venv/bin/python benchmarks/data_pipeline.py` (starts its own `ray.init`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from vidfuse.data.pipeline import (
    CLIPS_PER_BATCH,
    DECODER_ENV_VARS,
    DRAW,
    VIDEO_COLUMNS,
    clip_dataset,
    decode_clips,
    decode_frames,
    pick_window_jpegs,
)
from vidfuse.data.prepare import META_NAME, ROW_GROUP_VIDEOS, prepare_dataset, read_meta, writer_options
from vidfuse.data.sampling import random_start, window_indices
from vidfuse.data.transforms import Augment, crop_clip, random_crop
from vidfuse.data.worker_decode import decode_windows

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips" / "ucf101"
DURATION, SIZE, SHORT_SIDE = 16, 112, 128


def write_frame_folders(clips: Path, root: Path) -> list[Path]:
    """Decode each real clip into `<root>/<Class>/<video>/image_00001.jpg` (the frame-folder layout)."""
    folders = []
    for video in sorted(clips.glob("*/*.avi")):
        folder = root / video.parent.name / video.stem
        folder.mkdir(parents=True)
        with av.open(str(video), metadata_errors="ignore") as container:
            for i, frame in enumerate(container.decode(video=0), start=1):
                frame.to_image().save(folder / f"image_{i:05d}.jpg", quality=90)
        folders.append(folder)
    return folders


def replicate(prepared: Path, out: Path, copies: int, shards: int = 4) -> None:
    """A data set of `shards` shards (hard links of one file) holding `copies` copies of `prepared`'s rows
    (all train in split 1), written as `prepare` writes them: a long epoch, cheaply."""
    table = pq.read_table(prepared)
    out.mkdir()
    pq.write_table(pa.concat_tables([table] * (copies // shards)), out / "part-00000.parquet",
                   row_group_size=ROW_GROUP_VIDEOS, **writer_options(table.schema))
    for shard in range(1, shards):
        os.link(out / "part-00000.parquet", out / f"part-{shard:05d}.parquet")
    meta = read_meta(prepared)
    meta["counts"] = {"split1": {"train": table.num_rows * (copies // shards) * shards}}
    (out / META_NAME).write_text(json.dumps(meta))


def naive_clip(folder: Path, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """3D-ResNets-PyTorch style: per frame open + full decode, crop, resize, flip."""
    crop = random_crop(rng)
    indices = window_indices(random_start(n_frames, DURATION, rng), n_frames, duration=DURATION)
    frames = []
    for i in indices:
        image = Image.open(folder / f"image_{i + 1:05d}.jpg").convert("RGB")
        top, left, side = crop.box(*image.size)
        image = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BILINEAR)
        if crop.flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        frames.append(np.asarray(image))
    return np.stack(frames)


def random_window(jpegs: list[bytes], rng: np.random.Generator) -> list[bytes]:
    """The JPEGs of one random train window of a video."""
    return [jpegs[i] for i in window_indices(random_start(len(jpegs), DURATION, rng), len(jpegs), duration=DURATION)]


def decode_only(jpegs: list[bytes], rng: np.random.Generator) -> torch.Tensor:
    """Decode the JPEGs of one random window with the pipeline's own decoder, nothing else: (T, H, W, C)."""
    return decode_frames(random_window(jpegs, rng))


def decode_torchvision(jpegs: list[bytes], rng: np.random.Generator) -> list[torch.Tensor]:
    """`decode_only` with torchvision's decoder: T frames (C, H, W)."""
    data = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in random_window(jpegs, rng)]
    return decode_jpeg(data, mode=ImageReadMode.RGB)


def decode_and_crop(jpegs: list[bytes], rng: np.random.Generator) -> torch.Tensor:
    """`decode_only`, then the clip's crop, resize and flip: the work no CPU pipeline can leave out."""
    return crop_clip(decode_only(jpegs, rng), random_crop(rng), SIZE)


def train_blocks(shard: Path, rng: np.random.Generator) -> Iterator[pa.Table]:
    """The row groups of `shard` as the pipeline's tasks get them: the columns they read (pyarrow, one thread,
    from the memory-mapped file as `pipeline.MAPPED_FILES` reads it) and a per-row train draw."""
    parquet = pq.ParquetFile(shard, memory_map=True)
    for group in range(parquet.num_row_groups):
        block = parquet.read_row_group(group, columns=[*VIDEO_COLUMNS, "split1"], use_threads=False)
        yield block.append_column(DRAW, pa.array(rng.random(block.num_rows)))


SELECTION = dict(split_column="split1", subset="train", clips_per_batch=CLIPS_PER_BATCH, mode="train",
                 sample_duration=DURATION, sample_stride=1, n_val_clips=1, augment=Augment())


def decode_block(block: pa.Table) -> int:
    """`decode_clips` on one block of train rows; returns the number of clips made."""
    return sum(len(batch["clip"]) for batch in decode_clips(block, sample_size=SIZE, **SELECTION))


def read_and_decode(shard: Path, n_videos: int, rng: np.random.Generator) -> int:
    """The Ray pipeline's work for at least `n_videos` train clips in a plain loop: whole row groups of `shard`
    read, then `decode_clips`. Returns the number of clips made."""
    made = 0
    for block in train_blocks(shard, rng):
        made += decode_block(block)
        if made >= n_videos:
            break
    return made


def picked_windows(shard: Path, n_videos: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """NumPy batches of window rows (`decode_on: worker`) of at least `n_videos` train videos, as a Train worker
    gets them."""
    batches = []
    for block in train_blocks(shard, rng):
        batches += [{name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
                    for table in pick_window_jpegs(block, **SELECTION)]
        if sum(len(batch["label"]) for batch in batches) >= n_videos:
            return batches
    return batches


def time_worker_decode(batches: list[dict[str, np.ndarray]], repeats: int) -> float:
    """`time_loop` of `decode_windows` over `batches` (cycled) on the CPU."""
    cycle = itertools.cycle(batches)
    return time_loop(lambda: len(decode_windows(next(cycle), size=SIZE, device="cpu")),
                     sum(len(batch["label"]) for batch in batches), repeats)


def time_loop(make_clips, n_clips: int, repeats: int) -> float:
    """Median clips/s of `repeats` runs of calls to `make_clips()` (which returns how many clips it made) until
    `n_clips` are made, with torch on one thread (a one-core case, like one decoder: `decode_clips`)."""
    torch.set_num_threads(1)
    rates = []
    for _ in range(repeats):
        start, made = time.perf_counter(), 0
        while made < n_clips:
            made += make_clips()
        rates.append(made / (time.perf_counter() - start))
    return statistics.median(rates)


def ray_worker_cpu_s() -> float:
    """CPU seconds used so far by this machine's Ray worker processes (titles `ray::...`: the decoders, idle
    workers, Ray Data's actors), read from /proc (Linux; 0 elsewhere)."""
    total = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def time_ray(path: Path, decode_workers: int, epochs: int, batch_size: int, decode_on: str = "decoders") -> dict:
    """Per epoch: first-batch latency, the whole epoch's clips/s, and the steady-state clips/s measured between
    the batches at 30 % and 90 % of the epoch (clips decoded ahead while the first batch was awaited are spent by
    then, so this is the rate the pipeline sustains), with the cores Ray's workers kept busy meanwhile (Arrow's
    read threads included) and their CPU per clip; the medians over epochs."""
    ds = clip_dataset(path, split=1, subset="train", mode="train", sample_duration=DURATION, sample_size=SIZE,
                      decode_workers=decode_workers, decode_on=decode_on)
    clips_per_epoch = read_meta(path)["counts"]["split1"]["train"]  # one train clip per video
    first, whole, steady, busy, cpu_per_clip = [], [], [], [], []
    for _ in range(epochs):
        start, made, window = time.perf_counter(), 0, []  # window: (seconds, clips, worker CPU s) at 30 %, 90 %
        batches = (ds.iter_torch_batches(batch_size=batch_size, prefetch_batches=2) if decode_on == "decoders"
                   else ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2))
        for batch in batches:
            made += len(batch["label"])
            if made == len(batch["label"]):
                first.append(time.perf_counter() - start)
            if len(window) < 2 and made >= (0.3, 0.9)[len(window)] * clips_per_epoch:
                window.append((time.perf_counter() - start, made, ray_worker_cpu_s()))
        whole.append(made / (time.perf_counter() - start))
        (t_a, n_a, cpu_a), (t_b, n_b, cpu_b) = window
        steady.append((n_b - n_a) / (t_b - t_a))
        busy.append((cpu_b - cpu_a) / (t_b - t_a))
        cpu_per_clip.append((cpu_b - cpu_a) / (n_b - n_a))
    return {"first_batch_s": [round(t, 1) for t in first], "epoch_clips_per_s": round(statistics.median(whole), 1),
            "steady_clips_per_s_by_epoch": [round(rate, 1) for rate in steady],
            "clips_per_s": statistics.median(steady), "worker_cores_busy": round(statistics.median(busy), 2),
            "worker_cpu_ms_per_clip": round(1e3 * statistics.median(cpu_per_clip), 2),
            "videos_per_epoch": clips_per_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=800, help="replicas of the 4 prepared clips (default 800)")
    parser.add_argument("--clips", type=int, default=100, help="clips per plain-loop run (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="plain-loop runs, median reported (default 3)")
    parser.add_argument("--epochs", type=int, default=3, help="Ray Data epochs per case, median reported (default 3: "
                        "the first one's processes start and import meanwhile)")
    parser.add_argument("--batch-size", type=int, default=16, help="iter_torch_batches batch (default 16)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = write_frame_folders(CLIPS, tmp / "frames")
        counts = [len(list(f.glob("image_*.jpg"))) for f in folders]
        prepare_dataset(dataset="folder", splits=None, frames=tmp / "frames", out=tmp / "four.parquet",
                        short_side=SHORT_SIDE, val_fraction=0.0, test_fraction=0.25, workers=1, progress=False)
        replicate(tmp / "four.parquet", tmp / "data.parquet", args.copies)
        jpegs = [row["frames"] for row in pq.read_table(tmp / "four.parquet", columns=["frames"]).to_pylist()]

        results = {}

        def emit(case: str, clips_per_s: float, used_cores: float, **extra) -> None:
            results[case] = clips_per_s / used_cores
            print(json.dumps({"case": case, "clips_per_s": round(clips_per_s, 1), "cores": used_cores,
                              "clips_per_s_per_core": round(clips_per_s / used_cores, 1),
                              "clip": f"{DURATION}x{SIZE}x{SIZE}", "machine_cores": cores, **extra}), flush=True)

        def naive() -> int:
            k = rng.integers(len(folders))
            naive_clip(folders[k], counts[k], rng)
            return 1

        def decode() -> int:
            decode_only(jpegs[rng.integers(len(jpegs))], rng)
            return 1

        def decode_tv() -> int:
            decode_torchvision(jpegs[rng.integers(len(jpegs))], rng)
            return 1

        def decode_crop() -> int:
            decode_and_crop(jpegs[rng.integers(len(jpegs))], rng)
            return 1

        shard = tmp / "data.parquet" / "part-00000.parquet"
        emit("naive_pil_per_frame", time_loop(naive, args.clips, args.repeats), 1, source="320x240 frame folders")
        emit("decode_limit", time_loop(decode, args.clips, args.repeats), 1,
             source=f"Parquet JPEGs, short side {SHORT_SIDE}")
        emit("decode_torchvision", time_loop(decode_tv, args.clips, args.repeats), 1,
             source=f"Parquet JPEGs, short side {SHORT_SIDE}")
        emit("decode_and_crop", time_loop(decode_crop, args.clips, args.repeats), 1,
             source=f"Parquet JPEGs, short side {SHORT_SIDE}")
        blocks = itertools.cycle(list(itertools.islice(train_blocks(shard, rng), 4)))  # 64 videos, read once
        emit("in_memory", time_loop(lambda: decode_block(next(blocks)), 4 * args.clips, args.repeats), 1,
             source=f"Parquet row groups in memory, short side {SHORT_SIDE}")
        emit("plain_loop", time_loop(lambda: read_and_decode(shard, 4 * args.clips, rng), 4 * args.clips,
                                     args.repeats), 1, source=f"Parquet row groups, short side {SHORT_SIDE}")
        emit("worker_decode_cpu", time_worker_decode(picked_windows(shard, 4 * args.clips, rng), args.repeats), 1,
             source="window rows (decode_on: worker) in memory", device="cpu")

        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=cores + 1, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": DECODER_ENV_VARS})  # as vidfuse's own runs have them
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            cpu_ms_per_clip = {}  # decoders -> CPU ms of Ray's worker processes per clip
            for workers in sorted({1, cores}):
                timing = time_ray(tmp / "data.parquet", workers, args.epochs, args.batch_size)
                cpu_ms_per_clip[workers] = timing["worker_cpu_ms_per_clip"]
                emit(f"ray_data_{workers}_decoders", timing.pop("clips_per_s"),
                     max(workers, timing["worker_cores_busy"]), decoders=workers, **timing,
                     source=f"Parquet JPEGs, short side {SHORT_SIDE}")
            timing = time_ray(tmp / "data.parquet", 1, args.epochs, args.batch_size, decode_on="worker")
            emit("worker_mode_1_picker", timing.pop("clips_per_s"), max(1, timing["worker_cores_busy"]), **timing,
                 note="decode_on: worker, the Ray Data side only: read + pick JPEGs, no decoding")
        finally:
            ray.shutdown()

    best_ray = max(v for k, v in results.items() if k.startswith("ray_data"))  # the CPU decoders
    plain_loop_ms = 1e3 / results["plain_loop"]  # one core: its CPU per clip
    print(json.dumps({"case": "ratios_per_core",
                      "ray_vs_naive": round(best_ray / results["naive_pil_per_frame"], 2),
                      "ray_vs_decode_limit": round(best_ray / results["decode_limit"], 2),
                      "decode_torchvision_vs_decode_limit": round(results["decode_torchvision"]
                                                                  / results["decode_limit"], 2),
                      "decode_and_crop_vs_decode_limit": round(results["decode_and_crop"] / results["decode_limit"],
                                                               2),
                      "in_memory_vs_decode_limit": round(results["in_memory"] / results["decode_limit"], 2),
                      "plain_loop_vs_decode_limit": round(results["plain_loop"] / results["decode_limit"], 2),
                      "ray_vs_plain_loop": round(best_ray / results["plain_loop"], 2),
                      "ray_layer_cpu_ms_per_clip": round(cpu_ms_per_clip[1] - plain_loop_ms, 2),
                      "note": "shared, noisy machine; Ray steady state = rate between 30 % and 90 % of an epoch"}))


if __name__ == "__main__":
    main()
