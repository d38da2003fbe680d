"""What Ray Train costs: clips/s of the vidfuse epoch loop inside a 1-worker TorchTrainer against the same loop in a
plain process, over the same in-memory clips and the same model, in one run.

Both sides call `vidfuse.engine.train_loop.train_one_epoch`; only the batch source differs (Ray Data
`iter_torch_batches` on a Train worker vs. a Python list of tensors). Each side trains EPOCHS epochs; the first is
a warm-up, the figure is the median clips/s of the rest. Prints one JSON line per side and one with the ratio
(target: at least 0.9).

    .venv/bin/python benchmarks/ray_overhead.py [--clips 32] [--epochs 4] [--depth 18] [--frames 16] [--size 112]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from vidfuse import config as config_lib
from vidfuse.engine.optim import build_optimizer
from vidfuse.engine.train_loop import train_one_epoch
from vidfuse.models import model_from_config

THREADS = 2


def _config(args) -> config_lib.Config:
    return config_lib.load(None, [
        f"model.depth={args.depth}", "model.fusion=gap", "model.num_classes=8", "model.shortcut=A",
        f"data.sample_duration={args.frames}", f"data.sample_size={args.size}", f"run.batch_size={args.batch}",
    ])


def _clips(args) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "clip": rng.integers(0, 256, (args.clips, args.frames, args.size, args.size, 3), dtype=np.uint8),
        "label": rng.integers(0, 8, args.clips).astype(np.int64),
    }


def _epochs(cfg: config_lib.Config, epochs: int, batches_of_epoch) -> list[float]:
    """Train `epochs` epochs; clips/s of each."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = model_from_config(cfg.model, cfg.data)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    rates = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        stats = train_one_epoch(model, optimizer, scaler, batches_of_epoch(), cfg=cfg, device=torch.device("cpu"),
                                epoch=epoch, total_batches=0, rank=1)
        rates.append(stats.clips / (time.perf_counter() - start))
    return rates


def plain(cfg, data, epochs: int) -> list[float]:
    tensors = {k: torch.from_numpy(v) for k, v in data.items()}
    size = cfg.run.batch_size
    batches = [{k: v[i:i + size] for k, v in tensors.items()} for i in range(0, len(tensors["label"]), size)]
    return _epochs(cfg, epochs, lambda: iter(batches))


def _ray_worker(loop_config):
    cfg = config_lib.from_dict(loop_config["config"])
    shard = ray.train.get_dataset_shard("train")
    rates = _epochs(cfg, loop_config["epochs"],
                    lambda: shard.iter_torch_batches(batch_size=cfg.run.batch_size, prefetch_batches=2))
    # Train V2 keeps only metrics reported with a checkpoint; this local benchmark hands them over in a file.
    with open(loop_config["rates_file"], "w") as f:
        json.dump(rates, f)


def with_ray_train(cfg, data, epochs: int, storage: str) -> list[float]:
    dataset = ray.data.from_numpy(data["clip"]).zip(ray.data.from_numpy(data["label"]))
    dataset = dataset.rename_columns({"data": "clip", "data_1": "label"}).materialize()
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"config": cfg.to_dict(), "epochs": epochs, "rates_file": f"{storage}/rates.json"},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": THREADS}),
        datasets={"train": dataset},
        run_config=ray.train.RunConfig(name=f"ray-overhead-{os.getpid()}", storage_path=storage),
    )
    trainer.fit()
    with open(f"{storage}/rates.json") as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    cfg, data = _config(args), _clips(args)
    ray.init(num_cpus=THREADS + 2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        results = {"plain_loop": plain(cfg, data, args.epochs),
                   "ray_train_1_worker": with_ray_train(cfg, data, args.epochs, storage)}
    ray.shutdown()
    case = {"model": f"resnet-{args.depth}", "clip": f"{args.frames}x{args.size}x{args.size}", "batch": args.batch,
            "clips_per_epoch": args.clips, "threads": THREADS}
    medians = {}
    for name, rates in results.items():
        medians[name] = statistics.median(rates[1:])
        print(json.dumps({"benchmark": "ray_overhead", "case": name, **case,
                          "clips_per_s_median": round(medians[name], 2),
                          "clips_per_s_epochs": [round(r, 2) for r in rates]}))
    print(json.dumps({"benchmark": "ray_overhead", "case": "ratio", **case,
                      "ray_over_plain": round(medians["ray_train_1_worker"] / medians["plain_loop"], 3),
                      "target": 0.9}))


if __name__ == "__main__":
    main()
