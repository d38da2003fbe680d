"""The GPU paths of vidfuse's own code, measured on a CUDA device: the training step of the train loop in each
`run.precision`, and nvjpeg decoding of window rows (`data.decode_on: worker`).

- train_step: `train_loop.train_one_epoch` (the run's own step: `to_model_input` on the device, autocast as
  `run.precision` says, the GradScaler, cross-entropy on float logits, SGD) over one fixed batch of random uint8
  clips with random labels, for each `--models` entry (hbp head) and precision (bf16, fp16, fp32), each from the
  same seeded weights. Per case: clips/s (the median step after `--warmup`), peak CUDA memory, and the first and
  last step's loss: with the same weights and batch, a first loss that differs from fp32's is the reduced
  precision's own error. `--memory-formats` also runs the model converted to channels_last_3d (the clips already
  arrive in that layout from `to_model_input`), `--cudnn-benchmark on` with cuDNN's autotuner (a run leaves
  PyTorch's default, off), `--frames 64` the presets' clip length.
- decode (with `--windows`): `worker_decode.decode_windows` on batches of window rows (as `pick_window_jpegs` makes
  them, from the prepared real UCF101 clips) on the device (one batched nvjpeg call a batch, then crop / resize /
  flip there) and on the CPU (one thread: the CPU decoders' own `decode_frames`): clips/s of each, and how far
  nvjpeg's clips are from the CPU's (absolute pixel difference: the two JPEG decoders round differently).

One JSON line per case. Run on a machine with CUDA (benchmarks/gpu_check.sh runs it):
    .venv/bin/python benchmarks/gpu_paths.py --write-windows windows.pkl   # any machine: the window rows
    .venv/bin/python benchmarks/gpu_paths.py --windows windows.pkl [--frames 64] [--precisions bf16 fp32 ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidfuse import config as config_lib
from vidfuse.data.worker_decode import decode_windows
from vidfuse.engine.optim import build_optimizer
from vidfuse.engine.train_loop import train_one_epoch
from vidfuse.models import model_from_config

SIZE, DURATION = 112, 16


def timed_batch(batch: dict[str, torch.Tensor], stamps: list[float]):
    """`batch` once, as a one-batch epoch, appending the time it is asked for and the time the epoch asks for the
    next one: the step's time (the train loop reads the step's loss with `.item()`, so by then the step has finished
    on the device)."""
    stamps.append(time.perf_counter())
    yield batch
    stamps.append(time.perf_counter())


def train_step_case(arch: str, depth: int, precision: str, *, batch_size: int, steps: int, warmup: int,
                    device: torch.device, memory_format: str = "as_built", cudnn_benchmark: bool = False,
                    frames: int = DURATION) -> dict:
    """`train_one_epoch` over one fixed batch, `warmup + steps` times: clips/s, peak memory, first and last loss."""
    cfg = config_lib.load(None, [f"model.arch={arch}", f"model.depth={depth}", "model.shortcut=B",
                                 "model.num_classes=101", "model.fusion=hbp", "model.dropout=0.0",
                                 f"run.precision={precision}", "optim.lr=0.01", "optim.weight_decay=0",
                                 f"data.sample_duration={frames}", f"data.sample_size={SIZE}"])
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.manual_seed(0)
    model = model_from_config(cfg.model, cfg.data).to(device)
    if memory_format == "channels_last_3d":
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # as the train loop makes it
    generator = torch.Generator().manual_seed(1)
    batch = {"clip": torch.randint(0, 256, (batch_size, frames, SIZE, SIZE, 3), dtype=torch.uint8,
                                   generator=generator),
             "label": torch.randint(0, 101, (batch_size,), generator=generator)}
    losses, stamps = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):  # one-batch "epochs": each step's own loss
        stats = train_one_epoch(model, optimizer, scaler, timed_batch(batch, stamps), cfg=cfg, device=device,
                                epoch=step + 1, total_batches=1, rank=1)  # rank 1: no progress line
        losses.append(stats.loss)
    step_s = [stamps[2 * i + 1] - stamps[2 * i] for i in range(warmup, warmup + steps)]
    return {"case": "train_step", "model": f"{arch}-{depth}", "head": "hbp", "precision": precision,
            "weights_memory_format": memory_format, "cudnn_benchmark": cudnn_benchmark,
            "clip": f"{frames}x{SIZE}x{SIZE}", "batch": batch_size, "steps": steps,
            "step_s_median": round(statistics.median(step_s), 4),
            "clips_per_s": round(batch_size / statistics.median(step_s), 1),
            "cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda"
            else None,
            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}


def decode_case(batches: list[dict[str, np.ndarray]], device: torch.device, repeats: int) -> tuple[dict, list]:
    """clips/s of `decode_windows` over `batches` on `device` (median of `repeats` passes), and its clips."""
    clips = [decode_windows(batch, size=SIZE, device=device).cpu() for batch in batches]  # warm-up, and the pixels
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            decode_windows(batch, size=SIZE, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(sum(len(b["label"]) for b in batches) / (time.perf_counter() - start))
    return {"case": "decode_windows", "device": device.type, "clip": f"{DURATION}x{SIZE}x{SIZE}",
            "clips": sum(len(b["label"]) for b in batches), "batch": len(batches[0]["label"]),
            "clips_per_s": round(statistics.median(rates), 1)}, clips


def write_windows(path: Path, n_clips: int, batch_size: int) -> None:
    """Window-row batches of train clips of the 4 real UCF101 clips (prepared as data_pipeline.py prepares them)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import data_pipeline

    from vidfuse.data.prepare import prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_pipeline.write_frame_folders(data_pipeline.CLIPS, tmp / "frames")
        prepare_dataset(dataset="folder", splits=None, frames=tmp / "frames", out=tmp / "four.parquet",
                        short_side=data_pipeline.SHORT_SIDE, val_fraction=0.0, test_fraction=0.25, workers=1,
                        progress=False)
        data_pipeline.replicate(tmp / "four.parquet", tmp / "data.parquet", copies=n_clips)
        rows = data_pipeline.picked_windows(tmp / "data.parquet" / "part-00000.parquet", n_clips,
                                            np.random.default_rng(0))
    merged = {name: np.concatenate([batch[name] for batch in rows]) for name in rows[0]}
    batches = [{name: column[start:start + batch_size] for name, column in merged.items()}
               for start in range(0, n_clips, batch_size)]
    path.write_bytes(pickle.dumps(batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=Path, help="pickle of window-row batches (see --write-windows)")
    parser.add_argument("--write-windows", type=Path, help="write that pickle here and stop (no GPU needed)")
    parser.add_argument("--models", nargs="+", default=["resnet-50", "resnext-101"])
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp16", "fp32"])
    parser.add_argument("--memory-formats", nargs="+", default=["as_built"], choices=["as_built", "channels_last_3d"],
                        help="the model's weights as built (contiguous) and/or converted to channels_last_3d")
    parser.add_argument("--cudnn-benchmark", nargs="+", default=["off"], choices=["off", "on"],
                        help="cuDNN's autotuner, off as in a run (the train loop leaves PyTorch's default)")
    parser.add_argument("--frames", type=int, default=DURATION, help="training clip length (default 16)")
    parser.add_argument("--batch", type=int, default=32, help="training clips a step (default 32)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="decode passes, median reported")
    parser.add_argument("--device", default="cuda", help="default cuda (cpu: a smoke run of this script)")
    args = parser.parse_args()
    if args.write_windows:
        write_windows(args.write_windows, n_clips=256, batch_size=32)
        return
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__}), flush=True)
    for model in args.models:
        arch, depth = model.rsplit("-", 1)
        for precision in args.precisions:
            for memory_format, tuned in itertools.product(args.memory_formats, args.cudnn_benchmark):
                print(json.dumps(train_step_case(arch, int(depth), precision, batch_size=args.batch,
                                                 steps=args.steps, warmup=args.warmup, device=device,
                                                 memory_format=memory_format, cudnn_benchmark=tuned == "on",
                                                 frames=args.frames)),
                      flush=True)
    if args.windows:
        batches = pickle.loads(args.windows.read_bytes())
        on_gpu, gpu_clips = decode_case(batches, device, args.repeats)
        torch.set_num_threads(1)
        on_cpu, cpu_clips = decode_case(batches, torch.device("cpu"), args.repeats)
        difference = torch.cat([(g.int() - c.int()).abs().flatten() for g, c in zip(gpu_clips, cpu_clips)])
        for line in (on_gpu, on_cpu):
            print(json.dumps(line), flush=True)
        print(json.dumps({"case": "decode_nvjpeg_vs_cpu", "gpu_vs_cpu_clips_per_s":
                          round(on_gpu["clips_per_s"] / on_cpu["clips_per_s"], 2),
                          "max_abs_pixel_difference": int(difference.max()),
                          "mean_abs_pixel_difference": round(difference.float().mean().item(), 3),
                          "share_of_pixels_within_2": round((difference <= 2).float().mean().item(), 4)}),
              flush=True)


if __name__ == "__main__":
    main()
